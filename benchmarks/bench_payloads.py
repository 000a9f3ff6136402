"""Large payloads through a pod, next to what the machine itself can do, in one run.

    python benchmarks/bench_payloads.py [--mb 100] [--floats 10000000] [--rounds 5]
                                        [--memory-gib 1]

Four measurements, each printed next to its baseline (best of ``--rounds`` alternating
rounds; the machine is shared and noisy, so compare the ratios):

1. A float64 NumPy array of ``--mb`` MB sent to a pod and returned (``echo(a)``),
   next to the *pipe floor*, the same bytes written to a second process over a pipe
   pair (1 MiB pipe buffers, as PyPods uses) and read back, each side reading into
   fresh memory as any call that returns a new array must; also shown: the same with
   buffers allocated and paged in before the clock starts (what the pipe alone costs,
   without the page faults of new memory), and an in-process ``numpy.copy``.
   Target: within 1.5x of the pipe floor.
2. ``--mb`` MB of ``bytes`` the same way, next to the same pipe floor.
3. A list of ``--floats`` Python floats sent and returned, next to pickling the list
   over a pipe to a second process that unpickles it, pickles it again and sends it
   back. Target: within 2x of pickle.
4. Peak memory of a client process that round-trips a ``--memory-gib`` GiB array:
   its peak resident memory divided by the payload. Target: about 3x or less.

Needs numpy in the running environment (``pip install -e '.[test]'``); the pod's venv
is built once in a temporary folder (numpy from the index or the installer's cache).
"""

from __future__ import annotations

import argparse
import mmap
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from pypods import PodLoader

POD = """
def echo(value):
    return value
"""

#: The other end of the pipe floor: reads a length, then that many bytes, and writes
#: them back. Raw bytes, no encoding. A negative length asks for fresh memory each
#: time (as a pod receiving an array needs); a positive one reuses a buffer already
#: paged in: no allocation at all, the least any design could pay.
PIPE_ECHO = r"""
import mmap, os, struct, sys, fcntl
for fd in (0, 1):
    try:
        fcntl.fcntl(fd, 1031, 1 << 20)
    except OSError:
        pass
def read_exactly(view):
    filled = 0
    while filled < len(view):
        filled += os.readv(0, [view[filled:]])
buf = bytearray()
while True:
    head = bytearray(8)
    if not os.readv(0, [memoryview(head)]):
        break
    size = struct.unpack("<q", head)[0]
    if size < 0:  # fresh memory, as a pod receiving an array needs
        size = -size
        buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    elif len(buf) != size:
        buf = bytearray(size)
    read_exactly(memoryview(buf))
    view = memoryview(buf)
    while view:
        view = view[os.write(1, view):]
"""

#: The other end of the pickle baseline: unpickle each message and pickle it back.
PICKLE_ECHO = r"""
import os, pickle, struct, fcntl
for fd in (0, 1):
    try:
        fcntl.fcntl(fd, 1031, 1 << 20)
    except OSError:
        pass
def read_exactly(size):
    buf = bytearray(size)
    view = memoryview(buf)
    filled = 0
    while filled < size:
        count = os.readv(0, [view[filled:]])
        if not count:
            raise SystemExit(0)
        filled += count
    return buf
while True:
    size = struct.unpack("<q", read_exactly(8))[0]
    value = pickle.loads(read_exactly(size))
    data = pickle.dumps(value, protocol=5)
    view = memoryview(struct.pack("<q", len(data)) + data)
    while view:
        view = view[os.write(1, view):]
"""

MEMORY_CLIENT = r"""
import resource, sys, numpy as np
from pypods import PodLoader

def peak_rss():
    # VmHWM: this process's own peak (ru_maxrss would include the parent's peak,
    # inherited through fork and exec).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

pods_dir, gib = sys.argv[1], float(sys.argv[2])
size = int(gib * (1 << 30))
with PodLoader("bench_payloads", pods_dir=pods_dir) as pod:
    pod.echo(np.zeros(1))  # warm: code paths loaded before the baseline
    array = np.ones(size // 8)
    before = peak_rss()
    back = pod.echo(array)
    assert back.shape == array.shape and back[-1] == 1.0
    peak = peak_rss()
print(size, before, peak)
"""


class Echo:
    """A helper process at the end of a pipe pair."""

    def __init__(self, code: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.w = self.proc.stdin.fileno()
        self.r = self.proc.stdout.fileno()
        import fcntl

        for fd in (self.w, self.r):
            try:
                fcntl.fcntl(fd, 1031, 1 << 20)
            except OSError:
                pass

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(self.w, view) :]

    def read_into(self, buf) -> None:
        view = memoryview(buf)
        filled = 0
        while filled < len(view):
            filled += os.readv(self.r, [view[filled:]])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def pipe_floor(echo: Echo, data, into: bytearray | None = None) -> float:
    """Send ``data`` and read it back: into ``into`` (allocated and paged in before the
    clock starts, and the echo reuses its buffer too), or, by default, into fresh
    memory on both sides, as any call that returns a new array must."""
    size = memoryview(data).nbytes
    start = time.perf_counter()
    echo.write(struct.pack("<q", size if into is not None else -size))
    echo.write(data)
    echo.read_into(into if into is not None else mmap.mmap(-1, size, flags=_PRIVATE))
    return time.perf_counter() - start


_PRIVATE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS


def pickle_floor(echo: Echo, value) -> float:
    start = time.perf_counter()
    data = pickle.dumps(value, protocol=5)
    echo.write(struct.pack("<q", len(data)) + data)
    head = bytearray(8)
    echo.read_into(head)
    back = bytearray(struct.unpack("<q", head)[0])
    echo.read_into(back)
    result = pickle.loads(back)
    elapsed = time.perf_counter() - start
    assert len(result) == len(value)
    return elapsed


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def best_of(rounds: int, measures: dict) -> dict:
    """Alternate the measures round by round; keep each one's best time."""
    best = {name: float("inf") for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            best[name] = min(best[name], measure())
    return best


def report(title: str, best: dict, baseline: str, target: str) -> None:
    print(f"\n{title}")
    base = best[baseline]
    for name, seconds in best.items():
        ratio = "" if name == baseline else f"   {seconds / base:5.2f}x the {baseline}"
        print(f"  {name:<28} {seconds * 1000:9.1f} ms{ratio}")
    print(f"  target: {target}")


def run_array_benchmarks(pod: PodLoader, pipe: Echo, pickler: Echo, options) -> None:
    array = np.random.default_rng(0).random(options.mb * 1_000_000 // 8)
    back = pod.echo(array)
    assert back.dtype == array.dtype and np.array_equal(back, array)
    landing = bytearray(array.nbytes)
    best = best_of(
        options.rounds,
        {
            "pipe floor": lambda: pipe_floor(pipe, array),
            "PyPods echo(array)": lambda: timed(pod.echo, array),
            "pipe, buffers reused": lambda: pipe_floor(pipe, array, landing),
            "numpy.copy": lambda: timed(np.copy, array),
        },
    )
    report(
        f"{options.mb} MB float64 array, round trip",
        best,
        "pipe floor",
        "PyPods within 1.5x of the pipe floor",
    )
    run_bytes_benchmark(pod, pipe, array.tobytes(), landing, options)
    run_list_benchmark(pod, pickler, array[: options.floats].tolist(), options)


def run_bytes_benchmark(
    pod: PodLoader, pipe: Echo, blob: bytes, landing: bytearray, options
) -> None:
    assert pod.echo(blob) == blob
    best = best_of(
        options.rounds,
        {
            "pipe floor": lambda: pipe_floor(pipe, blob),
            "PyPods echo(bytes)": lambda: timed(pod.echo, blob),
            "pipe, buffers reused": lambda: pipe_floor(pipe, blob, landing),
        },
    )
    report(f"{options.mb} MB of bytes, round trip", best, "pipe floor", "within 1.5x")


def run_list_benchmark(pod: PodLoader, pickler: Echo, floats: list, options) -> None:
    floats += [0.5] * (options.floats - len(floats))
    assert pod.echo(floats) == floats
    best = best_of(
        max(2, options.rounds // 2),
        {
            "pickle over a pipe": lambda: pickle_floor(pickler, floats),
            "PyPods echo(list)": lambda: timed(pod.echo, floats),
        },
    )
    report(
        f"list of {options.floats:,} floats, round trip",
        best,
        "pickle over a pipe",
        "PyPods within 2x of pickle",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--floats", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-gib", type=float, default=1.0)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pods_dir = Path(tmp) / "pods"
        (pods_dir / "bench_payloads").mkdir(parents=True)
        (pods_dir / "bench_payloads" / "pod.py").write_text(textwrap.dedent(POD))
        (pods_dir / "bench_payloads" / "requirements.txt").write_text("numpy\n")
        pod = PodLoader("bench_payloads", pods_dir=pods_dir).load_pod()
        pipe = Echo(PIPE_ECHO)
        pickler = Echo(PICKLE_ECHO)
        try:
            run_array_benchmarks(pod, pipe, pickler, options)
        finally:
            pipe.close()
            pickler.close()
            pod.unload_pod()

        out = subprocess.run(
            [sys.executable, "-c", MEMORY_CLIENT, str(pods_dir), str(options.memory_gib)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        size, before, peak = (int(x) for x in out)
        print(f"\n{options.memory_gib:g} GiB float64 array, round trip, client memory")
        print(f"  peak resident memory {peak / 2**30:6.2f} GiB = {peak / size:4.2f}x the payload")
        print(f"  (before the call: {before / 2**30:.2f} GiB, the array and the interpreter)")
        print("  target: about 3x the payload or less")


if __name__ == "__main__":
    main()
