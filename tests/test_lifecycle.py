"""Pod processes start, stop and never outlive their client. Faults are inflicted for real."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pypods import PodLoader

from .conftest import pid_alive, wait_until, write_pod


def client_script(pods_dir, body: str) -> list[str]:
    """A client program that loads the toolbox pod, then runs ``body``."""
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from pypods import PodLoader
        pod = PodLoader("toolbox", pods_dir={str(pods_dir)!r}).load_pod()
        print(pod.pid, flush=True)
        """
    ) + textwrap.dedent(body)
    return [sys.executable, "-c", code]


def start_client(pods_dir, body: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        client_script(pods_dir, body), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc, int(proc.stdout.readline())


def test_unload_stops_the_process(toolbox):
    pid = toolbox.pid
    toolbox.unload_pod()
    assert not pid_alive(pid)


def test_unload_also_stops_children_the_pod_started(toolbox):
    child = toolbox.spawn_sleeper(60)
    assert pid_alive(child)
    toolbox.unload_pod()
    assert wait_until(lambda: not pid_alive(child), timeout=5)


def test_pod_exits_when_its_idle_client_is_killed(_toolbox_built):
    client, pod_pid = start_client(_toolbox_built, "time.sleep(60)\n")
    client.kill()
    client.wait()
    assert wait_until(lambda: not pid_alive(pod_pid), timeout=5)


def test_pod_exits_when_its_client_is_killed_during_a_long_call(_toolbox_built):
    client, pod_pid = start_client(_toolbox_built, "pod.sleep(60)\n")
    time.sleep(0.5)  # the pod is now busy in sleep(60) and not reading its stdin
    client.kill()
    client.wait()
    assert wait_until(lambda: not pid_alive(pod_pid), timeout=5)


def test_interpreter_exit_without_unload_is_clean(_toolbox_built):
    client, pod_pid = start_client(_toolbox_built, "print(pod.add(1, 2))\n")
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0
    assert out.strip() == "3"
    assert err == ""  # no traceback noise
    assert wait_until(lambda: not pid_alive(pod_pid), timeout=5)


def test_ctrl_c_in_a_terminal_does_not_reach_the_pod(toolbox):
    # The pod runs in its own session: a terminal's SIGINT to the client's process
    # group is not delivered to it.
    assert os.getpgid(toolbox.pid) != os.getpgid(0)
    assert toolbox.add(1, 1) == 2


def test_keyboard_interrupt_while_waiting_stops_the_call_and_the_loader_recovers(_toolbox_built):
    body = """
    import signal, threading
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        pod.sleep(30)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    print(pod.add(2, 3), flush=True)
    """
    client, _ = start_client(_toolbox_built, body)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    assert out.split() == ["interrupted", "5"]


def _child_uses_pod(pods_dir, queue):
    pod = PodLoader("toolbox", pods_dir=pods_dir).load_pod()
    queue.put((pod.add(20, 22), pod.get_pid()))
    pod.unload_pod()


FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"


@pytest.mark.filterwarnings(FORK_WARNING)  # Python 3.12+: the client has pod threads
def test_a_forked_child_never_uses_the_parents_pod(toolbox, _toolbox_built):
    parent_pod = toolbox.get_pid()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        status = 0
        try:
            os.close(read_fd)
            # The inherited loader starts a pod of its own instead of writing on the
            # parent's pipes.
            answer = f"{toolbox.add(1, 2)} {toolbox.get_pid()}"
            os.write(write_fd, answer.encode())
            toolbox.unload_pod()
        except BaseException:
            status = 1
        os._exit(status)
    os.close(write_fd)
    _, status = os.waitpid(child, 0)
    answer = os.read(read_fd, 100).decode().split()
    os.close(read_fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer[0] == "3" and int(answer[1]) != parent_pod
    assert toolbox.add(1, 1) == 2 and toolbox.get_pid() == parent_pod


@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.skipif(sys.platform != "linux", reason="the fork start method is Linux's default")
def test_multiprocessing_fork_children_work_and_the_parent_stays_sound(toolbox, _toolbox_built):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(target=_child_uses_pod, args=(_toolbox_built, queue)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert [r[0] for r in results] == [42, 42]
    assert toolbox.add(2, 2) == 4


def test_a_pod_outlives_a_forked_child_only_while_its_client_lives(_toolbox_built):
    body = """
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    time.sleep(60)
    """
    client, pod_pid = start_client(_toolbox_built, body)
    forked = int(client.stdout.readline())
    try:
        client.kill()
        client.wait()
        assert wait_until(lambda: not pid_alive(pod_pid), timeout=5)
    finally:
        os.kill(forked, signal.SIGKILL)


def test_a_dropped_loader_stops_its_pod(_toolbox_built):
    import gc

    loader = PodLoader("toolbox", pods_dir=_toolbox_built).load_pod()
    pid = loader.pid
    del loader
    gc.collect()
    assert wait_until(lambda: not pid_alive(pid), timeout=10)


def test_unload_during_a_call_in_another_thread(toolbox):
    import threading

    from pypods import PodCrashedError

    errors = []

    def call():
        try:
            toolbox.sleep(30)
        except PodCrashedError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)
    toolbox.unload_pod()
    caller.join(10)
    assert not caller.is_alive()
    assert len(errors) == 1 and "unloaded during the call" in str(errors[0])


def test_children_of_a_crashed_pod_do_not_outlive_it(toolbox):
    from pypods import PodCrashedError

    child = toolbox.spawn_sleeper(60)
    with pytest.raises(PodCrashedError):
        toolbox.exit_process(1)
    assert wait_until(lambda: not pid_alive(child), timeout=5)


def test_a_pod_with_a_forgotten_thread_still_shuts_down_cleanly(pods_dir):
    from .conftest import write_pod

    marker = pods_dir / "atexit.log"
    write_pod(
        pods_dir,
        "threaded",
        f"""
        import atexit, threading, time

        threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon
        atexit.register(lambda: open({str(marker)!r}, "w").write("ran"))

        def ping():
            return "pong"
        """,
    )
    loader = PodLoader("threaded", pods_dir=pods_dir).load_pod()
    pid = loader.pid
    assert loader.ping() == "pong"
    loader.unload_pod()
    assert marker.read_text() == "ran"
    assert not pid_alive(pid)


def test_sys_exit_with_a_forgotten_thread_ends_the_pod(pods_dir):
    from pypods import PodCrashedError

    from .conftest import write_pod

    write_pod(
        pods_dir,
        "exiting",
        """
        import sys, threading, time

        threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon

        def leave(code):
            sys.exit(code)
        """,
    )
    # Were the pod to wait for its thread, the call would time out instead.
    with PodLoader("exiting", pods_dir=pods_dir, timeout=30) as pod:
        with pytest.raises(PodCrashedError, match="exit code 5"):
            pod.leave(5)
        with pytest.raises(PodCrashedError, match=r"(?s)exit code 1.*goodbye"):
            pod.leave("goodbye")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count descriptors")
def test_unloading_a_busy_pod_that_ignores_sigterm_leaks_nothing(pods_dir):
    import threading

    from .conftest import write_pod

    write_pod(
        pods_dir,
        "stubborn",
        """
        import signal, time

        signal.signal(signal.SIGTERM, signal.SIG_IGN)

        def busy(seconds):
            time.sleep(seconds)
            return seconds
        """,
    )
    PodLoader("stubborn", pods_dir=pods_dir).load_pod().unload_pod()  # build once
    time.sleep(0.2)
    before = open_fds()
    for _ in range(3):
        loader = PodLoader("stubborn", pods_dir=pods_dir).load_pod()
        pid = loader.pid
        caller = threading.Thread(target=_swallow, args=(loader.busy, 30))
        caller.start()
        time.sleep(0.3)
        loader.unload_pod()
        caller.join(10)
        assert not caller.is_alive()
        assert wait_until(lambda pid=pid: not pid_alive(pid), timeout=5)
    assert wait_until(lambda: open_fds() <= before, timeout=5), (open_fds(), before)


def _swallow(function, *args):
    try:
        function(*args)
    except Exception:
        pass


def test_children_of_a_pod_do_not_outlive_a_killed_client(_toolbox_built):
    client, _ = start_client(
        _toolbox_built, "print(pod.spawn_sleeper(600), flush=True)\ntime.sleep(60)\n"
    )
    child = int(client.stdout.readline())
    assert pid_alive(child)
    client.kill()
    client.wait()
    assert wait_until(lambda: not pid_alive(child), timeout=5)


@pytest.mark.parametrize("ending", ["return", "sys.exit(0)", "raise RuntimeError('boom')"])
def test_exit_with_a_call_running_in_a_daemon_thread_is_quiet(_toolbox_built, ending):
    body = f"""
    import threading
    other = PodLoader("toolbox", pods_dir=pod.pods_dir).load_pod()
    print(other.pid, flush=True)
    threading.Thread(target=pod.sleep, args=(60,), daemon=True).start()
    time.sleep(0.5)
    def main():
        {ending}
    main()
    """
    client = subprocess.Popen(client_script(_toolbox_built, body), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    out, err = client.communicate(timeout=60)
    pids = [int(line) for line in out.split()]
    assert all(wait_until(lambda p=p: not pid_alive(p), timeout=5) for p in pids)
    noise = [line for line in err.splitlines() if "PodCrashedError" in line or "pypods" in line]
    assert noise == []
    if "RuntimeError" in ending:
        assert "RuntimeError: boom" in err and client.returncode == 1
    else:
        assert err == "" and client.returncode == 0


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count descriptors")
def test_load_unload_crash_and_timeout_cycles_leak_nothing(_toolbox_built):
    import threading

    from pypods import PodCrashedError, PodTimeoutError

    PodLoader("toolbox", pods_dir=_toolbox_built).load_pod().unload_pod()
    time.sleep(0.3)
    fds, threads = open_fds(), threading.active_count()
    pids = []
    for _ in range(8):
        loader = PodLoader("toolbox", pods_dir=_toolbox_built, timeout=5).load_pod()
        pids.append(loader.pid)
        assert loader.add(1, 2) == 3
        with pytest.raises(PodCrashedError):
            loader.exit_process(1)
        pids.append(loader.get_pid())
        loader.timeout = 0.2
        with pytest.raises(PodTimeoutError):
            loader.sleep(5)
        loader.timeout = 5
        pids.append(loader.get_pid())
        loader.load_pod()  # reload
        pids.append(loader.pid)
        loader.unload_pod()
    assert wait_until(lambda: open_fds() <= fds and threading.active_count() <= threads, 10), (
        open_fds(), fds, threading.active_count(), threads)  # fmt: skip
    assert not any(pid_alive(pid) for pid in pids)


def test_a_fork_while_a_pod_starts_never_keeps_its_pipes_open(pods_dir):
    """Another thread forks while a pod's pipes are being made: the child must not
    hold the pod's request pipe, or at exit the pod would never see end-of-file (it
    would be killed, its atexit handlers skipped) while the child lives."""
    folder = write_pod(
        pods_dir,
        "marked",
        """
        import atexit, os

        MARKER = os.path.join(os.path.dirname(__file__), "exited")
        atexit.register(lambda: open(MARKER, "w").close())

        def ping():
            return "pong"
        """,
    )
    code = f"""
    import os, threading, time
    import pypods.client
    from pypods import PodLoader

    forked = []
    made = pypods.client._Pipes.__init__

    def fork_meanwhile():
        child = os.fork()
        if child == 0:
            quiet = os.open(os.devnull, os.O_RDWR)
            os.dup2(quiet, 1)  # let go of the client's output, which the test reads
            os.dup2(quiet, 2)
            time.sleep(30)
            os._exit(0)
        forked.append(child)

    def making_pipes(self):
        made(self)
        threading.Thread(target=fork_meanwhile).start()
        deadline = time.monotonic() + 1  # the fork happens now, unless it must wait
        while not forked and time.monotonic() < deadline:
            time.sleep(0.01)

    pypods.client._Pipes.__init__ = making_pipes
    pod = PodLoader("marked", pods_dir={str(pods_dir)!r}).load_pod()
    pypods.client._Pipes.__init__ = made
    while not forked:
        time.sleep(0.01)
    print(forked[0], pod.ping(), flush=True)
    """
    client = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert client.returncode == 0, client.stderr
    child, answer = client.stdout.split()
    try:
        assert answer == "pong"
        assert wait_until(lambda: (folder / "exited").exists(), timeout=10), "not a clean exit"
    finally:
        os.kill(int(child), signal.SIGKILL)


def test_a_start_interrupted_after_the_process_began_leaves_no_pod(_toolbox_built):
    """Ctrl-C lands while the client sets up a pod process it has just started: the
    pod must not live on (it sees end-of-file and exits)."""
    code = f"""
    import time
    import pypods.client
    from pypods import PodLoader

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    pypods.client.OutputPump = interrupted
    try:
        PodLoader("toolbox", pods_dir={str(_toolbox_built)!r}).load_pod()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    time.sleep(30)
    """
    client = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout.readline().strip() == "interrupted"
        assert wait_until(lambda: not children_of(client.pid), timeout=10), children_of(client.pid)
    finally:
        client.kill()
        client.wait()


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (Linux)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def test_a_start_interrupted_late_leaves_no_thread_on_other_descriptors(_toolbox_built):
    """Interrupted after the output pump took the pod's output pipes: those must stay
    the pump's until it is done, or the program's next pipes would get their numbers
    and the pump would read (and close) them."""
    code = f"""
    import os, threading, time
    import pypods.client
    from pypods import PodLoader

    enlarge = pypods.client._enlarge_pipe

    def interrupted(fd):
        raise KeyboardInterrupt

    pypods.client._enlarge_pipe = interrupted
    try:
        PodLoader("toolbox", pods_dir={str(_toolbox_built)!r}).load_pod()
    except KeyboardInterrupt:
        pass
    pypods.client._enlarge_pipe = enlarge
    mine = [os.pipe() for _ in range(4)]
    for read_end, write_end in mine:
        os.write(write_end, b"mine")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        t.name.startswith("pypods-output") for t in threading.enumerate()
    ):
        time.sleep(0.05)  # the pod saw end-of-file and exited: its pump is done

    def still_mine(fd):
        os.set_blocking(fd, False)
        try:
            return os.read(fd, 100) == b"mine"
        except OSError:  # taken (nothing left to read) or closed by someone else
            return False

    print([still_mine(read_end) for read_end, _ in mine])
    """
    client = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert client.returncode == 0, client.stderr
    assert client.stdout.strip() == "[True, True, True, True]", client.stdout
