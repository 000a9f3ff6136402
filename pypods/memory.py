"""Keeping a pod within its memory limit (``PodLoader(max_memory=...)``).

The limit is on *resident* memory, watched from the client, not an address-space
limit (``RLIMIT_AS``) set on the pod: NumPy's OpenBLAS, PyTorch and JAX reserve
address ranges far larger than they ever touch, and would fail to even import under
an ``RLIMIT_AS`` anywhere near the memory they really use.

A thread polls the pod's resident memory. Over the limit, it first asks the pod to
give up (SIGUSR1: the pod runtime raises ``MemoryError`` in the running call, which
the caller gets as a ``RemoteError`` that is also a ``MemoryError`` once the pod has
let go of the memory). If memory stays over the limit for ``GRACE`` seconds, or
grows past ``HARD_FACTOR`` times it (growth inside native code, which no Python
exception can interrupt), the pod is killed and the caller gets ``PodCrashedError``
saying the limit was hit. Either way the machine never runs out of memory because of
a pod (within one poll interval of growth).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import weakref
from typing import Callable

#: How often resident memory is read.
INTERVAL = 0.05

#: How long memory may stay over the limit after the pod was asked to give up.
GRACE = 1.0

#: Memory beyond this multiple of the limit gets the pod killed at once.
HARD_FACTOR = 1.25

#: The signal that asks the pod runtime to raise MemoryError in the running call.
GIVE_UP_SIGNAL = signal.SIGUSR1

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def supported() -> bool:
    """True where a process's resident memory can be read (Linux's /proc)."""
    return os.path.exists("/proc/self/statm")


def resident_memory(pid: int) -> int | None:
    """Resident memory of process ``pid`` in bytes, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


class MemoryWatch:
    """A thread that keeps one pod process within ``limit`` bytes of resident memory.

    ``stop(reason)`` is called (once) when the pod must be killed; the thread ends
    when ``ended`` is set (the pod was reaped) or after stopping it.
    """

    def __init__(
        self, pid: int, limit: int, ended: threading.Event, stop: Callable[[str], None]
    ) -> None:
        self.pid = pid
        self.limit = limit
        self._ended = ended
        self._stop = weakref.WeakMethod(stop) if hasattr(stop, "__self__") else lambda: stop
        threading.Thread(target=self._run, name=f"pypods-memory-{pid}", daemon=True).start()

    def _run(self) -> None:
        over_since: float | None = None
        while not self._ended.wait(INTERVAL):
            rss = resident_memory(self.pid)
            if rss is None:
                return
            if rss <= self.limit:
                over_since = None
                continue
            now = time.monotonic()
            if over_since is None:
                over_since = now
                try:
                    os.kill(self.pid, GIVE_UP_SIGNAL)
                except OSError:
                    return
            if rss > self.limit * HARD_FACTOR or now - over_since > GRACE:
                stop = self._stop()
                if stop is not None:
                    stop(
                        f"it went over its memory limit: {_size(rss)} resident, "
                        f"max_memory={_size(self.limit)}"
                    )
                return


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count} bytes"
