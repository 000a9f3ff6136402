"""Faults inflicted for real: Ctrl-C with a cancel and a grace period, a pod over its
memory limit, and a pod that writes forged replies onto the protocol pipe."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pypods import PodCrashedError, PodLoader, PodProtocolError, PodStartError, RemoteError
from pypods.runtime.codec import TAG

from .conftest import pid_alive, wait_until, write_pod

FAULTY_POD = """
import gc, os, time
import bson

hoard = []


def get_pid():
    return os.getpid()


def calls():
    global _calls
    _calls = globals().get("_calls", 0) + 1
    return _calls


def sleep(seconds):
    time.sleep(seconds)
    return "slept"


def sleep_ignoring_interrupts(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass
    return "done"


def grow(step_mb, pause, steps):
    chunks = []
    for _ in range(steps):
        chunks.append(bytearray(step_mb << 20))  # zero-filled: really resident
        time.sleep(pause)
    return len(chunks)


def grow_at_once(mb):
    return len(bytearray(mb << 20))  # one native call: no Python code runs meanwhile


def grow_and_hold(step_mb, steps):
    chunks = []
    try:
        for _ in range(steps):
            chunks.append(bytearray(step_mb << 20))
            time.sleep(0.005)
    except MemoryError:
        hoard.extend(chunks)  # caught, and the memory kept
        time.sleep(60)
    return "kept"


def grow_in_background(mb):
    import threading

    def run():
        for _ in range(mb):
            hoard.append(bytearray(1 << 20))
            time.sleep(0.005)

    threading.Thread(target=run, daemon=True).start()


def exit_on_interrupt(seconds):
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        os._exit(3)


def strings(n):
    return [str(i) for i in range(n)]  # one large document, slow to decode


def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def forge(document=None, raw=None):
    '''Write a forged frame onto the protocol pipe, then return normally.'''
    from _pypods_runtime.server import PodServer

    server = next(o for o in gc.get_objects() if isinstance(o, PodServer))
    os.write(server._write_fd, raw if raw is not None else bson.encode(document))
    return "forged"
"""


@pytest.fixture(scope="module")
def faulty_dir(tmp_path_factory) -> Path:
    pods_dir = tmp_path_factory.mktemp("faults") / "pods"
    write_pod(pods_dir, "faulty", FAULTY_POD)
    PodLoader("faulty", pods_dir=pods_dir).load_pod().unload_pod()
    return pods_dir


def run_client(pods_dir: Path, body: str, **options) -> str:
    """Run ``body`` in a client process that loaded the faulty pod as ``pod``; its stdout."""
    code = textwrap.dedent(
        f"""
        import os, signal, sys, threading, time
        from pypods import PodLoader
        pod = PodLoader("faulty", pods_dir={str(pods_dir)!r}, **{options!r}).load_pod()
        def ctrl_c(after):
            threading.Timer(after, os.kill, (os.getpid(), signal.SIGINT)).start()
        """
    ) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- Ctrl-C -------------------------------------------------------------------------------


def test_ctrl_c_cancels_the_call_and_the_pod_lives_on(faulty_dir):
    out = run_client(
        faulty_dir,
        """
        first_pid, first = pod.get_pid(), pod.calls()
        ctrl_c(0.5)
        try:
            pod.sleep(60)
        except KeyboardInterrupt:
            print("interrupted")
        print(pod.get_pid() == first_pid, pod.calls() == first + 1)
        """,
    )
    assert out.split() == ["interrupted", "True", "True"]  # same process, state kept


def test_a_call_that_ignores_the_cancel_gets_its_pod_restarted_after_the_grace(faulty_dir):
    out = run_client(
        faulty_dir,
        """
        first_pid = pod.get_pid()
        ctrl_c(0.5)
        try:
            pod.sleep_ignoring_interrupts(60)
        except KeyboardInterrupt:
            print("interrupted")
        print(pod.get_pid() != first_pid, pod.calls())
        print(first_pid)
        """,
        cancel_grace=0.5,
    )
    interrupted, restarted, calls, old_pid = out.split()
    assert (interrupted, restarted, calls) == ("interrupted", "True", "1")  # a fresh pod
    assert wait_until(lambda: not pid_alive(int(old_pid)), timeout=10)


def test_ctrl_c_reaches_the_caller_before_the_grace_is_over(faulty_dir):
    """The caller is not kept waiting for the grace period: KeyboardInterrupt comes
    first, the pod is dealt with in the background."""
    out = run_client(
        faulty_dir,
        """
        pid = pod.get_pid()
        ctrl_c(0.5)
        try:
            pod.sleep_ignoring_interrupts(60)
        except KeyboardInterrupt:
            print("interrupted", os.path.exists(f"/proc/{pid}"))  # grace not over yet
        """,
        cancel_grace=30,
    )
    assert out.split() == ["interrupted", "True"]


def test_ctrl_c_before_the_pod_starts_the_call_still_cancels_it(faulty_dir):
    """The cancel reaches a pod that has not read the request yet (it is stopped):
    the call is cancelled as soon as the pod gets to it, and the pod lives on."""
    out = run_client(
        faulty_dir,
        """
        first_pid, first = pod.get_pid(), pod.calls()
        os.kill(first_pid, signal.SIGSTOP)
        threading.Timer(1.0, os.kill, (first_pid, signal.SIGCONT)).start()
        ctrl_c(0.5)
        try:
            pod.sleep(60)
        except KeyboardInterrupt:
            print("interrupted")
        print(pod.get_pid() == first_pid, pod.calls() == first + 1)  # no grace, no restart
        """,
    )
    assert out.split() == ["interrupted", "True", "True"]


def test_ctrl_c_after_the_reply_is_in_is_no_cancel(faulty_dir):
    """Ctrl-C while the reply's document is decoded: the pod has answered and waits
    for the next call; it must neither be sent a cancel nor be stopped."""
    out = run_client(
        faulty_dir,
        """
        import pypods.client
        first_pid, first = pod.get_pid(), pod.calls()
        unpack = pypods.client.messages.unpack

        def interrupted_unpack(frame):
            if len(frame) > 1 << 20:  # the large reply: Ctrl-C lands as it is decoded
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            return unpack(frame)

        pypods.client.messages.unpack = interrupted_unpack
        try:
            pod.strings(300_000)
        except KeyboardInterrupt:
            print("interrupted")
        pypods.client.messages.unpack = unpack
        print(pod.get_pid() == first_pid, pod.calls() == first + 1)
        """,
    )
    assert out.split() == ["interrupted", "True", "True"]


def test_a_cancel_that_comes_after_the_call_ended_does_not_cancel_the_next(faulty_dir):
    """Ctrl-C after the pod replied but before the reply is read: the pod gets a
    SIGINT with no call running; it must not cancel the call that comes next."""
    out = run_client(
        faulty_dir,
        """
        import pypods.client
        first_pid, first = pod.get_pid(), pod.calls()
        receive = pypods.client.PodProcess._receive

        def late_receive(self, *args, **kwargs):
            if not hasattr(late_receive, "done"):
                late_receive.done = True
                time.sleep(0.5)  # the pod replies and waits for the next call
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            return receive(self, *args, **kwargs)

        pypods.client.PodProcess._receive = late_receive
        try:
            pod.calls()
        except KeyboardInterrupt:
            print("interrupted")
        pypods.client.PodProcess._receive = receive
        print(pod.calls() == first + 2, pod.get_pid() == first_pid)
        """,
    )
    assert out.split() == ["interrupted", "True", "True"]


def test_ctrl_c_just_as_the_reply_is_taken_keeps_the_pod_in_step(faulty_dir):
    """Ctrl-C lands after the reply left the pipe, before the client saw it begin:
    the cancel goes to an idle pod, and the forget_cancel behind it brings the
    conversation back in step without waiting out the grace or restarting the pod."""
    out = run_client(
        faulty_dir,
        """
        from pypods.runtime import framing
        first_pid, first = pod.get_pid(), pod.calls()
        take = framing.FrameReader.take

        def interrupted_take(self, data):
            frame = take(self, data)
            if frame is not None and interrupted_take.armed:
                interrupted_take.armed = False
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            return frame

        interrupted_take.armed = True
        framing.FrameReader.take = interrupted_take
        try:
            pod.calls()
        except KeyboardInterrupt:
            print("interrupted")
        framing.FrameReader.take = take
        print(pod.get_pid() == first_pid, pod.calls() == first + 2)
        """,
        cancel_grace=30,
    )
    assert out.split() == ["interrupted", "True", "True"]


def test_a_cancel_while_the_last_one_is_settling_is_not_lost(faulty_dir):
    """The pod is slow to get to the forget_cancel of a first cancelled call; a second
    call, interrupted meanwhile, is still cancelled (its pod neither restarted nor
    left running it)."""
    out = run_client(
        faulty_dir,
        """
        import pypods.client
        first_pid, first = pod.get_pid(), pod.calls()
        send = pypods.client.PodProcess._send

        def slow_to_forget(self, parts, *args):
            if b"forget_cancel" in bytes(parts[0]) and not hasattr(slow_to_forget, "done"):
                slow_to_forget.done = True
                os.kill(self.pid, signal.SIGSTOP)  # the pod, descheduled for a while
                threading.Timer(0.8, os.kill, (self.pid, signal.SIGCONT)).start()
            return send(self, parts, *args)

        pypods.client.PodProcess._send = slow_to_forget
        for call in "AB":
            ctrl_c(0.3)
            try:
                pod.sleep(30)
            except KeyboardInterrupt:
                print(call, "interrupted")
        print(pod.get_pid() == first_pid, pod.calls() == first + 1)
        """,
        cancel_grace=5,
    )
    assert out.split() == ["A", "interrupted", "B", "interrupted", "True", "True"]


def test_a_call_behind_a_stubborn_cancelled_one_keeps_to_its_timeout(faulty_dir):
    out = run_client(
        faulty_dir,
        """
        from pypods import PodTimeoutError
        ctrl_c(0.3)
        try:
            pod.sleep_ignoring_interrupts(60)
        except KeyboardInterrupt:
            print("interrupted")
        pod.timeout = 0.5  # shorter than the grace the cancelled call has left
        try:
            pod.calls()
        except PodTimeoutError as error:
            print("not started" in str(error), "cancelled call" in str(error))
        pod.timeout = None
        print(pod.calls())  # the grace ran out: a fresh pod
        """,
        cancel_grace=3,
    )
    assert out.split() == ["interrupted", "True", "True", "1"]


def test_a_pod_that_dies_of_its_cancel_is_reported_by_the_next_call(faulty_dir):
    out = run_client(
        faulty_dir,
        """
        from pypods import PodCrashedError
        pod.calls()
        ctrl_c(1.0)  # well after the function has started (before, it would not run)
        try:
            pod.exit_on_interrupt(60)
        except KeyboardInterrupt:
            print("interrupted")
        time.sleep(1)
        try:
            pod.calls()
        except PodCrashedError as error:
            print("crashed", "exit code 3" in str(error))
        print(pod.calls())
        """,
    )
    assert out.split() == ["interrupted", "crashed", "True", "1"]


def test_a_second_ctrl_c_before_the_cancel_is_sent_stops_the_pod(faulty_dir):
    """The second Ctrl-C lands while the client decides to cancel: the pod is left
    running the call with nobody to read its reply; the next call must not read
    that reply as its own, nor wait for it."""
    out = run_client(
        faulty_dir,
        """
        import pypods.client
        first_pid = pod.get_pid()
        can_cancel = pypods.client.PodProcess._can_cancel

        def second_ctrl_c(self):
            raise KeyboardInterrupt

        pypods.client.PodProcess._can_cancel = second_ctrl_c
        ctrl_c(0.3)
        try:
            pod.sleep(60)
        except KeyboardInterrupt:
            print("interrupted")
        pypods.client.PodProcess._can_cancel = can_cancel
        pod.timeout = 20
        print(pod.get_pid() != first_pid, pod.calls())
        """,
    )
    assert out.split() == ["interrupted", "True", "1"]


@pytest.mark.parametrize("grace", [-1, float("nan"), "1", True])
def test_cancel_grace_is_checked(grace):
    with pytest.raises(ValueError, match="cancel_grace"):
        PodLoader("faulty", cancel_grace=grace)


# -- memory ------------------------------------------------------------------------------

LIMIT = 200 << 20


@pytest.fixture
def limited(faulty_dir):
    loader = PodLoader("faulty", pods_dir=faulty_dir, max_memory=LIMIT).load_pod()
    yield loader
    loader.unload_pod()


def test_a_pod_over_its_memory_limit_gets_a_memory_error_and_lives_on(limited):
    pid = limited.get_pid()
    with pytest.raises(RemoteError, match="memory limit") as info:
        limited.grow(4, 0.01, 1000)  # 4 GB if nothing stopped it
    assert isinstance(info.value, MemoryError)
    assert limited.get_pid() == pid  # the same pod: the memory was let go
    assert limited.resident() < LIMIT


def test_a_pod_growing_inside_native_code_is_killed(limited):
    pid = limited.get_pid()
    with pytest.raises(PodCrashedError, match="memory limit") as info:
        limited.grow_at_once(2000)
    assert "max_memory" in str(info.value)
    assert wait_until(lambda: not pid_alive(pid), timeout=10)
    assert limited.get_pid() != pid  # the next call starts afresh


def test_a_pod_that_catches_the_memory_error_and_holds_on_is_killed(limited):
    with pytest.raises(PodCrashedError, match="memory limit"):
        limited.grow_and_hold(4, 1000)
    assert limited.calls() == 1


def test_memory_grown_between_calls_is_reported_by_the_next_call(limited):
    pid = limited.get_pid()
    limited.grow_in_background(1000)
    assert wait_until(lambda: not pid_alive(pid), timeout=30)
    with pytest.raises(PodCrashedError, match="memory limit"):
        limited.get_pid()
    assert limited.get_pid() != pid


def test_a_pod_within_its_limit_is_left_alone(limited):
    assert limited.grow(4, 0.0, 10) == 10  # 40 MB, well within 200 MB
    assert limited.calls() == 1


def test_a_pod_over_its_memory_limit_while_starting_says_so(pods_dir):
    write_pod(pods_dir, "hungry", "import time\nhoard = bytearray(400 << 20)\ntime.sleep(30)\n")
    with pytest.raises(PodStartError) as info:
        PodLoader("hungry", pods_dir=pods_dir, max_memory=LIMIT).load_pod()
    assert "died while starting (it went over its memory limit" in str(info.value)
    assert "max_memory=200.0 MiB" in str(info.value)


@pytest.mark.parametrize(("limit", "error"), [(10, ValueError), ("1G", TypeError)])
def test_max_memory_is_checked(limit, error):
    with pytest.raises(error, match="max_memory"):
        PodLoader("faulty", max_memory=limit)


# -- forged replies ----------------------------------------------------------------------

FORGERIES = {
    "an id never asked": {"document": {"id": 999_999, "status": "done", "value": 1}},
    "an unknown status": {"document": {"id": 999_999, "status": "maybe"}},
    "not BSON": {"raw": b"\x10\x00\x00\x00garbage garbage"},
    "a huge length prefix": {"raw": b"\xff\xff\xff\x7f\x00"},
    "a length below the minimum": {"raw": b"\x01\x00\x00\x00\x00"},
}


@pytest.mark.parametrize("forgery", FORGERIES.values(), ids=list(FORGERIES))
def test_a_forged_reply_is_a_protocol_error_and_the_pod_is_restarted(faulty_dir, forgery):
    loader = PodLoader("faulty", pods_dir=faulty_dir, max_message_size=1 << 20).load_pod()
    try:
        pid = loader.get_pid()
        with pytest.raises(PodProtocolError, match="broke the protocol"):
            loader.forge(**forgery)
        assert wait_until(lambda: not pid_alive(pid), timeout=10)
        assert loader.calls() == 1 and loader.get_pid() != pid
    finally:
        loader.unload_pod()


def test_a_reply_with_the_right_id_and_an_unknown_status_is_refused(faulty_dir):
    with PodLoader("faulty", pods_dir=faulty_dir) as loader:
        next_id = 3  # describe was 1, pid() is 2: the forged reply answers forge() itself
        assert loader.get_pid()
        with pytest.raises(PodProtocolError, match="unknown status"):
            loader.forge(document={"id": next_id, "status": "maybe"})
        assert loader.calls() == 1


def test_a_pickle_is_never_unpickled_unless_the_loader_opted_in(faulty_dir, tmp_path):
    """A reply carrying a pickle whose loading would run code (here: create a file)
    is refused by a client that did not opt into pickle, and the code never runs."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(str(marker)))
    with PodLoader("faulty", pods_dir=faulty_dir) as loader:
        assert loader.calls() == 1  # requests 1 (describe) and 2: forge() is request 3
        forged = {"id": 3, "status": "done", "value": {TAG: "pickle", "v": payload}}
        with pytest.raises(PodProtocolError, match="pickle is not enabled"):
            loader.forge(document=forged)
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes do run code when unpickled: the test is real
    assert marker.exists()


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_timeout_never_loses_a_queued_callers_result_silently(faulty_dir):
    """A call that times out stops the pod; a call queued behind it either runs on a
    fresh pod or, if its own time ran out while it waited, says it never started."""
    import threading

    from pypods import PodTimeoutError

    with PodLoader("faulty", pods_dir=faulty_dir, timeout=1.0) as loader:
        first_pid = loader.get_pid()
        outcomes: dict = {}

        def run(name, function, *args):
            try:
                outcomes[name] = function(*args)
            except Exception as exc:
                outcomes[name] = exc

        slow = threading.Thread(target=run, args=("slow", loader.sleep, 30))
        slow.start()
        time.sleep(0.2)  # let the slow call take the pod first
        queued = threading.Thread(target=run, args=("queued", loader.get_pid))
        queued.start()
        slow.join(30)
        queued.join(30)
        assert isinstance(outcomes["slow"], PodTimeoutError)
        late = outcomes["queued"]
        if isinstance(late, Exception):
            assert isinstance(late, PodTimeoutError) and "not started" in str(late)
        else:
            assert late != first_pid  # it ran, on the fresh pod
        assert loader.get_pid() != first_pid
