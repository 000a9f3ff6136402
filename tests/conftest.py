"""Shared fixtures: real pods in temporary folders, with real venvs and processes.

Building a venv costs about a second with uv, so pods whose code several tests share
are built once per session (``toolbox``); tests about building itself make their own.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pypods import PodLoader

HERE = Path(__file__).parent
TOOLBOX_SOURCE = HERE / "pods" / "toolbox.py"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="also run the long soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


def write_pod(
    pods_dir: Path,
    name: str,
    source: str,
    *,
    requirements: str = "",
    config: str | None = None,
) -> Path:
    """Create (or overwrite) a pod folder and return it."""
    folder = pods_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pod.py").write_text(textwrap.dedent(source), encoding="utf-8")
    (folder / "requirements.txt").write_text(textwrap.dedent(requirements), encoding="utf-8")
    if config is not None:
        (folder / "pod.toml").write_text(textwrap.dedent(config), encoding="utf-8")
    return folder


@pytest.fixture
def pods_dir(tmp_path: Path) -> Path:
    """An empty pods folder for one test."""
    path = tmp_path / "pods"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def shared_pods_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pods folder whose pods are built once for the whole session."""
    return tmp_path_factory.mktemp("shared") / "pods"


@pytest.fixture(scope="session")
def _toolbox_built(shared_pods_dir: Path) -> Path:
    folder = write_pod(shared_pods_dir, "toolbox", TOOLBOX_SOURCE.read_text(encoding="utf-8"))
    helper = HERE / "pods" / "module_helper.py"
    (folder / "module_helper.py").write_text(helper.read_text(encoding="utf-8"), encoding="utf-8")
    PodLoader("toolbox", pods_dir=shared_pods_dir).load_pod().unload_pod()
    return shared_pods_dir


@pytest.fixture
def toolbox(_toolbox_built: Path):
    """A freshly started pod serving tests/pods/toolbox.py (venv shared, process not)."""
    loader = PodLoader("toolbox", pods_dir=_toolbox_built).load_pod()
    yield loader
    loader.unload_pod()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def wait_until(condition, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    os.kill(pid, sig)


def python_code(code: str) -> list[str]:
    """argv running ``code`` with this interpreter."""
    return [sys.executable, "-c", textwrap.dedent(code)]


def make_wheel(folder: Path, name: str, version: str) -> Path:
    """Write a minimal pure-Python wheel for ``name`` (importable as ``name``) into ``folder``.

    A package that exists nowhere else (no index, no cache) proves where an installer
    looked.
    """
    import base64
    import hashlib
    import zipfile

    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: pypods-tests\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel
