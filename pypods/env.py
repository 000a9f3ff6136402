"""One pod's environment: building its venv, and knowing when it is ready.

A venv is a pure function of its *fingerprint*: the interpreter it is built from, the
text of requirements.txt and of every file that includes with ``-r``/``-c``, the
install options of pod.toml, and what the pod runtime needs. The fingerprint is
written into the venv (``venv/pypods.json``, the *stamp*) as the very last step of a
build. So:

- a venv with a matching stamp is ready, and loading it costs a file read;
- when anything in the fingerprint changes, the venv is rebuilt from scratch: exactly
  what a fresh build would give, never packages left over from an older list;
- a build that failed or was killed halfway leaves no stamp, so it is never taken as
  ready, and the next load builds again.

Builds hold a file lock, so processes loading the same pod at once build it once.
The pod runtime is copied into the venv's site-packages as ``_pypods_runtime``, with
its own hash in the stamp: a PyPods upgrade refreshes the copy without reinstalling.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

import filelock

from .config import InstallOptions, choose_installer
from .errors import PodInstallError, PythonNotFoundError
from .folder import PodFolder
from .installers import LEAKY_VARIABLES, InstallFailed, choose, installer_env, venv_python
from .interpreters import Interpreter, find_interpreter
from .progress import BuildProgress, logger
from .requirements import requirement_lines, walk

#: The pod runtime's own requirement. pymongo provides ``bson``; 4.0 is the oldest with
#: the API the runtime uses, and the resolver picks the newest release that supports
#: the pod's Python (4.11 and later need 3.9, so a 3.8 pod gets 4.10).
RUNTIME_REQUIREMENTS = ("pymongo>=4.0",)

#: Name of the runtime package inside pod venvs.
RUNTIME_PACKAGE = "_pypods_runtime"

STAMP_FILE = "pypods.json"
STAMP_FORMAT = 1

_RUNTIME_SOURCE = Path(__file__).parent / "runtime"

#: Runs inside the new venv: copies the runtime into its site-packages, compiles it, and
#: reports what the runtime depends on. Stdlib only, Python 3.8+.
_INSTALL_RUNTIME = r"""
import compileall, importlib.metadata as md, json, os, shutil, sys, sysconfig
source, name = sys.argv[1], sys.argv[2]
target = os.path.join(sysconfig.get_paths()["purelib"], name)
staging = target + ".new"
shutil.rmtree(staging, ignore_errors=True)
os.makedirs(staging)
for entry in sorted(os.listdir(source)):
    if entry.endswith(".py"):
        shutil.copyfile(os.path.join(source, entry), os.path.join(staging, entry))
shutil.rmtree(target, ignore_errors=True)
os.rename(staging, target)
ok = compileall.compile_dir(target, quiet=1, force=True)
def requirement_name(requirement):
    name = requirement.split(";")[0].strip()
    for i, char in enumerate(name):
        if not (char.isalnum() or char in "._-"):
            return name[:i].lower()
    return name.lower()
pulled_in_by = sorted(
    d.metadata["Name"] for d in md.distributions()
    if any(requirement_name(r) == "bson" for r in (d.requires or []))
)
try:
    md.distribution("bson")
    py_bson = True
except md.PackageNotFoundError:
    py_bson = False
print(json.dumps({"target": target, "compiled": bool(ok), "py_bson": py_bson,
                  "py_bson_pulled_in_by": pulled_in_by}))
"""


class PodEnvironment:
    """The venv of one pod, and what it takes to make it ready."""

    def __init__(
        self, folder: PodFolder, *, python: str | os.PathLike[str] | None, options: InstallOptions
    ) -> None:
        self.folder = folder
        self.python_request = python
        self.options = options

    @property
    def python(self) -> Path:
        """The venv's interpreter, which runs the pod."""
        return venv_python(self.folder.venv)

    def _interpreter(self) -> Interpreter:
        try:
            return find_interpreter(self.python_request)
        except PythonNotFoundError as exc:
            pod = self.folder.name
            raise PythonNotFoundError(f"pod {pod!r}: {exc}", pod=pod) from None

    def ensure_ready(self) -> None:
        """Build or rebuild the venv unless its stamp matches; quiet when nothing to do.

        Raises:
            PodInstallError: the build failed (the venv is left not-ready).
            PythonNotFoundError: the requested Python is not installed.
            PodConfigError: pod.toml or the Python request is invalid.
        """
        pod = self.folder.name
        interpreter = self._interpreter()
        wanted = self.fingerprint(interpreter)
        if self._is_ready(wanted):
            return
        progress = BuildProgress(pod)
        lock = filelock.FileLock(str(self.folder.lock_file))
        try:
            lock.acquire(timeout=1)
        except filelock.Timeout:
            progress.notice("waiting for another process that is building this pod's venv")
            lock.acquire()
        try:
            stamp = self._read_stamp()
            if stamp is not None and stamp.get("fingerprint") == wanted and self.python.exists():
                if stamp.get("runtime") != runtime_hash():
                    self._refresh_runtime(stamp)
                return  # another process built it while this one waited
            self._build(interpreter, wanted, stamp, progress)
        finally:
            lock.release()

    def fingerprint(self, interpreter: Interpreter) -> dict[str, Any]:
        """Everything that decides the venv's contents (see the module docstring)."""
        return {
            "format": STAMP_FORMAT,
            "python": {
                "implementation": interpreter.implementation,
                "version": interpreter.version_text,
                "path": os.path.realpath(interpreter.path),
            },
            "requirements": requirements_hash(self.folder.requirements, self.folder.path),
            "install": self.options.fingerprint(),
            "runtime_requirements": list(RUNTIME_REQUIREMENTS),
        }

    def process_env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        """Environment for the pod process: the client's, with the venv activated.

        Variables that would put the client's packages on the pod's path
        (``PYTHONPATH``, ``PYTHONHOME``...) are dropped unless ``extra`` sets them.
        """
        env = dict(os.environ)
        for name in LEAKY_VARIABLES:
            env.pop(name, None)
        env["VIRTUAL_ENV"] = str(self.folder.venv)
        env["PATH"] = os.pathsep.join([str(self.python.parent), env.get("PATH", "")]).rstrip(
            os.pathsep
        )
        env.update(extra or {})
        return env

    # -- internals -----------------------------------------------------------------

    def _is_ready(self, wanted: dict[str, Any]) -> bool:
        stamp = self._read_stamp()
        return (
            stamp is not None
            and stamp.get("fingerprint") == wanted
            and stamp.get("runtime") == runtime_hash()
            and self.python.exists()
        )

    def _read_stamp(self) -> dict[str, Any] | None:
        try:
            with open(self.folder.venv / STAMP_FILE, encoding="utf-8") as f:
                stamp = json.load(f)
        except (OSError, ValueError):
            return None
        return stamp if isinstance(stamp, dict) else None

    def _write_stamp(self, stamp: dict[str, Any]) -> None:
        path = self.folder.venv / STAMP_FILE
        temporary = path.with_name(f".{STAMP_FILE}.{os.getpid()}")
        temporary.write_text(json.dumps(stamp, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(temporary, path)  # atomic: a stamp is whole or absent

    def _remove_stamp(self) -> None:
        try:
            os.unlink(self.folder.venv / STAMP_FILE)
        except FileNotFoundError:
            pass

    def _build(
        self,
        interpreter: Interpreter,
        wanted: dict[str, Any],
        old_stamp: dict[str, Any] | None,
        progress: BuildProgress,
    ) -> None:
        pod = self.folder.name
        venv = self.folder.venv
        reason = _rebuild_reason(old_stamp, wanted, venv.exists())
        installer_name = choose_installer(self.options)
        requirement_files = [self.folder.requirements] if self.folder.requirements.exists() else []
        try:
            installer = choose(installer_name)
            installer_name = installer.name
            progress.notice(
                f"{reason}; building its venv with {installer.name} from {interpreter.describe()}"
            )
            self._remove_stamp()
            if venv.exists():
                _remove_tree(venv)
            installer.create_venv(venv, interpreter, progress.installer_line)
            progress.notice(f"installing {_describe_requirements(self.folder.requirements)}")
            installer.install(
                venv, requirement_files, RUNTIME_REQUIREMENTS, self.options, progress.installer_line
            )
            stamp: dict[str, Any] = {
                "fingerprint": wanted,
                "installer": installer.name,
                "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"
                ),
            }
            self._install_runtime(stamp)
        except InstallFailed as exc:
            progress.notice("build failed")
            raise PodInstallError(
                _failure_message(pod, self.folder, installer_name, exc),
                pod=pod,
                requirement=exc.requirement,
                output=exc.output,
            ) from None
        progress.notice("venv ready")

    def _refresh_runtime(self, stamp: dict[str, Any]) -> None:
        try:
            self._install_runtime(stamp)
        except InstallFailed as exc:
            raise PodInstallError(
                _failure_message(self.folder.name, self.folder, "the runtime copy", exc),
                pod=self.folder.name,
                output=exc.output,
            ) from None

    def _install_runtime(self, stamp: dict[str, Any]) -> None:
        """Copy the pod runtime into the venv, check its needs, and write the stamp."""
        result = subprocess.run(
            [str(self.python), "-I", "-c", _INSTALL_RUNTIME, str(_RUNTIME_SOURCE), RUNTIME_PACKAGE],
            capture_output=True,
            text=True,
            env=installer_env(),
        )
        try:
            report = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise InstallFailed(
                "could not install the PyPods runtime into the venv",
                (result.stdout + result.stderr)[-4000:],
            ) from None
        if report["py_bson"]:
            culprits = ", ".join(report["py_bson_pulled_in_by"]) or "a requirement"
            raise InstallFailed(
                "the requirements installed the standalone 'bson' package from PyPI "
                f"(pulled in by: {culprits}). It replaces pymongo's 'bson' module, which "
                "PyPods needs to talk to the pod: remove that requirement",
                "",
                "bson",
            )
        stamp["runtime"] = runtime_hash()
        self._write_stamp(stamp)
        logger.debug("pod %r: runtime installed at %s", self.folder.name, report["target"])


@functools.lru_cache(maxsize=1)
def runtime_hash() -> str:
    """Hash of the pod runtime's source files: changes whenever the runtime does."""
    digest = hashlib.sha256()
    for path in sorted(_RUNTIME_SOURCE.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def requirements_hash(path: Path, pod_dir: Path) -> str:
    """Hash of a requirements file and every file it includes (``-r``/``-c``)."""
    digest = hashlib.sha256()
    for file, content in walk(path):
        name = os.path.relpath(file.resolve(), pod_dir.resolve())
        data = b"\0missing\0" if content is None else content
        digest.update(os.fsencode(name) + b"\0" + data + b"\0")
    return digest.hexdigest()


def _rebuild_reason(old: dict[str, Any] | None, wanted: dict[str, Any], venv_exists: bool) -> str:
    if not venv_exists:
        return "no venv yet"
    if old is None:
        return (
            "the venv has no PyPods stamp (an earlier build did not finish, "
            "or it was not built by PyPods)"
        )
    previous = old.get("fingerprint", {})
    if previous.get("python") != wanted["python"]:
        before = previous.get("python", {}).get("version", "?")
        return (
            f"the interpreter changed (the venv has Python {before}, "
            f"Python {wanted['python']['version']} is asked for)"
        )
    if previous.get("requirements") != wanted["requirements"]:
        return "requirements.txt changed"
    if previous.get("install") != wanted["install"]:
        return "the install options in pod.toml changed"
    return "PyPods needs a different venv layout now"


def _describe_requirements(path: Path) -> str:
    names = requirement_lines(path)
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"{shown} (+ the PyPods runtime)" if names else "the PyPods runtime (no requirements)"


def _failure_message(pod: str, folder: PodFolder, installer: str, exc: InstallFailed) -> str:
    cause = exc.cause
    what = f"{cause.what}; {exc.summary}" if cause else exc.summary
    lines = [f"pod {pod!r}: building its venv with {installer} failed: {what}."]
    if exc.requirement:
        if cause is not None and cause.network:
            lines.append(f"The requirement it was looking for: {exc.requirement}.")
        else:
            lines.append(f"The requirement that could not be installed: {exc.requirement}.")
    if _mentions_pymongo(folder.requirements) and cause is None:
        lines.append(
            f"PyPods itself needs {', '.join(RUNTIME_REQUIREMENTS)} in the pod (for bson); a "
            "pinned pymongo must be compatible with that."
        )
    advice = cause.advice if cause else f"Fix {folder.requirements} (or {folder.config_file})"
    lines.append(f"{advice}, then call load_pod() again: nothing of the failed build will be used.")
    if exc.output:
        lines.append("\nLast lines of the installer's output:\n" + exc.output)
    return "\n".join(lines)


def _mentions_pymongo(requirements: Path) -> bool:
    try:
        return "pymongo" in requirements.read_text(encoding="utf-8", errors="replace").lower()
    except OSError:
        return False


def _remove_tree(path: Path) -> None:
    """Delete a folder; refuse anything that does not look like a venv we built."""
    if path.is_symlink() or not path.is_dir():
        raise PodInstallError(
            f"{path} is not a folder PyPods built; move it away", pod=path.parent.name
        )
    shutil.rmtree(path)
