"""Finding the Python interpreter a pod's venv is built from.

A request is ``None`` (the interpreter running the client), a version (``"3"``,
``"3.9"``, ``"3.9.18"``: the newest installed match wins) or an interpreter (a path, or
a command on PATH such as ``python3.10``).

Versions are looked for where users' machines keep them: the running interpreter, the
PATH, pyenv, asdf, uv's managed Pythons and the usual system folders. Tools that
should find these (virtualenv, uv) do not always look in pyenv's folders, and pyenv's
``python3.X`` shims fail unless that version is selected, so every candidate is run
once to check what it really is.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from packaging.version import InvalidVersion, Version

from .errors import PodConfigError, PythonNotFoundError

#: The oldest Python a pod may run: the pod runtime's own floor.
MIN_POD_PYTHON = (3, 8)

_VERSION_REQUEST = re.compile(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?$")
_FOLDER_VERSION = re.compile(
    r"^(?:cpython-|python-?)?(\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?)(?:[-+].*)?$"
)
_QUERY = "import platform, sys; print(platform.python_implementation(), *sys.version_info[:3])"


@dataclass(frozen=True)
class Interpreter:
    """A Python interpreter that was run and checked."""

    path: str
    implementation: str
    version: tuple[int, int, int]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def describe(self) -> str:
        return f"{self.implementation} {self.version_text} ({self.path})"


def find_interpreter(request: str | os.PathLike[str] | None) -> Interpreter:
    """Resolve a pod's Python request to an interpreter.

    Raises:
        PythonNotFoundError: nothing installed matches the request.
        PodConfigError: the request is malformed, or names a Python older than 3.8.
    """
    if request is None:
        return _current()
    text = os.fspath(request).strip()
    match = _VERSION_REQUEST.match(text)
    if match:
        wanted = tuple(int(part) for part in match.groups() if part is not None)
        too_old = wanted[0] < MIN_POD_PYTHON[0] or (len(wanted) > 1 and wanted[:2] < MIN_POD_PYTHON)
        if too_old:
            raise PodConfigError(f"pods need Python 3.8 or newer; {text!r} was asked for")
        return _find_version(wanted, text)
    return _check_supported(_find_command(text), text)


def _current() -> Interpreter:
    return Interpreter(
        path=sys.executable,
        implementation=_implementation_name(sys.implementation.name),
        version=(sys.version_info[0], sys.version_info[1], sys.version_info[2]),
    )


def _find_command(text: str) -> Interpreter:
    path = os.path.expanduser(text)
    if os.sep not in path and not (os.altsep and os.altsep in path):
        found = shutil.which(path)
        if found is None:
            raise PythonNotFoundError(
                f'no interpreter {text!r} on PATH: pass a version such as "3.9" or the '
                "path to a python executable",
                pod="",
            )
        path = found
    interpreter = query(os.path.abspath(path))
    if interpreter is None:
        raise PythonNotFoundError(
            f"{text!r} is not a working Python interpreter (it could not be run, or did "
            "not answer like one)",
            pod="",
        )
    return interpreter


def _check_supported(interpreter: Interpreter, text: str) -> Interpreter:
    if interpreter.version[:2] < MIN_POD_PYTHON:
        raise PodConfigError(
            f"pods need Python 3.8 or newer; {text!r} is Python {interpreter.version_text}"
        )
    return interpreter


def _find_version(wanted: tuple[int, ...], text: str) -> Interpreter:
    candidates = sorted(_candidates(wanted), key=lambda c: c[0], reverse=True)
    tried = set()
    for _, path in candidates:
        real = os.path.realpath(path)
        if real in tried:
            continue
        tried.add(real)
        interpreter = query(path)
        if interpreter is not None and interpreter.version[: len(wanted)] == wanted:
            return interpreter
    places = ", ".join(str(p) for p in _search_roots()) or "none found"
    raise PythonNotFoundError(
        f"no installed Python {text} was found (looked at the running interpreter, PATH, "
        f"and these folders: {places}). Install one (for example `pyenv install {text}` "
        f"or `uv python install {text}`), or pass python= the path of an interpreter.",
        pod="",
    )


def _candidates(wanted: tuple[int, ...]) -> Iterator[tuple[Version, str]]:
    """(version, path) pairs that may satisfy ``wanted``; unverified."""
    current = _current()
    if current.version[: len(wanted)] == wanted:
        yield Version(current.version_text), current.path
    for root in _search_roots():
        for entry in _listdir(root):
            match = _FOLDER_VERSION.match(entry.name)
            if not match:
                continue
            try:
                version = Version(match.group(1))
            except InvalidVersion:
                continue
            if version.release[: len(wanted)] != wanted:
                continue
            for exe in _executables_in(entry, version):
                yield version, exe
                break
    names = [f"python{wanted[0]}.{wanted[1]}"] if len(wanted) > 1 else [f"python{wanted[0]}"]
    for directory in _path_dirs():
        for name in names:
            candidate = directory / name
            if os.access(candidate, os.X_OK) and candidate.is_file():
                # Version unknown until run: rank it just below any known exact match.
                yield Version(".".join(map(str, wanted))), str(candidate)


def _search_roots() -> list[Path]:
    home = Path.home()
    roots = [
        Path(os.environ.get("PYENV_ROOT", home / ".pyenv")) / "versions",
        Path(os.environ.get("ASDF_DATA_DIR", home / ".asdf")) / "installs" / "python",
        Path(os.environ.get("UV_PYTHON_INSTALL_DIR", home / ".local" / "share" / "uv" / "python")),
        Path("/Library/Frameworks/Python.framework/Versions"),
    ]
    return [r for r in roots if r.is_dir()]


def _path_dirs() -> list[Path]:
    dirs = [Path(d) for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    for extra in ("/usr/local/bin", "/usr/bin", "/opt/homebrew/bin"):
        if Path(extra) not in dirs:
            dirs.append(Path(extra))
    return dirs


def _listdir(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        return []


def _executables_in(folder: Path, version: Version) -> Iterator[str]:
    major, minor = version.release[:2]
    for name in (f"python{major}.{minor}", f"python{major}", "python"):
        exe = folder / "bin" / name
        if exe.is_file() and os.access(exe, os.X_OK):
            yield str(exe)


@functools.lru_cache(maxsize=None)
def _query_cached(path: str, mtime_ns: int) -> Interpreter | None:
    try:
        result = subprocess.run(
            [path, "-I", "-c", _QUERY],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    parts = result.stdout.split()
    if result.returncode != 0 or len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
        return None
    return Interpreter(
        path=path,
        implementation=_implementation_name(parts[0]),
        version=(int(parts[1]), int(parts[2]), int(parts[3])),
    )


def query(path: str) -> Interpreter | None:
    """Run ``path`` to learn what Python it is; None if it is not a working one."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return None
    return _query_cached(path, mtime)


def _implementation_name(name: str) -> str:
    return {"cpython": "CPython", "pypy": "PyPy"}.get(name.lower(), name)
