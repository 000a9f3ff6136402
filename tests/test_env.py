"""Pod environments: real venvs, real installs from the package index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import packaging
import pytest

from pypods import PodConfigError, PodInstallError, PodLoader

from .conftest import make_wheel, write_pod

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

PIP = '[install]\ninstaller = "pip"\n'


def stamp(pods_dir: Path, name: str) -> dict | None:
    path = pods_dir / name / "venv" / "pypods.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_pinned_package_is_the_pods_own_version(pods_dir, installer, capfd):
    config = PIP if installer == "pip" else '[install]\ninstaller = "uv"\n'
    write_pod(pods_dir, "pinned", VERSION_POD, requirements="packaging==21.3\n", config=config)
    with PodLoader("pinned", pods_dir=pods_dir) as pod:
        assert pod.version("packaging") == "21.3"
        assert packaging.__version__ != "21.3"  # the client keeps its own
    assert stamp(pods_dir, "pinned")["installer"] == installer
    err = capfd.readouterr().err
    assert "pypods: pod 'pinned': no venv yet; building its venv with " + installer in err
    assert "venv ready" in err


def test_nothing_is_rebuilt_or_printed_when_nothing_changed(pods_dir, capfd):
    write_pod(pods_dir, "steady", VERSION_POD, requirements="six==1.16.0\n")
    PodLoader("steady", pods_dir=pods_dir).load_pod().unload_pod()
    first = stamp(pods_dir, "steady")
    capfd.readouterr()
    with PodLoader("steady", pods_dir=pods_dir) as pod:
        assert pod.version("six") == "1.16.0"
    assert stamp(pods_dir, "steady") == first
    assert capfd.readouterr().err == ""


def test_changed_requirements_bring_the_venv_in_line(pods_dir, capfd):
    folder = write_pod(pods_dir, "moving", VERSION_POD, requirements="six==1.16.0\n")
    loader = PodLoader("moving", pods_dir=pods_dir).load_pod()
    assert loader.importable("six") and not loader.importable("attrs")
    (folder / "requirements.txt").write_text("attrs==23.1.0\n")
    capfd.readouterr()
    loader.load_pod()
    assert loader.version("attrs") == "23.1.0"
    assert not loader.importable("six")  # exactly the new list: nothing left over
    assert "requirements.txt changed" in capfd.readouterr().err
    loader.unload_pod()


def test_included_requirement_files_are_part_of_the_fingerprint(pods_dir):
    folder = write_pod(pods_dir, "including", VERSION_POD, requirements="-r more.txt\n")
    (folder / "more.txt").write_text("six==1.15.0\n")
    loader = PodLoader("including", pods_dir=pods_dir).load_pod()
    assert loader.version("six") == "1.15.0"
    (folder / "more.txt").write_text("six==1.16.0\n")
    loader.load_pod()
    assert loader.version("six") == "1.16.0"
    loader.unload_pod()


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_missing_package_is_a_clear_install_error_and_nothing_is_kept(pods_dir, installer):
    config = PIP if installer == "pip" else None
    folder = write_pod(
        pods_dir,
        "typo",
        VERSION_POD,
        requirements="six==1.16.0\nno-such-package-pypods-test-xyz==1.0\n",
        config=config,
    )
    with pytest.raises(PodInstallError) as info:
        PodLoader("typo", pods_dir=pods_dir).load_pod()
    error = info.value
    assert error.requirement is not None
    assert error.requirement.startswith("no-such-package-pypods-test-xyz")
    assert "no-such-package-pypods-test-xyz" in str(error)
    assert "requirements.txt" in str(error) and "load_pod() again" in str(error)
    assert error.output  # the installer's own words
    assert stamp(pods_dir, "typo") is None  # never taken as ready
    (folder / "requirements.txt").write_text("six==1.16.0\n")
    with PodLoader("typo", pods_dir=pods_dir) as pod:
        assert pod.version("six") == "1.16.0"


def test_a_half_built_venv_is_rebuilt(pods_dir, capfd):
    folder = write_pod(pods_dir, "half", VERSION_POD)
    (folder / "venv" / "bin").mkdir(parents=True)  # what a killed build leaves behind
    with PodLoader("half", pods_dir=pods_dir) as pod:
        assert pod.importable("bson")
    assert "no PyPods stamp" in capfd.readouterr().err


def test_a_stale_runtime_copy_is_refreshed_without_reinstalling(pods_dir, capfd):
    write_pod(pods_dir, "refresh", VERSION_POD)
    PodLoader("refresh", pods_dir=pods_dir).load_pod().unload_pod()
    path = pods_dir / "refresh" / "venv" / "pypods.json"
    data = json.loads(path.read_text())
    data["runtime"] = "an older runtime"
    path.write_text(json.dumps(data))
    capfd.readouterr()
    with PodLoader("refresh", pods_dir=pods_dir) as pod:
        assert pod.importable("bson")
    after = stamp(pods_dir, "refresh")
    assert after["runtime"] != "an older runtime"
    assert after["built_at"] == data["built_at"]  # not rebuilt
    assert "building" not in capfd.readouterr().err


def test_bytecode_is_compiled_at_install(pods_dir):
    write_pod(pods_dir, "compiled", VERSION_POD)
    PodLoader("compiled", pods_dir=pods_dir).load_pod().unload_pod()
    site = next((pods_dir / "compiled" / "venv" / "lib").glob("python*/site-packages"))
    assert list((site / "bson" / "__pycache__").glob("*.pyc"))
    assert list((site / "_pypods_runtime" / "__pycache__").glob("server.*.pyc"))


def test_concurrent_loads_build_once_and_all_work(pods_dir):
    write_pod(pods_dir, "crowded", VERSION_POD, requirements="six==1.16.0\n")
    script = textwrap.dedent(
        f"""
        from pypods import PodLoader
        with PodLoader("crowded", pods_dir={str(pods_dir)!r}) as pod:
            print(pod.version("six"))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, results
    assert all(out.strip() == "1.16.0" for out, _ in results)
    builds = sum(err.count("building its venv") for _, err in results)
    assert builds == 1


def test_py_bson_is_refused_with_a_clear_error(pods_dir):
    write_pod(pods_dir, "pybson", VERSION_POD, requirements="bson==0.5.10\n")
    with pytest.raises(PodInstallError) as info:
        PodLoader("pybson", pods_dir=pods_dir).load_pod()
    text = str(info.value)
    assert "standalone 'bson' package" in text and "pymongo" in text
    assert stamp(pods_dir, "pybson") is None


def test_a_compatible_pymongo_pin_is_kept(pods_dir):
    write_pod(pods_dir, "ownmongo", VERSION_POD, requirements="pymongo==4.6.3\n")
    with PodLoader("ownmongo", pods_dir=pods_dir) as pod:
        assert pod.version("pymongo") == "4.6.3"


def test_a_conflicting_pymongo_pin_is_a_clear_error(pods_dir):
    write_pod(pods_dir, "oldmongo", VERSION_POD, requirements="pymongo==3.13.0\n")
    with pytest.raises(PodInstallError) as info:
        PodLoader("oldmongo", pods_dir=pods_dir).load_pod()
    assert "pymongo>=4.0" in str(info.value) and "pinned pymongo" in str(info.value)


def test_installer_can_be_chosen_by_environment(pods_dir, monkeypatch):
    monkeypatch.setenv("PYPODS_INSTALLER", "pip")
    write_pod(pods_dir, "bypip", VERSION_POD)
    PodLoader("bypip", pods_dir=pods_dir).load_pod().unload_pod()
    assert stamp(pods_dir, "bypip")["installer"] == "pip"
    monkeypatch.setenv("PYPODS_INSTALLER", "conda")
    with pytest.raises(PodConfigError, match="PYPODS_INSTALLER"):
        write_pod(pods_dir, "bad_installer", VERSION_POD)
        PodLoader("bad_installer", pods_dir=pods_dir).load_pod()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("python = 3.9\n", "'python' must be a string"),
        ("pyhton = '3.9'\n", "unknown key pyhton"),
        ("[install]\nindex_url = 'x'\n", "unknown key install.index_url"),
        ("[install]\ninstaller = 'conda'\n", "install.installer must be one of"),
        ("[install]\nfind-links = 5\n", "install.find-links must be"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_invalid_pod_toml_is_a_clear_error(pods_dir, toml, message):
    write_pod(pods_dir, "configured", VERSION_POD, config=toml)
    with pytest.raises(PodConfigError, match=message):
        PodLoader("configured", pods_dir=pods_dir).load_pod()
    assert not (pods_dir / "configured" / "venv").exists()


# -- offline installs from a wheelhouse ------------------------------------------------


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """A folder of wheels: what an offline machine would install from."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
         "--dest", str(folder), "pymongo", "six==1.16.0"],
        check=True,
    )  # fmt: skip
    make_wheel(folder, "pypods_wheelhouse_only", "1.0")  # in no index and no cache
    return folder


def offline(monkeypatch, find_links: str | None) -> None:
    """Cut pip (and so uv) off from every index, configured or not."""
    for name in list(os.environ):
        if name.startswith(("PIP_", "UV_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("UV_NO_CONFIG", "1")
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    if find_links:
        monkeypatch.setenv("PIP_FIND_LINKS", find_links)


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_offline_install_from_a_wheelhouse_via_pip_config(
    pods_dir, wheelhouse, monkeypatch, installer
):
    offline(monkeypatch, str(wheelhouse))
    config = f'[install]\ninstaller = "{installer}"\n'
    requirements = "six==1.16.0\npypods_wheelhouse_only==1.0\n"
    write_pod(pods_dir, "offline", VERSION_POD, requirements=requirements, config=config)
    with PodLoader("offline", pods_dir=pods_dir) as pod:
        assert pod.version("six") == "1.16.0"
        assert pod.version("pypods_wheelhouse_only") == "1.0"


def test_offline_install_from_a_wheelhouse_in_pod_toml(pods_dir, wheelhouse, monkeypatch):
    offline(monkeypatch, None)
    folder = write_pod(
        pods_dir, "tomlwheels", VERSION_POD, requirements="pypods_wheelhouse_only==1.0\n",
        config='[install]\nno-index = true\nfind-links = ["wheels"]\n',
    )  # fmt: skip
    (folder / "wheels").symlink_to(wheelhouse)
    with PodLoader("tomlwheels", pods_dir=pods_dir) as pod:
        assert pod.version("pypods_wheelhouse_only") == "1.0"


def test_offline_without_the_wheel_is_a_clear_install_error(pods_dir, wheelhouse, monkeypatch):
    offline(monkeypatch, str(wheelhouse))
    write_pod(pods_dir, "unreachable", VERSION_POD, requirements="attrs==23.1.0\n")
    with pytest.raises(PodInstallError) as info:
        PodLoader("unreachable", pods_dir=pods_dir).load_pod()
    assert info.value.requirement is not None and "attrs" in info.value.requirement
    assert stamp(pods_dir, "unreachable") is None


def test_relative_paths_in_requirements_are_relative_to_the_pod_folder(
    pods_dir, tmp_path, monkeypatch
):
    folder = write_pod(pods_dir, "vendoring", VERSION_POD, requirements="./vendored\n")
    package = folder / "vendored"
    (package / "vendored_pkg").mkdir(parents=True)
    (package / "vendored_pkg" / "__init__.py").write_text("__version__ = '0.0.7'\n")
    (package / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "vendored-pkg"
            version = "0.0.7"
            """
        )
    )
    monkeypatch.chdir(tmp_path)  # anywhere but the pod folder
    with PodLoader("vendoring", pods_dir=pods_dir) as pod:
        assert pod.version("vendored_pkg") == "0.0.7"


def test_build_progress_names_pod_packages_and_time_and_is_logged(pods_dir, capfd, caplog):
    import logging
    import re

    folder = write_pod(pods_dir, "progress", VERSION_POD, requirements="six==1.16.0\n")
    PodLoader("progress", pods_dir=pods_dir).load_pod().unload_pod()
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("pypods: pod 'progress':")]
    assert lines and len(lines) == len(err.splitlines())
    assert any("installing six==1.16.0" in line for line in lines)
    assert all(re.search(r"\[\d+\.\ds\]$", line) for line in lines)

    # A program that routes the pypods logger gets the lines there, and not twice.
    (folder / "requirements.txt").write_text("six==1.15.0\n")
    with caplog.at_level(logging.DEBUG, logger="pypods"):
        PodLoader("progress", pods_dir=pods_dir).load_pod().unload_pod()
    assert capfd.readouterr().err == ""
    messages = [r.getMessage() for r in caplog.records if r.name == "pypods"]
    assert any("requirements.txt changed" in m for m in messages)
    assert any("installing six==1.15.0" in m for m in messages)
    assert any(
        r.levelno == logging.DEBUG and "installer:" in r.getMessage() for r in caplog.records
    )


def test_uv_honours_pip_config_even_when_the_client_has_no_pip(pods_dir, wheelhouse, tmp_path):
    from pypods.installers import find_uv

    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed")
    client = tmp_path / "client-venv"
    repo = Path(__file__).resolve().parent.parent
    subprocess.run([uv, "venv", "-q", str(client), "--python", sys.executable], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(client / "bin" / "python"), "-e", str(repo),
         "uv"],
        check=True,
    )  # fmt: skip
    probe = subprocess.run(
        [str(client / "bin" / "python"), "-c", "import pip"], capture_output=True
    )
    assert probe.returncode != 0  # no pip in this client
    write_pod(pods_dir, "nopip", VERSION_POD, requirements="pypods_wheelhouse_only==1.0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, UV_NO_CONFIG="1", UV_OFFLINE="1", PIP_NO_INDEX="1",
               PIP_FIND_LINKS=str(wheelhouse))  # fmt: skip
    script = textwrap.dedent(
        f"""
        from pypods import PodLoader
        with PodLoader("nopip", pods_dir={str(pods_dir)!r}) as pod:
            print(pod.version("pypods_wheelhouse_only"))
        """
    )
    result = subprocess.run(
        [str(client / "bin" / "python"), "-c", script], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.0"


def test_a_failed_rebuild_unloads_the_running_pod_instead_of_breaking_it(pods_dir):
    from pypods import PodNotLoadedError

    folder = write_pod(pods_dir, "rebuilt", VERSION_POD)
    namespace: dict = {}
    loader = PodLoader("rebuilt", namespace, pods_dir=pods_dir).load_pod()
    (folder / "requirements.txt").write_text("no-such-package-pypods-test-xyz==1.0\n")
    with pytest.raises(PodInstallError):
        loader.load_pod()
    assert not loader.loaded and "version" not in namespace
    with pytest.raises(PodNotLoadedError):
        loader.call("version", "bson")
    (folder / "requirements.txt").write_text("")
    assert loader.load_pod().importable("bson")
    loader.unload_pod()


def test_unreadable_pod_toml_is_a_config_error(pods_dir):
    folder = write_pod(pods_dir, "garbled", VERSION_POD)
    (folder / "pod.toml").write_bytes(b"python = '3.\xff'\n")
    with pytest.raises(PodConfigError, match="UTF-8"):
        PodLoader("garbled", pods_dir=pods_dir).load_pod()
    (folder / "pod.toml").unlink()
    (folder / "pod.toml").mkdir()
    with pytest.raises(PodConfigError, match="cannot be read"):
        PodLoader("garbled", pods_dir=pods_dir).load_pod()


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_non_utf8_requirements_are_a_clear_install_error(pods_dir, installer):
    folder = write_pod(
        pods_dir, "latin", VERSION_POD, config=f'[install]\ninstaller = "{installer}"\n'
    )
    (folder / "requirements.txt").write_bytes(b"# caf\xe9 requirements\nsix==1.16.0\n")
    with pytest.raises(PodInstallError, match=r"(?i)utf-8") as info:
        PodLoader("latin", pods_dir=pods_dir).load_pod()
    assert "requirements.txt" in str(info.value)


def test_a_relative_python_path_in_pod_toml_means_the_pod_folder(pods_dir, tmp_path, monkeypatch):
    folder = write_pod(pods_dir, "localpython", VERSION_POD, config='python = "interp/python"\n')
    (folder / "interp").mkdir()
    (folder / "interp" / "python").symlink_to(os.path.realpath(sys.executable))
    monkeypatch.chdir(tmp_path)
    with PodLoader("localpython", pods_dir=pods_dir) as pod:
        assert pod.importable("bson")
