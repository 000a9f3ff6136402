"""Pods that fail as they start: a clear error each time, and never a restart storm.

Every pod here counts its own starts: a helper module it imports first appends the
process id to a log, so the tests count the pod processes really started. A broken
pod stops failing after many starts, so that a restart storm, should one happen,
ends and fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from pypods import PodCrashedError, PodLoader, PodStartError

from .conftest import pid_alive, wait_until, write_pod

WORKING = """
import counting
import os

def get_pid():
    return os.getpid()
"""

BROKEN = """
import counting
if counting.STARTS < STORM:
    raise RuntimeError("broken since the load")
"""


def counting_pod(pods_dir: Path, name: str, source: str) -> tuple[Path, Path]:
    """A pod whose every start appends its pid to the returned log."""
    log = pods_dir / f"{name}.starts"
    folder = write_pod(pods_dir, name, source)
    (folder / "counting.py").write_text(
        f"import os\nwith open({str(log)!r}, 'a+') as log:\n"
        "    log.write(f'{os.getpid()}\\n')\n"
        "    log.seek(0)\n"
        "    STARTS = len(log.read().split())\n"
    )
    return folder, log


def starts(log: Path) -> list[int]:
    return [int(pid) for pid in log.read_text().split()] if log.exists() else []


@pytest.mark.parametrize(
    ("extra_files", "source", "expected"),
    [
        ({"helper.py": "def oops(:\n"}, "import counting\nimport helper\n",
         ["SyntaxError", 'helper.py", line 1', 'pod.py", line 2']),
        ({}, "import counting\nimport missing_dependency_xyz\n",
         ["ModuleNotFoundError", "missing_dependency_xyz", 'pod.py", line 2']),
    ],
    ids=["syntax error", "missing dependency"],
)  # fmt: skip
def test_a_pod_failing_at_import_is_started_once_with_its_traceback(
    pods_dir, extra_files, source, expected
):
    folder, log = counting_pod(pods_dir, "doomed", source)
    for name, text in extra_files.items():
        (folder / name).write_text(text)
    loader = PodLoader("doomed", pods_dir=pods_dir)
    with pytest.raises(PodStartError) as info:
        loader.load_pod()
    text = str(info.value)
    for piece in expected:
        assert piece in text
    assert "pod 'doomed' failed to start" in text
    assert len(starts(log)) == 1  # one attempt, no retry loop
    assert wait_until(lambda: not pid_alive(starts(log)[0]))
    assert not loader.loaded


def test_a_pod_that_breaks_after_loading_is_started_at_most_once_per_call(pods_dir):
    folder, log = counting_pod(pods_dir, "storm", WORKING)
    loader = PodLoader("storm", pods_dir=pods_dir).load_pod()
    assert starts(log) == [loader.get_pid()]
    (folder / "pod.py").write_text(WORKING + BROKEN.replace("STORM", "50"))  # edited...
    os.kill(loader.pid, signal.SIGKILL)  # ...then it dies
    assert wait_until(lambda: not pid_alive(starts(log)[0]))

    with pytest.raises(PodCrashedError):  # the death is reported, nothing started
        loader.get_pid()
    assert len(starts(log)) == 1
    for attempt in range(1, 4):
        with pytest.raises(PodStartError, match="broken since the load") as info:
            loader.get_pid()
        assert 'pod.py", line 10' in info.value.remote_traceback
        assert len(starts(log)) == 1 + attempt  # exactly one start per call

    # Calls from many threads at once: still at most one start per call.
    errors: list[BaseException] = []

    def call() -> None:
        try:
            loader.get_pid()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 6 and all(isinstance(e, PodStartError) for e in errors)
    assert len(starts(log)) <= 4 + 6
    assert wait_until(lambda: not any(pid_alive(pid) for pid in starts(log)))

    (folder / "pod.py").write_text(WORKING)  # fixed: the next call starts it
    before = len(starts(log))
    assert loader.get_pid() == starts(log)[-1]
    assert len(starts(log)) == before + 1
    loader.unload_pod()


HANGING = """
import counting
import sys, time
print("importing the model...", file=sys.stderr, flush=True)
if counting.STARTS < STORM:
    time.sleep(120)

def get_pid():
    import os
    return os.getpid()
"""


def test_a_pod_that_hangs_at_import_is_stopped_after_start_timeout(pods_dir):
    _, log = counting_pod(pods_dir, "hanging", HANGING.replace("STORM", "2"))
    with pytest.raises(PodStartError) as info:
        PodLoader("hanging", pods_dir=pods_dir, start_timeout=1).load_pod()
    text = str(info.value)
    assert "did not start within start_timeout=1s" in text and "importing the model" in text
    [hung] = starts(log)
    assert wait_until(lambda: not pid_alive(hung)), "the hanging pod was left running"
    with PodLoader("hanging", pods_dir=pods_dir, start_timeout=30) as pod:  # now it starts
        assert pod.get_pid() != hung
    assert len(starts(log)) == 2


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), ("5", TypeError)])
def test_start_timeout_is_checked(value, error):
    with pytest.raises(error, match="start_timeout"):
        PodLoader("anything", start_timeout=value)
