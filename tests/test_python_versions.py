"""Pods on other Python versions, found the way a user's machine has them installed.

Tests that need a version that is not installed skip, saying which one is missing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pypods import PodConfigError, PodLoader, PythonNotFoundError
from pypods.interpreters import find_interpreter

from .conftest import write_pod

INFO_POD = """
import sys

def info():
    import bson, pymongo
    return {"version": list(sys.version_info[:3]), "pymongo": pymongo.version}
"""


def require(version: str):
    try:
        return find_interpreter(version)
    except PythonNotFoundError as exc:
        pytest.skip(f"Python {version} is not installed here: {exc}")


def stamp(pods_dir, name):
    return json.loads((pods_dir / name / "venv" / "pypods.json").read_text())


def test_a_version_finds_the_newest_matching_install():
    interpreter = require("3.9")
    assert interpreter.version[:2] == (3, 9)
    assert interpreter.implementation == "CPython"
    exact = find_interpreter(interpreter.version_text)
    assert exact.version == interpreter.version


def test_the_running_interpreter_is_the_default():
    interpreter = find_interpreter(None)
    assert interpreter.path == sys.executable
    assert interpreter.version == tuple(sys.version_info[:3])


@pytest.mark.parametrize("version", ["3.9", "3.12"])
def test_pod_runs_on_the_requested_version(pods_dir, version):
    wanted = require(version)
    write_pod(pods_dir, "versioned", INFO_POD)
    with PodLoader("versioned", pods_dir=pods_dir, python=version) as pod:
        assert tuple(pod.info()["version"]) == wanted.version
    assert stamp(pods_dir, "versioned")["fingerprint"]["python"]["version"] == wanted.version_text


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_python_38_pods_get_a_pymongo_that_supports_38(pods_dir, installer):
    require("3.8")
    config = f'[install]\ninstaller = "{installer}"\n'
    write_pod(pods_dir, "old", INFO_POD, config=config)
    with PodLoader("old", pods_dir=pods_dir, python="3.8") as pod:
        info = pod.info()
    assert info["version"][:2] == [3, 8]
    major, minor = (int(p) for p in info["pymongo"].split(".")[:2])
    assert (major, minor) < (4, 11)


def test_pod_toml_pins_python_and_the_loader_argument_wins(pods_dir, capfd):
    pinned = require("3.10")
    override = require("3.12")
    write_pod(pods_dir, "pinned_python", INFO_POD, config='python = "3.10"\n')
    with PodLoader("pinned_python", pods_dir=pods_dir) as pod:
        assert tuple(pod.info()["version"]) == pinned.version
    capfd.readouterr()
    with PodLoader("pinned_python", pods_dir=pods_dir, python="3.12") as pod:
        assert tuple(pod.info()["version"]) == override.version
    err = capfd.readouterr().err
    assert "interpreter changed" in err and pinned.version_text in err
    assert override.version_text in err


def test_a_path_to_an_interpreter_works(pods_dir):
    interpreter = require("3.10")
    write_pod(pods_dir, "bypath", INFO_POD)
    with PodLoader("bypath", pods_dir=pods_dir, python=interpreter.path) as pod:
        assert tuple(pod.info()["version"]) == interpreter.version


def test_a_missing_version_is_a_clear_error(pods_dir):
    write_pod(pods_dir, "future", INFO_POD)
    with pytest.raises(PythonNotFoundError) as info:
        PodLoader("future", pods_dir=pods_dir, python="3.99").load_pod()
    text = str(info.value)
    assert "'future'" in text and "3.99" in text and "pyenv install 3.99" in text
    assert not (pods_dir / "future" / "venv").exists()


@pytest.mark.parametrize("version", ["3.7", "2.7", "2"])
def test_versions_older_than_38_are_refused(pods_dir, version):
    write_pod(pods_dir, "ancient", INFO_POD)
    with pytest.raises(PodConfigError, match=r"3\.8 or newer"):
        PodLoader("ancient", pods_dir=pods_dir, python=version).load_pod()


def test_an_installed_but_too_old_interpreter_is_refused(pods_dir):
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    old = sorted(root.glob("3.[67].*/bin/python3"))
    if not old:
        pytest.skip(f"no Python 3.6 or 3.7 under {root} to refuse")
    write_pod(pods_dir, "tooold", INFO_POD)
    with pytest.raises(PodConfigError, match=r"3\.8 or newer"):
        PodLoader("tooold", pods_dir=pods_dir, python=str(old[0])).load_pod()


def test_a_path_that_is_not_python_is_a_clear_error(pods_dir, tmp_path):
    fake = tmp_path / "python-fake"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    write_pod(pods_dir, "fake", INFO_POD)
    for request in (str(fake), str(tmp_path / "missing" / "python"), "no-such-python-command"):
        with pytest.raises(PythonNotFoundError):
            PodLoader("fake", pods_dir=pods_dir, python=request).load_pod()


def test_the_newest_patch_release_is_chosen():
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    installed = [p.name for p in root.glob("3.9.*") if p.name.replace(".", "").isdigit()]
    if not installed:
        pytest.skip(f"no pyenv Python 3.9 under {root}")
    newest = max(installed, key=lambda v: tuple(int(x) for x in v.split(".")))
    assert find_interpreter("3.9").version_text == newest
