"""Local packages for install tests, built by a tiny in-tree PEP 517 backend.

The backend needs nothing from any index (no setuptools), builds wheels and editable
wheels, can declare a console script, and can hold its build at a *gate*: while the
gate file exists, ``build_wheel`` waits, after writing its pid to a marker file. A
test thereby knows for certain that the installer is running, and can kill it there.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from .conftest import pid_alive

_BACKEND = r"""
import base64, hashlib, os, sys, time, zipfile

NAME, VERSION = {name!r}, {version!r}
SCRIPT = {script!r}
GATE, STARTED = {gate!r}, {started!r}
HERE = os.path.dirname(os.path.abspath(__file__))


def _hold_at_gate():
    if not GATE or not os.path.exists(GATE):
        return
    parent = os.getppid()
    with open(STARTED, "w") as marker:
        marker.write(str(os.getpid()))
    # Wait while the gate is closed and the installer that started us is alive.
    while os.path.exists(GATE) and os.getppid() == parent:
        time.sleep(0.02)


def _wheel(directory, files):
    dist = f"{{NAME}}-{{VERSION}}"
    files = dict(files)
    files[f"{{dist}}.dist-info/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {{NAME}}\nVersion: {{VERSION}}\n"
    )
    files[f"{{dist}}.dist-info/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: pypods-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    )
    if SCRIPT:
        files[f"{{dist}}.dist-info/entry_points.txt"] = (
            f"[console_scripts]\n{{SCRIPT}} = {{NAME}}:main\n"
        )
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record.append(f"{{path}},sha256={{digest.decode()}},{{len(data)}}")
    record.append(f"{{dist}}.dist-info/RECORD,,")
    files[f"{{dist}}.dist-info/RECORD"] = "\n".join(record) + "\n"
    name = f"{{dist}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, name), "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return name


def _sources():
    package = os.path.join(HERE, NAME)
    return {{
        f"{{NAME}}/{{entry}}": open(os.path.join(package, entry), encoding="utf-8").read()
        for entry in sorted(os.listdir(package)) if entry.endswith(".py")
    }}


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _hold_at_gate()
    return _wheel(wheel_directory, _sources())


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, {{f"__editable__.{{NAME}}.pth": HERE + "\n"}})
"""

_PACKAGE = """
import os

__version__ = {version!r}
SOURCE = os.path.dirname(os.path.abspath(__file__))


def main():
    print(f"hello from {name} {{__version__}}")
"""


def write_local_package(
    folder: Path,
    name: str,
    version: str = "1.0",
    *,
    script: str | None = None,
    gate: Gate | None = None,
) -> Path:
    """Write a source tree at ``folder`` for the package ``name`` (importable as such)."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / "__init__.py").write_text(
        textwrap.dedent(_PACKAGE.format(name=name, version=version)), encoding="utf-8"
    )
    (folder / "pypods_test_backend.py").write_text(
        _BACKEND.format(
            name=name,
            version=version,
            script=script,
            gate=str(gate.path) if gate else None,
            started=str(gate.started_file) if gate else None,
        ),
        encoding="utf-8",
    )
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = []
            build-backend = "pypods_test_backend"
            backend-path = ["."]

            [project]
            name = "{name}"
            version = "{version}"
            """
        ),
        encoding="utf-8",
    )
    return folder


class Gate:
    """A closed gate holds a gated package's build until it is opened."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "gate-closed"
        self.started_file = folder / "build-started"
        self.path.write_text("")

    def started(self) -> bool:
        """True once a build has reached the gate (its pid is written)."""
        try:
            return self.started_file.read_text().strip().isdigit()
        except FileNotFoundError:
            return False

    @property
    def builder_pid(self) -> int:
        """The pid of the build backend waiting at the gate."""
        return int(self.started_file.read_text())

    def builder_gone(self) -> bool:
        return not pid_alive(self.builder_pid)

    def open(self) -> None:
        self.path.unlink()
