"""Careless or hostile names, paths and requirements files.

Pod names and paths can never lead outside the pods folder; odd but valid paths
(spaces, non-ASCII) work; requirements files mean what they mean to pip, with either
installer, or are refused with a clear message.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pypods import PodConfigError, PodInstallError, PodLoader

from .conftest import make_wheel, write_pod
from .packages import write_local_package

INSTALLERS = ["uv", "pip"]

VERSION_POD = """
import importlib

def version(module):
    return importlib.import_module(module).__version__

def importable(module):
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
"""


def installer_config(installer: str) -> str:
    return f'[install]\ninstaller = "{installer}"\n'


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# -- pod names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [".", "..", "/etc", "/tmp/x", "a\x00b", "a/../b", "a\\b", " a", "a" * 201, "é" * 101],
    ids=repr,
)
def test_names_that_could_leave_the_pods_folder_or_break_it_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="pod name"):
        PodLoader(name, pods_dir=tmp_path / "pods")
    assert list(tmp_path.iterdir()) == []


def test_the_longest_name_works_and_is_the_folder_name(pods_dir):
    name = "é" * 100  # 200 bytes in UTF-8: the most a pod name may have
    write_pod(pods_dir, name, "def hello():\n    return 'hi'\n")
    with PodLoader(name, pods_dir=pods_dir) as pod:
        assert pod.hello() == "hi"
    assert os.listdir(pods_dir) == [name]


# -- pods folders ---------------------------------------------------------------------


def test_a_pods_dir_with_a_nul_is_refused(tmp_path):
    with pytest.raises(ValueError, match="NUL"):
        PodLoader("ok", pods_dir=str(tmp_path / "po\x00ds"))


def test_a_pods_dir_that_is_a_file_is_a_config_error(tmp_path):
    not_a_folder = tmp_path / "pods"
    not_a_folder.write_text("a file")
    with pytest.raises(PodConfigError, match="not a folder"):
        PodLoader("ok", pods_dir=not_a_folder).load_pod()
    assert not_a_folder.read_text() == "a file"


def test_a_pod_folder_linked_to_outside_the_pods_folder_is_refused(pods_dir, tmp_path):
    outside = write_pod(tmp_path / "elsewhere", "victim", "def f():\n    return 1\n")
    (outside / "venv").mkdir()  # a venv PyPods did not build: must never be deleted
    (outside / "venv" / "precious").write_text("keep me")
    before = tree(outside)
    (pods_dir / "linked").symlink_to(outside)
    (pods_dir / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("linked", "dangling"):
        with pytest.raises(PodConfigError, match="outside the pods folder"):
            PodLoader(name, pods_dir=pods_dir).load_pod()
    assert tree(outside) == before
    assert not (tmp_path / "nowhere").exists()


def test_links_inside_the_pods_folder_are_followed(pods_dir, tmp_path):
    write_pod(pods_dir, "real", "def f():\n    return 'real'\n")
    (pods_dir / "alias").symlink_to(pods_dir / "real")
    linked_pods = tmp_path / "linked pods"
    linked_pods.symlink_to(pods_dir)
    with PodLoader("alias", pods_dir=pods_dir) as pod:
        assert pod.f() == "real"
    with PodLoader("real", pods_dir=linked_pods) as pod:
        assert pod.f() == "real"


@pytest.mark.parametrize("installer", INSTALLERS)
def test_pods_dir_with_spaces_and_unicode_installs_and_runs_console_scripts(tmp_path, installer):
    pods = tmp_path / "my pods ünï 日本"
    folder = write_pod(
        pods,
        "spaced",
        VERSION_POD
        + """
import os, subprocess, sys
import localpkg

def run_script():
    script = os.path.join(sys.prefix, "bin", "localpkg-hello")
    return subprocess.run([script], capture_output=True, text=True, check=True).stdout

def source():
    return localpkg.SOURCE
""",
        requirements="six==1.16.0\n-e ./localpkg\n",
        config=installer_config(installer),
    )
    write_local_package(folder / "localpkg", "localpkg", "0.3", script="localpkg-hello")
    with PodLoader("spaced", pods_dir=pods) as pod:
        assert pod.version("six") == "1.16.0"
        assert pod.run_script() == "hello from localpkg 0.3\n"  # a shebang with spaces
        assert pod.source() == str(folder / "localpkg" / "localpkg")  # editable


# -- requirements files ---------------------------------------------------------------


@pytest.mark.parametrize("installer", INSTALLERS)
def test_comments_markers_and_includes_mean_what_they_mean_to_pip(pods_dir, installer):
    folder = write_pod(
        pods_dir,
        "marked",
        VERSION_POD,
        requirements="""
            # pinned for the test
            six==1.16.0  # a comment after a requirement
            -r more.txt
        """,
        config=installer_config(installer),
    )
    (folder / "more.txt").write_text(
        'packaging==21.3 ; python_version >= "3"\n'
        'attrs==23.1.0 ; python_version < "3"  # never on Python 3\n'
    )
    with PodLoader("marked", pods_dir=pods_dir) as pod:
        assert pod.version("six") == "1.16.0"
        assert pod.version("packaging") == "21.3"
        assert not pod.importable("attrs")


def simple_index(wheels: list[Path], simple: Path) -> Path:
    """Write a PEP 503 index of ``wheels`` at ``simple``; return it."""
    projects: dict[str, list[Path]] = {}
    for wheel in wheels:
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        projects.setdefault(project, []).append(wheel)
    for project, files in projects.items():
        (simple / project).mkdir(parents=True)
        links = "".join(f'<a href="{f.as_uri()}">{f.name}</a>\n' for f in files)
        (simple / project / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    links = "".join(f'<a href="{p}/">{p}</a>\n' for p in projects)
    (simple / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    return simple


@pytest.fixture(scope="module")
def local_index(tmp_path_factory) -> Path:
    """An index in a folder: the pod runtime's needs, and a package found nowhere else."""
    root = tmp_path_factory.mktemp("index")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
         "--dest", str(wheels), "pymongo"],
        check=True,
    )  # fmt: skip
    make_wheel(wheels, "pypods_index_only", "1.0")
    return simple_index(list(wheels.glob("*.whl")), root / "simple")


def only_index(monkeypatch, url: str) -> None:
    """Configure pip (and so uv) with exactly one index, ``url``, and nothing else."""
    for name in list(os.environ):
        if name.startswith(("PIP_", "UV_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("UV_NO_CONFIG", "1")
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setenv("PIP_RETRIES", "0")


@pytest.mark.parametrize("installer", INSTALLERS)
def test_an_index_url_in_requirements_replaces_every_configured_index(
    pods_dir, tmp_path, local_index, monkeypatch, installer
):
    only_index(monkeypatch, "http://127.0.0.1:9/simple")  # the discard port: refused
    newer = simple_index([make_wheel(tmp_path, "pypods_index_only", "2.0")], tmp_path / "x")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", newer.as_uri())  # dropped too, as pip does
    write_pod(
        pods_dir,
        "indexed",
        VERSION_POD,
        requirements=f"--index-url {local_index.as_uri()}\npypods_index_only\n",
        config=installer_config(installer),
    )
    with PodLoader("indexed", pods_dir=pods_dir) as pod:
        assert pod.version("pypods_index_only") == "1.0"


@pytest.mark.parametrize("installer", INSTALLERS)
def test_an_extra_index_url_in_requirements_is_weighed_like_pip_does(
    pods_dir, tmp_path, local_index, monkeypatch, installer
):
    """pip takes the best version from all indexes; uv would stop at the first that has
    the package, and an extra index comes first to uv."""
    older = make_wheel(tmp_path, "pypods_index_only", "0.5")
    extra = simple_index([older], tmp_path / "extra")
    only_index(monkeypatch, local_index.as_uri())  # has 1.0
    write_pod(
        pods_dir,
        "weighed",
        VERSION_POD,
        requirements=f"--extra-index-url {extra.as_uri()}\npypods_index_only\n",
        config=installer_config(installer),
    )
    with PodLoader("weighed", pods_dir=pods_dir) as pod:
        assert pod.version("pypods_index_only") == "1.0"


@pytest.mark.parametrize("installer", INSTALLERS)
def test_pre_and_find_links_lines_in_requirements_are_honoured(pods_dir, installer):
    folder = write_pod(
        pods_dir,
        "prerelease",
        VERSION_POD,
        requirements="--pre\n--find-links ./wheels\npypods_pre_only\n",
        config=installer_config(installer),
    )
    (folder / "wheels").mkdir()
    make_wheel(folder / "wheels", "pypods_pre_only", "1.0")
    make_wheel(folder / "wheels", "pypods_pre_only", "2.0rc1")
    with PodLoader("prerelease", pods_dir=pods_dir) as pod:
        assert pod.version("pypods_pre_only") == "2.0rc1"


@pytest.mark.parametrize("installer", INSTALLERS)
def test_options_pip_refuses_in_requirements_are_a_clear_install_error(
    pods_dir, tmp_path, installer
):
    target = tmp_path / "somewhere else"
    write_pod(
        pods_dir,
        "misdirected",
        VERSION_POD,
        requirements=f"--target '{target}'\nsix==1.16.0\n",
        config=installer_config(installer),
    )
    with pytest.raises(PodInstallError) as info:
        PodLoader("misdirected", pods_dir=pods_dir).load_pod()
    text = str(info.value)
    assert f"Fix {pods_dir / 'misdirected' / 'requirements.txt'}" in text
    # Each installer's own words name the culprit: the option, or its line and column.
    assert ("no such option: --target" if installer == "pip" else "requirements.txt:1:1") in text
    assert not target.exists()
    assert not (pods_dir / "misdirected" / "venv" / "pypods.json").exists()
