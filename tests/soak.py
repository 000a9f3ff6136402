"""The soak driver: many threads calling one pod with random payloads while faults are
inflicted for real, then a count of every outcome and of what the client kept.

Run as its own process (a real client), so that its memory, descriptors and threads
are measured without the test runner's noise; ``tests/test_soak.py`` runs it, and so
can you::

    python tests/soak.py --threads 8 --calls 20000

It prints one JSON object of figures, with four snapshots of the client's resident
memory, descriptors, threads and objects: ``initial`` (no pod), ``before`` (pod loaded
and warmed up), ``after`` (the same, after the soak) and ``unloaded``. Each call's
payload carries its thread and call number, so an answer meant for another call can
never pass for right.

Outcomes of a call:

- ``ok``: the answer equals what was sent (for a fault call: never, see below);
- ``crashed`` / ``timed_out``: ``PodCrashedError`` / ``PodTimeoutError``, the errors
  the user guide documents for a pod killed or a call past its timeout;
- ``wrong``: an answer that differs from what was sent, or a fault call that returned;
- ``other``: any other exception (with a sample of each kind).

Faults: a fault thread sends SIGKILL to the pod every ``--kill-every`` seconds on
average, and each call is, with probability ``--timeout-rate``, a call that sleeps past
the loader's timeout.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import random
import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from pypods import PodCrashedError, PodLoader, PodTimeoutError

POD_NAME = "soak"
POD_SOURCE = """\
import time


def echo(value):
    return value


def sleep(seconds):
    time.sleep(seconds)
    return "slept"
"""

MAX_SIZE = 4 * 1024 * 1024
_BLOCK = random.Random(0).randbytes(MAX_SIZE)
_TEXT = "".join(random.Random(1).choice("abcdé✓🐍 \n") for _ in range(MAX_SIZE // 2))


def payload(rng: random.Random, thread: int, call: int) -> object:
    """A value of 0 B to 4 MB (log-uniform), of a random shape, unique to this call."""
    size = int(2 ** rng.uniform(0, 22)) - 1
    start = rng.randrange(MAX_SIZE - size + 1)
    tag = f"{thread}:{call}"
    data = _BLOCK[start : start + size]
    shape = rng.randrange(5)
    if shape == 0:
        return tag.encode() + data
    if shape == 1:
        return tag + _TEXT[start // 2 : start // 2 + size // 2]
    if shape == 2:  # two attachments in one message
        half = size // 2
        return [tag, data[:half], _TEXT[: half // 2]]
    if shape == 3:  # re-encoded as key/value pairs for the int key
        return {"tag": tag, "blob": data, 7: "int key", "text": _TEXT[: size // 4]}
    return [tag, list(range(size // 8))]  # a long list of ints: packed


def resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def measure_memory_exactly() -> None:
    """Make resident memory track memory in use, so that a leak shows and an allocator
    cache does not pass for one. This driver's process only.

    glibc keeps freed memory cached: in one heap per thread (a dozen calling threads
    leave well over 100 MB of free but resident memory, growing for a long while), and
    in its heap for large blocks once it has raised its threshold for mapping them
    separately. One heap, and a fixed 512 KiB threshold, keep neither; a leak stays.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(-8, 1)  # M_ARENA_MAX
        mallopt(-3, 512 * 1024)  # M_MMAP_THRESHOLD


def release_free_memory() -> None:
    """Collect garbage and hand freed heap memory back to the system (glibc), so
    resident memory reflects what is still in use."""
    gc.collect()
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def processes_mentioning(text: str) -> list[int]:
    """Ids of live processes whose command line contains ``text`` (Linux)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass  # gone meanwhile
    return found


def snapshot() -> dict[str, int]:
    release_free_memory()
    return {
        "rss": resident_bytes(),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": len(os.listdir("/proc/self/task")),
        "objects": len(gc.get_objects()),
    }


def run(
    pods_dir: Path,
    threads: int,
    calls: int,
    kill_every: float,
    timeout_rate: float,
    timeout: float,
    seed: int,
) -> dict:
    folder = pods_dir / POD_NAME
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pod.py").write_text(POD_SOURCE, encoding="utf-8")
    (folder / "requirements.txt").write_text("", encoding="utf-8")

    initial = snapshot()
    pod = PodLoader(POD_NAME, pods_dir=pods_dir, timeout=timeout).load_pod()
    warm = random.Random(seed)
    for call in range(200):  # let allocator pools and caches reach their working size
        value = payload(warm, -1, call)
        assert pod.echo(value) == value
    before = snapshot()

    outcomes: Counter[str] = Counter()
    samples: dict[str, str] = {}
    faults = Counter()
    lock = threading.Lock()
    done = threading.Event()

    def record(outcome: str, sample: str = "") -> None:
        with lock:
            outcomes[outcome] += 1
            if sample and outcome not in samples:
                samples[outcome] = sample

    def worker(thread: int) -> None:
        rng = random.Random(seed * 1000 + thread)
        for call in range(calls):
            # every thread's 5th call is a timeout fault: at least one always happens
            fault = call == 5 or rng.random() < timeout_rate
            try:
                if fault:
                    with lock:
                        faults["timeouts"] += 1
                    answer = pod.sleep(timeout + 1)
                    record("wrong", f"a call past its timeout returned {answer!r}")
                    continue
                value = payload(rng, thread, call)
                answer = pod.echo(value)
            except PodCrashedError:
                record("crashed")
            except PodTimeoutError:
                record("timed_out")
            except Exception as exc:
                record("other", f"{type(exc).__name__}: {exc}")
            else:
                if answer == value:
                    record("ok")
                else:
                    record("wrong", f"thread {thread} call {call}: a different answer")

    def killer() -> None:
        rng = random.Random(seed)
        while not done.wait(rng.expovariate(1 / kill_every)):
            pid = pod.pid
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            with lock:
                faults["kills"] += 1

    started = time.monotonic()
    fault_thread = threading.Thread(target=killer, name="soak-killer")
    fault_thread.start()
    workers = [threading.Thread(target=worker, args=(t,), name=f"soak-{t}") for t in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    done.set()
    fault_thread.join()
    elapsed = time.monotonic() - started

    assert pod.echo("settled") == "settled"  # a live pod, as when `before` was taken
    after = snapshot()
    pod.unload_pod()
    unloaded = snapshot()
    total = sum(outcomes.values())
    return {
        "threads": threads,
        "calls": total,
        "seconds": round(elapsed, 1),
        "calls_per_second": round(total / elapsed),
        "outcomes": dict(outcomes),
        "samples": samples,
        "faults": dict(faults),
        "initial": initial,
        "before": before,
        "after": after,
        "unloaded": unloaded,
        "pods_left": processes_mentioning(str(folder)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per thread")
    parser.add_argument("--kill-every", type=float, default=2.0, help="mean seconds between kills")
    parser.add_argument("--timeout-rate", type=float, default=0.0005)
    parser.add_argument("--timeout", type=float, default=2.0, help="the loader's call timeout")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pods-dir", type=Path, help="default: a temporary folder")
    options = parser.parse_args()
    measure_memory_exactly()
    with tempfile.TemporaryDirectory(prefix="pypods-soak-") as scratch:
        pods_dir = options.pods_dir or Path(scratch) / "pods"
        figures = run(
            pods_dir,
            options.threads,
            options.calls,
            options.kill_every,
            options.timeout_rate,
            options.timeout,
            options.seed,
        )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
