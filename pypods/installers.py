"""Creating a venv and installing requirements into it: pip or uv, behind one interface.

Both installers honour pip's own configuration (pip.conf files and ``PIP_*``
variables): pip reads it itself; for uv, which does not, the settings that decide
what gets installed (index URLs, find-links, no-index, constraints, CA bundle) are
read with ``pip config list`` and passed on as uv options, and so are pip's network
retries and timeout. Options set inside requirements files keep pip's meaning with
uv too (a file's ``--index-url`` replaces the configured index, ``--pre`` allows
pre-releases).
"""

from __future__ import annotations

import ast
import collections
import functools
import os
import re
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Collection, Sequence

from .config import InstallOptions
from .diagnosis import Cause, Diagnosis, exit_text
from .interpreters import Interpreter
from .progress import logger
from .requirements import options_used

#: Lines of installer output kept for error messages.
OUTPUT_TAIL_LINES = 40

#: Environment variables that would point an installer (or a pod) at the client's
#: packages instead of the pod's venv.
LEAKY_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONEXECUTABLE", "__PYVENV_LAUNCHER__")

#: pip settings that would send pip outside the venv being built.
_PIP_MISDIRECTING = ("PIP_USER", "PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_REQUIRE_VIRTUALENV")

OnLine = Callable[[str], None]


class InstallFailed(Exception):
    """An installer command failed. Carries what it printed, and why, when recognised."""

    def __init__(
        self,
        summary: str,
        output: str,
        requirement: str | None = None,
        cause: Cause | None = None,
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.output = output
        self.requirement = requirement
        self.cause = cause


def _failed(summary: str, exc: BaseException) -> InstallFailed:
    """InstallFailed for an exception raised in this process (virtualenv's)."""
    diagnosis = Diagnosis()
    diagnosis.feed(str(exc))
    return InstallFailed(summary, str(exc), cause=diagnosis.cause(1))


def venv_python(venv: Path) -> Path:
    """The interpreter inside a venv."""
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


class Installer(ABC):
    """Creates venvs and installs requirements into them."""

    name: str

    @abstractmethod
    def create_venv(self, venv: Path, interpreter: Interpreter, on_line: OnLine) -> None:
        """Create an empty venv at ``venv`` (which does not exist) from ``interpreter``."""

    @abstractmethod
    def install_command(
        self, venv: Path, options: InstallOptions, file_options: Collection[str] = ()
    ) -> list[str]:
        """The install command for ``venv``, up to the requirements themselves.

        ``file_options`` are the options the requirements files set themselves
        (``--index-url``...), which pip applies on top of the command line.
        """

    def env(self) -> dict[str, str]:
        """The environment installer commands run in."""
        return installer_env()

    def install(
        self,
        venv: Path,
        requirement_files: Sequence[Path],
        requirements: Sequence[str],
        options: InstallOptions,
        on_line: OnLine,
    ) -> None:
        """Install the requirements (files, then single specifiers) into ``venv``.

        Raises:
            InstallFailed: the installer failed; the venv must not be used.
        """
        file_options = set().union(*(options_used(p) for p in requirement_files))
        command = self.install_command(venv, options, file_options)
        for path in requirement_files:
            command += ["-r", str(path)]
        command += list(requirements)
        run(command, self.env(), on_line, cwd=venv.parent)


class PipInstaller(Installer):
    """virtualenv to create, the venv's own pip to install."""

    name = "pip"

    def create_venv(self, venv: Path, interpreter: Interpreter, on_line: OnLine) -> None:
        import virtualenv

        base = [str(venv), "--python", interpreter.path, "--no-periodic-update", "--quiet"]
        try:
            virtualenv.cli_run([*base, "--no-setuptools"], setup_logging=False)
            return
        except RuntimeError as exc:
            # virtualenv's bundled pip no longer supports the oldest Pythons pods may
            # use (3.8): create the venv bare and let that Python's ensurepip seed it.
            on_line(f"virtualenv cannot seed pip here ({exc}); using ensurepip")
            shutil.rmtree(venv, ignore_errors=True)
        except Exception as exc:
            raise _failed(f"virtualenv could not create the venv: {exc}", exc) from exc
        try:
            virtualenv.cli_run([*base, "--no-seed"], setup_logging=False)
        except Exception as exc:
            raise _failed(f"virtualenv could not create the venv: {exc}", exc) from exc
        run([str(venv_python(venv)), "-m", "ensurepip", "--default-pip"], installer_env(), on_line)

    def install_command(
        self, venv: Path, options: InstallOptions, file_options: Collection[str] = ()
    ) -> list[str]:
        command = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check"]
        command += ["--no-input", "--progress-bar", "off"]
        return command + _option_flags(options)


class UvInstaller(Installer):
    """uv for both steps: many times faster, and it links packages from its cache."""

    name = "uv"

    def __init__(self, uv: str) -> None:
        self.uv = uv

    def create_venv(self, venv: Path, interpreter: Interpreter, on_line: OnLine) -> None:
        run(
            [self.uv, "venv", str(venv), "--python", interpreter.path, "--no-project"],
            self.env(),
            on_line,
        )

    def install_command(
        self, venv: Path, options: InstallOptions, file_options: Collection[str] = ()
    ) -> list[str]:
        # Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set, a pod
        # would otherwise recompile every module each time it starts.
        command = [self.uv, "pip", "install", "--python", str(venv_python(venv))]
        command.append("--compile-bytecode")
        return command + _uv_flags_from_pip_config(options, file_options)

    def env(self) -> dict[str, str]:
        env = installer_env()
        env.setdefault("UV_PYTHON_DOWNLOADS", "never")  # never fetch a Python unasked
        env.pop("VIRTUAL_ENV", None)
        settings = pip_settings()
        cert = settings.get("cert")
        if cert and "SSL_CERT_FILE" not in env:
            env["SSL_CERT_FILE"] = cert
        # pip's retries and timeout decide how long an unreachable index takes to fail.
        retries = _whole_number(settings.get("retries"))
        if retries is not None:
            env.setdefault("UV_HTTP_RETRIES", str(retries))
        timeout = _whole_number(settings.get("timeout") or settings.get("default-timeout"))
        if timeout is not None:
            env.setdefault("UV_HTTP_TIMEOUT", str(max(timeout, 1)))
        return env


def find_uv() -> str | None:
    """The uv binary: from the ``uv`` package (``pypods[uv]``), else on PATH."""
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def choose(installer: str) -> Installer:
    """Return the installer for "auto", "uv" or "pip".

    Raises:
        InstallFailed: "uv" was asked for and is not installed.
    """
    if installer == "pip":
        return PipInstaller()
    uv = find_uv()
    if uv is not None:
        return UvInstaller(uv)
    if installer == "uv":
        raise InstallFailed(
            "uv was asked for but is not installed: `pip install 'pypods[uv]'`, or set "
            'installer = "auto" to fall back to pip',
            "",
        )
    return PipInstaller()


def installer_env() -> dict[str, str]:
    """The environment for installer commands: the user's, minus what misdirects them."""
    env = dict(os.environ)
    for name in (*LEAKY_VARIABLES, *_PIP_MISDIRECTING):
        env.pop(name, None)
    return env


def run(
    command: list[str], env: dict[str, str], on_line: OnLine, *, cwd: Path | None = None
) -> None:
    """Run an installer command, streaming its output lines to ``on_line``.

    Installs run in the pod folder, so that relative paths in requirements.txt
    (``./vendored_pkg``, ``-e ./lib``) mean the same on every machine.

    Raises:
        InstallFailed: the command failed or could not be started.
    """
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    diagnosis = Diagnosis()
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    except OSError as exc:
        raise InstallFailed(f"could not run {command[0]}: {exc}", str(exc)) from exc
    assert proc.stdout is not None  # stdout=PIPE
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            diagnosis.feed(line)
            on_line(line)
        returncode = proc.wait()
    except BaseException:
        proc.kill()  # interrupted: never leave an installer writing into the venv
        proc.wait()
        raise
    finally:
        proc.stdout.close()
    if returncode != 0:
        output = "\n".join(tail)
        raise InstallFailed(
            exit_text(_program_name(command), returncode),
            output,
            failing_requirement(output),
            diagnosis.cause(returncode),
        )


def _program_name(command: list[str]) -> str:
    """The program's name: its file name, or the module run with ``python -m``."""
    if len(command) > 2 and command[1] == "-m":
        return command[2]
    return Path(command[0]).name


_FAILING_REQUIREMENT = [
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Could not find a version that satisfies the requirement (\S+)"),
    re.compile(
        r"Because (\S+) was not found in the (?:package registry|provided package locations)"
    ),
    re.compile(r"there is no version of (\S+?)(?: and|,|$)", re.MULTILINE),
    re.compile(r"Because only (\S+?) is available"),
    re.compile(r"Cannot install (\S+?)(?: and|,| because)"),
    re.compile(r"Failed to (?:build|download|fetch) `?([^`\s]+)`?"),
]


def failing_requirement(output: str) -> str | None:
    """The requirement an installer's output says it could not satisfy, if it says."""
    for pattern in _FAILING_REQUIREMENT:
        match = pattern.search(output)
        if match:
            return match.group(1).strip("`'\"")
    return None


def _option_flags(options: InstallOptions) -> list[str]:
    flags = []
    if options.index_url:
        flags += ["--index-url", options.index_url]
    for url in options.extra_index_urls:
        flags += ["--extra-index-url", url]
    for link in options.find_links:
        flags += ["--find-links", link]
    if options.no_index:
        flags.append("--no-index")
    return flags


def _uv_flags_from_pip_config(
    options: InstallOptions, file_options: Collection[str] = ()
) -> list[str]:
    settings = pip_settings()
    flags = []
    index_url = options.index_url or settings.get("index-url")
    extra_urls = (*_split(settings.get("extra-index-url")), *options.extra_index_urls)
    # In pip, a requirements file's --index-url replaces every configured index, extra
    # ones included; in uv the command line would win instead. So leave it to the file.
    if "--index-url" in file_options:
        index_url, extra_urls = None, ()
    if index_url:
        flags += ["--index-url", index_url]
    for url in extra_urls:
        flags += ["--extra-index-url", url]
    if extra_urls or "--extra-index-url" in file_options:
        # pip weighs every index equally and takes the best match; uv by default stops
        # at the first index that has the package at all. Keep pip's meaning.
        flags += ["--index-strategy", "unsafe-best-match"]
    for link in (*_split(settings.get("find-links")), *options.find_links):
        flags += ["--find-links", link]
    if options.no_index or _truthy(settings.get("no-index")):
        flags.append("--no-index")
    for constraint in _split(settings.get("constraint")):
        flags += ["--constraint", constraint]
    if "--pre" in file_options:
        flags += ["--prerelease", "allow"]  # uv ignores --pre inside requirements files
    return flags


def pip_settings() -> dict[str, str]:
    """pip's effective configuration for ``pip install``, as {option: value}.

    Environment variables win over the ``install`` section, which wins over
    ``global``, as in pip itself. Empty when pip is not available to ask. Cached per
    set of ``PIP_*`` variables, since asking pip takes a few hundred milliseconds.
    """
    pip_variables = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("PIP_")))
    return dict(_pip_settings(pip_variables))


@functools.lru_cache(maxsize=8)
def _pip_settings(pip_variables: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    listing = None
    for pip in _pip_commands():
        try:
            result = subprocess.run(
                [*pip, "config", "list"], capture_output=True, text=True, timeout=60,
                env=installer_env(),
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            continue
        if result.returncode == 0:
            listing = result.stdout
            break
    if listing is None:
        logger.warning("could not ask pip for its configuration; uv will use its own defaults")
        return ()
    rank = {"global": 0, "install": 1, ":env:": 2}
    ranked: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        key, sep, raw = line.partition("=")
        section, dot, option = key.rpartition(".")
        if not (sep and dot) or section not in rank:
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            continue
        option = option.replace("_", "-")
        if option not in ranked or rank[section] >= ranked[option][0]:
            ranked[option] = (rank[section], str(value))
    return tuple((option, value) for option, (_, value) in ranked.items())


def _pip_commands() -> list[list[str]]:
    """Ways to run pip here: the client's own, else the one virtualenv carries.

    Environments made by uv, pipx or poetry often have no pip; virtualenv (a
    dependency) always ships a pip wheel, which runs straight from the zip.
    """
    commands = [[sys.executable, "-m", "pip"]]
    try:
        from virtualenv.seed.wheels.embed import get_embed_wheel

        wheel = get_embed_wheel("pip", f"{sys.version_info[0]}.{sys.version_info[1]}")
        if wheel is not None:
            commands.append([sys.executable, os.path.join(str(wheel.path), "pip")])
    except Exception:  # an internal of virtualenv's: never fatal
        pass
    return commands


def _split(value: str | None) -> list[str]:
    return value.split() if value else []


def _whole_number(value: str | None) -> int | None:
    try:
        return int(float(value)) if value else None
    except (ValueError, OverflowError):
        return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
