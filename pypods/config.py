"""Reading a pod's optional ``pod.toml``: its interpreter and installer options.

    python = "3.9"                 # a version ("3.9", "3.9.18") or an interpreter path

    [install]
    installer = "auto"             # "auto" (uv when available, else pip), "uv" or "pip"
    index-url = "https://..."      # instead of pip's configured index
    extra-index-url = ["https://..."]
    find-links = ["wheels"]        # folders (relative to the pod folder) or URLs
    no-index = true                # only find-links: offline installs from a wheelhouse

Options given here add to pip's own configuration (pip.conf, ``PIP_*`` variables),
which is always honoured. A ``python`` passed to ``PodLoader`` wins over this file.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PodConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9 and 3.10 only
    import tomli as tomllib

INSTALLERS = ("auto", "uv", "pip")

#: Environment variable choosing the installer when pod.toml leaves it at "auto".
INSTALLER_VARIABLE = "PYPODS_INSTALLER"


@dataclass(frozen=True)
class InstallOptions:
    """How a pod's requirements are installed."""

    installer: str = "auto"
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False

    def fingerprint(self) -> dict[str, Any]:
        """What, in these options, decides the contents of the venv (not the installer)."""
        return {
            "index_url": self.index_url,
            "extra_index_urls": list(self.extra_index_urls),
            "find_links": list(self.find_links),
            "no_index": self.no_index,
        }


@dataclass(frozen=True)
class PodConfig:
    """The contents of a pod.toml (defaults when there is none)."""

    python: str | None = None
    install: InstallOptions = field(default_factory=InstallOptions)


_TOP_KEYS = {"python", "install"}
_INSTALL_KEYS = {"installer", "index-url", "extra-index-url", "find-links", "no-index"}


def read_config(path: Path) -> PodConfig:
    """Read ``path`` (a pod.toml); a missing file gives the defaults.

    Raises:
        PodConfigError: the file is not valid TOML, has unknown keys, or a value of
            the wrong type.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return PodConfig()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PodConfigError(f"{path} is not valid TOML (UTF-8): {exc}") from None
    except OSError as exc:
        raise PodConfigError(f"{path} cannot be read: {exc}") from None
    _check_keys(path, data, _TOP_KEYS, "")
    python = data.get("python")
    if python is not None and not isinstance(python, str):
        raise PodConfigError(f"{path}: 'python' must be a string such as \"3.9\" or a path")
    if python is not None and ("/" in python or os.sep in python):
        python = _resolve_link(path.parent, python)  # a relative path means the pod folder
    install = data.get("install", {})
    if not isinstance(install, dict):
        raise PodConfigError(f"{path}: [install] must be a table")
    _check_keys(path, install, _INSTALL_KEYS, "install.")
    installer = install.get("installer", "auto")
    if installer not in INSTALLERS:
        raise PodConfigError(f"{path}: install.installer must be one of {', '.join(INSTALLERS)}")
    index_url = install.get("index-url")
    if index_url is not None and not isinstance(index_url, str):
        raise PodConfigError(f"{path}: install.index-url must be a string")
    no_index = install.get("no-index", False)
    if not isinstance(no_index, bool):
        raise PodConfigError(f"{path}: install.no-index must be true or false")
    return PodConfig(
        python=python,
        install=InstallOptions(
            installer=installer,
            index_url=index_url,
            extra_index_urls=_strings(path, install, "extra-index-url"),
            find_links=tuple(
                _resolve_link(path.parent, link) for link in _strings(path, install, "find-links")
            ),
            no_index=no_index,
        ),
    )


def _check_keys(path: Path, table: dict, allowed: set[str], prefix: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PodConfigError(
            f"{path}: unknown key {prefix}{unknown[0]}; the keys PyPods reads are "
            + ", ".join(prefix + k for k in sorted(allowed))
        )


def _strings(path: Path, table: dict, key: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PodConfigError(f"{path}: install.{key} must be a string or a list of strings")
    return tuple(value)


def _resolve_link(base: Path, link: str) -> str:
    if "://" in link:
        return link
    return os.path.normpath(os.path.join(base, os.path.expanduser(link)))


def choose_installer(options: InstallOptions) -> str:
    """The installer asked for: pod.toml's, else ``$PYPODS_INSTALLER``, else "auto"."""
    if options.installer != "auto":
        return options.installer
    chosen = os.environ.get(INSTALLER_VARIABLE, "auto").strip().lower() or "auto"
    if chosen not in INSTALLERS:
        raise PodConfigError(
            f"${INSTALLER_VARIABLE} must be one of {', '.join(INSTALLERS)}, not {chosen!r}"
        )
    return chosen
