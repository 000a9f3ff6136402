"""Errors: raised in pods, pods that die, hang, or never start. Every fault is real."""

from __future__ import annotations

import inspect
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import bson
import pytest

from pypods import (
    NoSuchFunctionError,
    PodCrashedError,
    PodError,
    PodLoader,
    PodStartError,
    PodTimeoutError,
    RemoteError,
)
from pypods.runtime.protocol import PROTOCOL_VERSION

from .conftest import kill, pid_alive, wait_until, write_pod

# -- exceptions raised by pod code ----------------------------------------------------


def test_remote_builtin_exceptions_are_also_the_builtin(toolbox):
    with pytest.raises(ValueError, match=r"^bad value$") as info:
        toolbox.raise_value_error()
    error = info.value
    assert isinstance(error, RemoteError) and isinstance(error, PodError)
    assert error.remote_type == "ValueError"
    assert str(error) == "bad value"


def test_key_error_message_is_the_remote_message(toolbox):
    with pytest.raises(KeyError) as info:
        toolbox.raise_key_error("missing")
    assert str(info.value) == "'missing'"


def test_zero_division_and_os_errors_are_mirrored(toolbox):
    with pytest.raises(ZeroDivisionError):
        toolbox.divide(1, 0)
    with pytest.raises(FileNotFoundError) as info:
        toolbox.raise_file_not_found()
    assert isinstance(info.value, OSError) and "not/here.txt" in str(info.value)


def test_subclass_of_a_builtin_is_caught_as_the_builtin(toolbox):
    with pytest.raises(ValueError, match="custom failure") as info:
        toolbox.raise_custom()
    assert info.value.remote_type == "pod.PodSpecificError"


def test_remote_traceback_shows_the_pod_frames(toolbox, shared_pods_dir):
    with pytest.raises(RemoteError) as info:
        toolbox.divide(1, 0)
    text = info.value.remote_traceback
    assert str(shared_pods_dir / "toolbox" / "pod.py") in text
    assert "in divide" in text and "return a / b" in text
    assert "ZeroDivisionError: division by zero" in text
    assert "server.py" not in text  # the runtime's own frames are hidden
    assert info.value.__cause__ is not None and "in divide" in str(info.value.__cause__)


def test_uncaught_remote_error_prints_the_pod_traceback(_toolbox_built):
    script = textwrap.dedent(
        f"""
        from pypods import PodLoader
        pod = PodLoader("toolbox", pods_dir={str(_toolbox_built)!r}).load_pod()
        pod.divide(1, 0)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback in the pod" in result.stderr and "return a / b" in result.stderr
    assert "RemoteZeroDivisionError: division by zero" in result.stderr


def test_a_pod_that_raised_stays_usable(toolbox):
    pid = toolbox.get_pid()
    for _ in range(3):
        with pytest.raises(ValueError):
            toolbox.raise_value_error()
    assert toolbox.add(1, 2) == 3 and toolbox.get_pid() == pid


def test_keyboard_interrupt_in_pod_code_is_not_mirrored(toolbox):
    with pytest.raises(RemoteError) as info:
        toolbox.raise_keyboard_interrupt()
    assert not isinstance(info.value, KeyboardInterrupt)
    assert info.value.remote_type == "KeyboardInterrupt"
    assert toolbox.add(1, 1) == 2


def test_remote_errors_pickle(toolbox):
    with pytest.raises(RemoteError) as info:
        toolbox.raise_value_error("pickled")
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy, ValueError) and str(copy) == "pickled"
    assert copy.remote_type == "ValueError" and copy.remote_traceback


def test_unknown_function_is_an_attribute_error_naming_pod_and_function(toolbox):
    for attempt in (lambda: toolbox.no_such_thing, lambda: toolbox.call("no_such_thing")):
        with pytest.raises(NoSuchFunctionError) as info:
            attempt()
        assert isinstance(info.value, AttributeError) and isinstance(info.value, PodError)
        assert "'toolbox'" in str(info.value) and "'no_such_thing'" in str(info.value)
    assert not hasattr(toolbox, "no_such_thing")


# -- pods that die ------------------------------------------------------------------


def test_exit_during_a_call_is_a_crash_with_code_and_stderr(toolbox):
    old_pid = toolbox.get_pid()
    with pytest.raises(PodCrashedError) as info:
        toolbox.exit_process(3)
    error = info.value
    assert error.returncode == 3
    assert "exit code 3" in str(error) and "exit_process()" in str(error)
    assert "about to exit with 3" in str(error)
    assert error.stderr_tail[-1] == "about to exit with 3"
    assert not pid_alive(old_pid)
    assert toolbox.add(2, 3) == 5  # the next call starts a fresh process
    assert toolbox.get_pid() != old_pid


def test_sys_exit_in_pod_code_ends_the_pod(toolbox):
    with pytest.raises(PodCrashedError, match="exit code 4"):
        toolbox.sys_exit(4)
    assert toolbox.add(1, 1) == 2


def test_segfault_is_a_crash_naming_the_signal(toolbox):
    with pytest.raises(PodCrashedError, match="SIGSEGV") as info:
        toolbox.segfault()
    assert info.value.returncode == -signal.SIGSEGV
    assert toolbox.add(1, 1) == 2


def test_kill_during_a_call_is_reported_promptly(toolbox):
    pid = toolbox.pid
    killer = subprocess.Popen(
        [sys.executable, "-c", f"import os, time; time.sleep(0.5); os.kill({pid}, 9)"]
    )
    with pytest.raises(PodCrashedError, match="SIGKILL") as info:
        toolbox.sleep(30)
    killer.wait()
    assert "during a call to sleep()" in str(info.value)
    assert toolbox.add(1, 1) == 2


def test_kill_between_calls_is_reported_by_the_next_call_then_recovered(toolbox):
    pid = toolbox.pid
    kill(pid)
    assert wait_until(lambda: not pid_alive(pid))
    with pytest.raises(PodCrashedError, match="SIGKILL"):
        toolbox.add(1, 2)
    assert toolbox.add(1, 2) == 3
    assert toolbox.pid != pid


def test_a_crash_is_detected_even_when_a_child_holds_the_pipes(toolbox):
    child = toolbox.spawn_sleeper(30)  # inherits the pod's descriptors, outlives it
    try:
        with pytest.raises(PodCrashedError, match="exit code 7"):
            toolbox.kill_self_later(0.3)
            toolbox.sleep(30)
    finally:
        try:
            kill(child)
        except ProcessLookupError:
            pass
    assert toolbox.add(1, 1) == 2


def test_background_death_between_calls(toolbox):
    toolbox.kill_self_later(0.1)
    pid = toolbox.pid
    assert wait_until(lambda: not pid_alive(pid))
    with pytest.raises(PodCrashedError, match="between calls"):
        toolbox.add(1, 1)
    assert toolbox.add(1, 1) == 2


# -- timeouts -------------------------------------------------------------------------


def test_timeout_stops_the_pod_and_the_next_call_works(_toolbox_built):
    loader = PodLoader("toolbox", pods_dir=_toolbox_built, timeout=0.5).load_pod()
    try:
        pid = loader.pid
        with pytest.raises(PodTimeoutError) as info:
            loader.sleep(30)
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, PodError)
        assert "0.5s" in str(info.value) and "sleep()" in str(info.value)
        assert wait_until(lambda: not pid_alive(pid))
        assert loader.add(1, 2) == 3
        assert loader.sleep(0.1) == 0.1  # within the limit
    finally:
        loader.unload_pod()


@pytest.mark.parametrize("size", [100, 50_000_000])  # fits in the pipe / does not
def test_timeout_covers_sending_to_a_pod_that_stopped_reading(toolbox, size):
    """A frozen pod (SIGSTOP) never takes the request: the call still times out, and
    the next one runs on a fresh pod."""
    import threading

    toolbox.timeout = 1
    pid = toolbox.get_pid()
    os.kill(pid, signal.SIGSTOP)
    outcome: list = []

    def call() -> None:
        try:
            outcome.append(toolbox.echo(b"x" * size))
        except Exception as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(60)  # a liveness bound, far above the timeout: not a timing check
    if caller.is_alive():
        os.kill(pid, signal.SIGCONT)
        pytest.fail("the call was still blocked long after its timeout")
    assert isinstance(outcome[0], PodTimeoutError), outcome
    assert wait_until(lambda: not pid_alive(pid))
    assert toolbox.get_pid() != pid


def test_timeout_can_be_changed_on_a_loaded_pod(toolbox):
    toolbox.timeout = 0.3
    with pytest.raises(PodTimeoutError):
        toolbox.sleep(10)
    toolbox.timeout = None
    assert toolbox.sleep(0.5) == 0.5


# -- pods that never start --------------------------------------------------------------


def test_syntax_error_in_pod_py_is_a_clear_start_error(pods_dir):
    write_pod(pods_dir, "broken", "def oops(:\n    pass\n")
    with pytest.raises(PodStartError) as info:
        PodLoader("broken", pods_dir=pods_dir).load_pod()
    text = str(info.value)
    assert "SyntaxError" in text and "pod.py" in text and "line 1" in text


def test_exception_at_import_shows_the_pod_traceback(pods_dir):
    write_pod(pods_dir, "raises", "import missing_dependency_xyz\n")
    with pytest.raises(PodStartError) as info:
        PodLoader("raises", pods_dir=pods_dir).load_pod()
    error = info.value
    assert error.remote_type in ("ModuleNotFoundError", "ImportError")
    assert "missing_dependency_xyz" in str(error)
    assert 'pod.py", line 1' in error.remote_traceback


def test_sys_exit_at_import_is_a_start_error(pods_dir):
    write_pod(pods_dir, "quits", "import sys\nsys.exit('leaving early')\n")
    with pytest.raises(PodStartError, match="SystemExit: leaving early"):
        PodLoader("quits", pods_dir=pods_dir).load_pod()


def test_hard_crash_at_import_is_a_start_error_with_stderr(pods_dir):
    write_pod(pods_dir, "dies", "import os, sys\nsys.stderr.write('dying now\\n')\nos._exit(9)\n")
    with pytest.raises(PodStartError) as info:
        PodLoader("dies", pods_dir=pods_dir).load_pod()
    assert info.value.returncode == 9
    assert "dying now" in str(info.value)


def test_bad_all_is_a_start_error(pods_dir):
    write_pod(pods_dir, "badall", "__all__ = ['missing']\n")
    with pytest.raises(PodStartError, match="__all__ lists 'missing'"):
        PodLoader("badall", pods_dir=pods_dir).load_pod()


def test_a_pod_folder_without_pod_py_is_a_config_error(pods_dir):
    (pods_dir / "empty").mkdir()
    with pytest.raises(PodError, match=r"has no pod\.py"):
        PodLoader("empty", pods_dir=pods_dir).load_pod()


def test_restart_after_crash_fails_clearly_if_pod_py_broke(pods_dir):
    folder = write_pod(pods_dir, "fragile", "import os\ndef die():\n    os._exit(1)\n")
    loader = PodLoader("fragile", pods_dir=pods_dir).load_pod()
    with pytest.raises(PodCrashedError):
        loader.die()
    (folder / "pod.py").write_text("raise RuntimeError('now broken')\n")
    for _ in range(2):  # each call tries one restart: no tight loop
        with pytest.raises(PodStartError, match="now broken"):
            loader.die()
    loader.unload_pod()


def test_no_zombie_or_orphan_after_crash(toolbox):
    pid = toolbox.pid
    with pytest.raises(PodCrashedError):
        toolbox.exit_process(0)
    assert not pid_alive(pid)


def test_a_runtime_speaking_another_protocol_is_refused(pods_dir):
    write_pod(pods_dir, "stale", "def f():\n    return 1\n")
    PodLoader("stale", pods_dir=pods_dir).load_pod().unload_pod()
    site = next((pods_dir / "stale" / "venv" / "lib").glob("python*/site-packages"))
    protocol = site / "_pypods_runtime" / "protocol.py"
    protocol.write_text(
        protocol.read_text().replace(
            f"PROTOCOL_VERSION = {PROTOCOL_VERSION}", "PROTOCOL_VERSION = 99"
        )
    )
    with pytest.raises(PodStartError, match="protocol mismatch"):
        PodLoader("stale", pods_dir=pods_dir).load_pod()


#: Bytes that would pass for the reply to the next call if they were read as a frame.
FORGED_REPLY = bson.encode({"id": 0, "status": "done", "value": "forged", "pad": "x" * 40_000})


@pytest.mark.parametrize("spare", [120, 40])  # our decoder fails / pymongo's fails too
@pytest.mark.parametrize(
    "beside",
    [None, b"A" * 40_000, FORGED_REPLY],
    ids=["alone", "with-an-attachment", "with-an-attachment-that-looks-like-a-reply"],
)
def test_a_result_too_deep_for_the_client_is_refused_without_killing_the_pod(
    toolbox, spare, beside
):
    """Its attachments are read past all the same: the stream stays in step."""
    limit = sys.getrecursionlimit()

    def deep_call(depth):
        return toolbox.nest_dicts(150, beside) if depth == 0 else deep_call(depth - 1)

    toolbox.timeout = 30  # out of step, the next call would wait for a frame never sent

    assert toolbox.counter() == 1
    pid = toolbox.get_pid()
    assert len(str(toolbox.nest_dicts(150))) > 150  # within the protocol's limit...
    here = len(inspect.stack(0))
    with pytest.raises(ValueError, match="could not be received"):
        deep_call(limit - here - spare)  # ...but with too little stack left to rebuild it
    assert toolbox.get_pid() == pid  # the same pod, still in step, its state intact
    assert toolbox.counter() == 2


def test_values_deeper_than_the_protocol_allows_are_refused_by_the_sender(toolbox):
    value: list = []
    for _ in range(5000):
        value = [value]
    pid = toolbox.get_pid()
    with pytest.raises(ValueError, match="nested too deeply"):
        toolbox.echo(value)
    with pytest.raises(ValueError, match="nested too deeply"):
        toolbox.nest(300)
    assert toolbox.echo(toolbox.nest(199)) == toolbox.nest(199)  # 200 levels, both ways
    assert toolbox.pick("k", k=toolbox.nest(199)) == toolbox.nest(199)
    assert toolbox.get_pid() == pid


def test_queued_calls_after_a_crash_run_on_a_fresh_pod(toolbox):
    import threading

    results, errors = [], []
    crasher = threading.Thread(target=lambda: errors.append(_catch(toolbox.exit_process, 1)))
    crasher.start()
    time.sleep(0.05)
    waiter = threading.Thread(target=lambda: results.append(toolbox.add(2, 2)))
    waiter.start()
    crasher.join(10)
    waiter.join(10)
    assert isinstance(errors[0], PodCrashedError)
    assert results == [4]


def _catch(function, *args):
    try:
        function(*args)
    except Exception as exc:
        return exc
    return None


def test_stderr_tail_is_bounded_and_splits_carriage_returns(pods_dir):
    write_pod(
        pods_dir,
        "progressbar",
        """
        import os, sys

        def spin_then_die():
            for i in range(2000):
                sys.stderr.write(f"\\rprogress {i}" + "." * 500)
            sys.stderr.write("\\r" + "x" * 100_000)
            sys.stderr.flush()
            os._exit(2)
        """,
    )
    with PodLoader("progressbar", pods_dir=pods_dir) as pod, pytest.raises(PodCrashedError) as info:
        pod.spin_then_die()
    tail = info.value.stderr_tail
    assert tail[-2].startswith("progress 1999")
    assert all(len(line) <= 4096 for line in tail)
    assert tail[-1] == "x" * 4096


def test_an_odd_callable_is_served_without_a_signature(pods_dir):
    write_pod(
        pods_dir,
        "odd",
        """
        class _Lazy:
            def __call__(self, x):
                return x * 2

            @property
            def __signature__(self):
                raise RuntimeError("not yet")

            @property
            def __doc__(self):
                raise RuntimeError("not yet either")

        double = _Lazy()
        """,
    )
    with PodLoader("odd", pods_dir=pods_dir) as pod:
        assert pod.double(21) == 42


def test_an_exception_escaping_between_calls_ends_the_pod_instead_of_hanging_it(pods_dir):
    write_pod(
        pods_dir,
        "alarmed",
        """
        import signal, threading, time

        def _ring(signum, frame):
            raise TimeoutError("a stale alarm")

        def arm():
            threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon
            signal.signal(signal.SIGALRM, _ring)
            signal.setitimer(signal.ITIMER_REAL, 0.2)  # fires while the pod waits
            return True
        """,
    )
    with PodLoader("alarmed", pods_dir=pods_dir, timeout=30) as pod:
        assert pod.arm() is True
        pid = pod.pid
        assert wait_until(lambda: not pid_alive(pid), timeout=5)
        with pytest.raises(PodCrashedError, match="TimeoutError: a stale alarm"):
            pod.arm()


def test_docstrings_of_str_subclasses_are_described(pods_dir):
    write_pod(
        pods_dir,
        "fancy",
        """
        class Doc(str):
            pass

        def f(x):
            return x

        f.__doc__ = Doc("a str subclass")
        """,
    )
    with PodLoader("fancy", pods_dir=pods_dir) as pod:
        assert pod.f(3) == 3
