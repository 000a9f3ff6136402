"""Where a pod's files live, and creating a new pod folder from the template.

<pods_dir>/<name>/
    pod.py            the functions the pod serves
    requirements.txt  what its venv holds (pip's format)
    pod.toml          optional: interpreter and installer options
    venv/             built by PyPods; never commit it
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

#: Environment variable that sets the default pods folder.
PODS_DIR_VARIABLE = "PYPODS_DIR"

_TEMPLATE = Path(__file__).parent / "templates" / "pod.py"


def validate_pod_name(name: object) -> str:
    """Return ``name`` if it can name a pod, else raise ``ValueError``.

    A pod name is a Python identifier that is not a keyword, so it is also a safe
    folder name: it can never be empty, hold a path separator or be ``..``.
    """
    if not isinstance(name, str):
        raise ValueError(f"a pod name must be a str, not {type(name).__name__}")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(
            f"invalid pod name {name!r}: a pod name must be a Python identifier that is not "
            "a keyword (letters, digits and underscores, not starting with a digit), "
            "for example 'hello_world_pod'"
        )
    return name


def default_pods_dir() -> Path:
    """``$PYPODS_DIR`` when set, else ``./pods`` under the current working directory."""
    configured = os.environ.get(PODS_DIR_VARIABLE)
    return Path(configured) if configured else Path.cwd() / "pods"


class PodFolder:
    """The files of one pod."""

    def __init__(self, pods_dir: str | os.PathLike[str], name: str) -> None:
        self.name = validate_pod_name(name)
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
            PodConfigError: the folder exists but has no pod.py, or the path is a file.
        """
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
        self.pods_dir.mkdir(parents=True, exist_ok=True)
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

    def __repr__(self) -> str:
        return f"PodFolder({str(self.pods_dir)!r}, {self.name!r})"
