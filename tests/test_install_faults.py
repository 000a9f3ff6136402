"""Builds that go wrong for real: killed installers, full disks, unreachable indexes.

Every fault here is inflicted on a real installer (pip or uv) building a real venv:
a SIGKILL, a file system that is full, a file size limit, an index on a closed port.
Each test checks that the error is a clear PodInstallError, that nothing half-built
is ever taken as ready, and that the next load_pod() works once the cause is gone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from pypods import PodInstallError, PodLoader

from .conftest import pid_alive, wait_until, write_pod
from .packages import Gate, write_local_package

REPO = Path(__file__).resolve().parent.parent
INSTALLERS = ["uv", "pip"]

VERSION_POD = """
import importlib

def version(module):
    return importlib.import_module(module).__version__
"""


def installer_config(installer: str) -> str:
    return f'[install]\ninstaller = "{installer}"\n'


def stamp_exists(pods_dir: Path, name: str) -> bool:
    return (pods_dir / name / "venv" / "pypods.json").exists()


def client_script(pods_dir: Path, name: str) -> str:
    """A client program that loads the pod and prints the outcome as JSON."""
    return textwrap.dedent(
        f"""
        import json
        from pypods import PodInstallError, PodLoader
        try:
            with PodLoader({name!r}, pods_dir={str(pods_dir)!r}) as pod:
                print(json.dumps({{"six": pod.version("six")}}))
        except PodInstallError as exc:
            print(json.dumps({{"error": str(exc)}}))
        """
    )


def client_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


# -- /proc: finding the installer -------------------------------------------------------


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def installer_under(root: int) -> int | None:
    """The pid of the ``pip install`` / ``uv pip install`` running below ``root``."""
    children = _children()
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        argv = _cmdline(pid)
        if argv[1:3] == ["pip", "install"] or argv[1:4] == ["-m", "pip", "install"]:
            return pid
        pending += children.get(pid, [])
    return None


if not os.path.isdir("/proc/self"):  # pragma: no cover - macOS
    pytest.skip("these tests find installer processes through /proc", allow_module_level=True)


# -- killed installs --------------------------------------------------------------------


def gated_pod(pods_dir: Path, tmp_path: Path, name: str, installer: str) -> Gate:
    """A pod whose build waits at a gate in the middle of the installer's run."""
    gate = Gate(tmp_path / "gate")
    folder = write_pod(
        pods_dir,
        name,
        VERSION_POD,
        requirements="six==1.16.0\n./slowpkg\n",
        config=installer_config(installer),
    )
    write_local_package(folder / "slowpkg", "slowpkg", gate=gate)
    return gate


@pytest.mark.parametrize("installer", INSTALLERS)
def test_a_build_killed_with_its_client_is_never_taken_as_ready(
    pods_dir, tmp_path, installer, capfd
):
    gate = gated_pod(pods_dir, tmp_path, "killed", installer)
    log = (tmp_path / "client.log").open("w")
    client = subprocess.Popen(
        [sys.executable, "-c", client_script(pods_dir, "killed")],
        stdout=log, stderr=log, env=client_env(), start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_until(gate.started, timeout=120), (tmp_path / "client.log").read_text()
        installer_pid = installer_under(client.pid)
        assert installer_pid is not None  # the kill lands while the installer runs
        os.killpg(client.pid, signal.SIGKILL)  # the client, the installer, the backend
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait()
        log.close()
    assert wait_until(lambda: not pid_alive(installer_pid) and gate.builder_gone())
    venv = pods_dir / "killed" / "venv"
    assert (venv / "pyvenv.cfg").exists()  # half-built...
    assert not stamp_exists(pods_dir, "killed")  # ...and not marked ready

    gate.open()
    capfd.readouterr()
    with PodLoader("killed", pods_dir=pods_dir) as pod:
        assert pod.version("slowpkg") == "1.0"
        assert pod.version("six") == "1.16.0"
    assert "no PyPods stamp" in capfd.readouterr().err  # rebuilt, not trusted


@pytest.mark.parametrize("installer", INSTALLERS)
def test_an_installer_killed_under_a_living_client_is_a_clear_install_error(
    pods_dir, tmp_path, installer
):
    gate = gated_pod(pods_dir, tmp_path, "shot", installer)
    outcome: dict[str, BaseException] = {}

    def load() -> None:
        try:
            PodLoader("shot", pods_dir=pods_dir).load_pod().unload_pod()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=load)
    thread.start()
    try:
        assert wait_until(gate.started, timeout=120)
        installer_pid = installer_under(os.getpid())
        assert installer_pid is not None
        os.kill(installer_pid, signal.SIGKILL)
    finally:
        thread.join(timeout=60)
        if thread.is_alive():  # pragma: no cover - let the build finish, then fail
            gate.open()
            thread.join()
    error = outcome.get("error")
    assert isinstance(error, PodInstallError), error
    text = str(error)
    assert f"building its venv with {installer} failed" in text
    assert f"{installer} was killed by SIGKILL" in text
    assert "the installer was stopped before it finished" in text
    assert not stamp_exists(pods_dir, "shot")
    assert wait_until(gate.builder_gone)  # the orphaned build backend did not linger

    gate.open()
    with PodLoader("shot", pods_dir=pods_dir) as pod:
        assert pod.version("slowpkg") == "1.0"


# -- a full disk --------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (root only): a real file system that fills up; remount to grow it."""
    mount_point = tmp_path / "tiny disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()})")
    yield mount_point
    subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


@pytest.mark.parametrize("installer", INSTALLERS)
def test_a_full_disk_is_a_clear_install_error_and_more_space_fixes_it(tiny_disk, installer):
    pods_dir = tiny_disk / "pods"
    write_pod(
        pods_dir, "cramped", VERSION_POD, requirements="six==1.16.0\n",
        config=installer_config(installer),
    )  # fmt: skip
    with pytest.raises(PodInstallError) as info:
        PodLoader("cramped", pods_dir=pods_dir).load_pod()
    text = str(info.value)
    assert "the disk is full (No space left on device)" in text
    assert "Free some space" in text and "load_pod() again" in text
    assert not stamp_exists(pods_dir, "cramped")

    subprocess.run(["mount", "-o", "remount,size=300m", str(tiny_disk)], check=True)
    with PodLoader("cramped", pods_dir=pods_dir) as pod:
        assert pod.version("six") == "1.16.0"


def _limit_file_size(limit: int):
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as Python itself does
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("installer", INSTALLERS)
def test_a_file_size_limit_is_a_clear_install_error_and_lifting_it_fixes_it(
    pods_dir, tmp_path, installer
):
    write_pod(
        pods_dir, "limited", VERSION_POD, requirements="six==1.16.0\n",
        config=installer_config(installer),
    )  # fmt: skip
    # virtualenv's seed cache must not be written to under the limit.
    env = {**client_env(), "VIRTUALENV_OVERRIDE_APP_DATA": str(tmp_path / "app-data")}
    result = subprocess.run(
        [sys.executable, "-c", client_script(pods_dir, "limited")],
        capture_output=True, text=True, env=env, timeout=300,
        preexec_fn=_limit_file_size(64 * 1024),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert "error" in outcome, outcome
    assert "file size limit" in outcome["error"] and "ulimit -f" in outcome["error"]
    assert not stamp_exists(pods_dir, "limited")

    with PodLoader("limited", pods_dir=pods_dir) as pod:  # no limit here
        assert pod.version("six") == "1.16.0"


# -- an index nobody answers ----------------------------------------------------------


@pytest.fixture
def closed_port():
    """A local TCP port that refuses connections: bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("installer", INSTALLERS)
def test_an_unreachable_index_is_a_clear_install_error(
    pods_dir, closed_port, monkeypatch, installer
):
    for name in list(os.environ):
        if name.startswith(("PIP_", "UV_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("UV_NO_CONFIG", "1")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{closed_port}/simple")
    monkeypatch.setenv("PIP_RETRIES", "1")  # pip's setting, which uv is given too
    write_pod(
        pods_dir, "cutoff", VERSION_POD, requirements="six==1.16.0\n",
        config=installer_config(installer),
    )  # fmt: skip
    with pytest.raises(PodInstallError) as info:
        PodLoader("cutoff", pods_dir=pods_dir).load_pod()
    error = info.value
    text = str(error)
    assert f"the package index could not be reached at http://127.0.0.1:{closed_port}/" in text
    assert "(Connection refused)" in text
    assert "Check the network" in text and "PIP_INDEX_URL" in text
    if installer == "uv":
        assert "after 1 retry" in error.output
    else:
        assert "Retrying (Retry(total=0" in error.output
        assert "Retrying (Retry(total=1" not in error.output
    assert not stamp_exists(pods_dir, "cutoff")

    monkeypatch.undo()  # the machine's own configuration again
    with PodLoader("cutoff", pods_dir=pods_dir) as pod:
        assert pod.version("six") == "1.16.0"
