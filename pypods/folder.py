"""Where a pod's files live, and creating a new pod folder from the template.

<pods_dir>/<name>/
    pod.py            the functions the pod serves
    requirements.txt  what its venv holds (pip's format)
    pod.toml          optional: interpreter and installer options
    venv/             built by PyPods; never commit it

A pod's folder never lies outside its pods folder: names cannot hold a path (see
``validate_pod_name``), and a pod folder that is a symbolic link to somewhere else is
refused, since PyPods writes and deletes inside it (the venv is rebuilt in place).
"""

from __future__ import annotations

import keyword
import os
from pathlib import Path

from .errors import PodConfigError

POD_FILE = "pod.py"
REQUIREMENTS_FILE = "requirements.txt"
CONFIG_FILE = "pod.toml"
VENV_DIR = "venv"
LOCK_FILE = ".venv.lock"

#: Longest pod name, in bytes of UTF-8: a folder name may have 255 (most file
#: systems), and PyPods adds a few characters to it for staging folders.
MAX_NAME_BYTES = 200

#: Environment variable that sets the default pods folder.
PODS_DIR_VARIABLE = "PYPODS_DIR"

_TEMPLATE = Path(__file__).parent / "templates" / "pod.py"


def validate_pod_name(name: object) -> str:
    """Return ``name`` if it can name a pod, else raise ``ValueError``.

    A pod name is a Python identifier that is not a keyword, of at most
    ``MAX_NAME_BYTES`` bytes in UTF-8, so it is also a safe folder name: it can never
    be empty, hold a path separator or a NUL, be ``.`` or ``..``, or be too long for
    the file system.
    """
    if not isinstance(name, str):
        raise ValueError(f"a pod name must be a str, not {type(name).__name__}")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(
            f"invalid pod name {name!r}: a pod name must be a Python identifier that is not "
            "a keyword (letters, digits and underscores, not starting with a digit), "
            "for example 'hello_world_pod'"
        )
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise ValueError(
            f"invalid pod name {name[:20]!r}...: too long ({size} bytes in UTF-8; "
            f"a pod name may have at most {MAX_NAME_BYTES})"
        )
    return name


def default_pods_dir() -> Path:
    """``$PYPODS_DIR`` when set, else ``./pods`` under the current working directory."""
    configured = os.environ.get(PODS_DIR_VARIABLE)
    return Path(configured) if configured else Path.cwd() / "pods"


class PodFolder:
    """The files of one pod."""

    def __init__(self, pods_dir: str | os.PathLike[str], name: str) -> None:
        """Raises ValueError for an invalid name, or a ``pods_dir`` holding a NUL."""
        self.name = validate_pod_name(name)
        if "\0" in os.fspath(pods_dir):
            raise ValueError(f"pods_dir {os.fspath(pods_dir)!r} contains a NUL character")
        self.pods_dir = Path(os.path.abspath(pods_dir))
        self.path = self.pods_dir / name
        self.pod_file = self.path / POD_FILE
        self.requirements = self.path / REQUIREMENTS_FILE
        self.config_file = self.path / CONFIG_FILE
        self.venv = self.path / VENV_DIR
        self.lock_file = self.path / LOCK_FILE

    def ensure_exists(self) -> bool:
        """Create the pod folder from the template if it does not exist yet.

        Returns True when it was created. An existing folder is never modified.

        Raises:
            PodConfigError: the folder exists but has no pod.py, the path is a file,
                the pod folder resolves outside the pods folder (a symbolic link to
                elsewhere), or the pods folder is not a folder.
        """
        self._check_inside()
        if self.path.is_dir():
            if not self.pod_file.is_file():
                raise PodConfigError(
                    f"pod folder {self.path} has no {POD_FILE}: create it (the functions "
                    "the pod serves go there), or remove the folder to get a new pod from "
                    "the template"
                )
            return False
        if self.path.exists():
            raise PodConfigError(f"{self.path} exists but is not a folder; move it away")
        try:
            self.pods_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise PodConfigError(
                f"the pods folder {self.pods_dir} (or a folder above it) exists but is not a folder"
            ) from None
        staging = self.pods_dir / f".{self.name}.new-{os.getpid()}"
        staging.mkdir()
        try:
            template = _TEMPLATE.read_text(encoding="utf-8").replace("{name}", self.name)
            (staging / POD_FILE).write_text(template, encoding="utf-8")
            (staging / REQUIREMENTS_FILE).write_text("", encoding="utf-8")
            os.rename(staging, self.path)  # all at once: never a folder without pod.py
        except OSError:
            if not self.path.is_dir():
                raise
            # another process created the pod first: use theirs
        finally:
            if staging.exists():
                for child in staging.iterdir():
                    child.unlink()
                staging.rmdir()
        return True

    def _check_inside(self) -> None:
        """Refuse a pod folder whose real location is outside the pods folder."""
        if not os.path.lexists(self.path):
            return
        real = os.path.realpath(self.path)
        real_pods_dir = os.path.realpath(self.pods_dir)
        if os.path.commonpath([real, real_pods_dir]) != real_pods_dir or real == real_pods_dir:
            raise PodConfigError(
                f"pod folder {self.path} leads to {real}, outside the pods folder "
                f"{self.pods_dir}: PyPods builds and deletes venvs inside pod folders, so "
                "it only uses folders inside the pods folder. Move or copy the pod there "
                "instead of linking to it"
            )

    def __repr__(self) -> str:
        return f"PodFolder({str(self.pods_dir)!r}, {self.name!r})"
