"""Round-trip time of a tiny pod call, next to the floor, measured in the same run.

    python benchmarks/bench_call.py [--calls N] [--rounds R]

The *floor* is the least any design of this kind can cost: a raw echo between two
Python processes over a pipe pair, each message a length-prefixed BSON document
encoded and decoded on both sides, and no framework at all. PyPods' figure is
``foo(1, 2)`` through an injected proxy. Both are measured in alternating rounds (the
machine is shared and noisy, so compare the ratio, not the absolute times):

- pinned: client and pod on one core (``os.sched_setaffinity``), the setting where
  per-call CPU work shows most clearly;
- unpinned: wherever the scheduler puts them (often two cores, so each message also
  pays a cross-core wake-up).

It also times ``load_pod()`` when the venv already exists (process start included),
next to starting a bare interpreter of the same venv. Targets: a pinned ratio within
1.5x of the floor; the numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bson

from pypods import PodLoader

ECHO = r"""
import os, struct, bson
buf = b""
while True:
    data = os.read(0, 65536)
    if not data:
        break
    buf += data
    while len(buf) >= 4:
        size = struct.unpack_from("<i", buf)[0]
        if len(buf) < size:
            break
        msg = bson.decode(buf[:size])
        buf = buf[size:]
        args = msg["args"]
        os.write(1, bson.encode({"id": msg["id"], "status": "done", "value": args[0] + args[1]}))
"""

POD = """
def foo(x, y):
    return x + y
"""


class Floor:
    """The raw BSON echo peer."""

    def __init__(self, python: str) -> None:
        self.proc = subprocess.Popen(
            [python, "-c", ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        self.pid = self.proc.pid
        self._w = self.proc.stdin.fileno()
        self._r = self.proc.stdout.fileno()
        self._id = 0

    def call(self, x: int, y: int) -> int:
        self._id += 1
        os.write(
            self._w, bson.encode({"op": "invoke", "id": self._id, "fn": "foo", "args": [x, y]})
        )
        return bson.decode(os.read(self._r, 65536))["value"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def median_us(call, calls: int) -> float:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        call(1, 2)
        samples.append(clock() - start)
    return statistics.median(samples) / 1000


def pin(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        os.sched_setaffinity(pid, cpus)


def measure(
    loader: PodLoader, floor: Floor, calls: int, rounds: int, cpus: set[int]
) -> tuple[float, float]:
    pin([0, loader.pid, floor.pid], cpus)
    foo = loader.foo
    for call in (foo, floor.call):
        median_us(call, calls // 5)  # warm up
    pods, floors = [], []
    for _ in range(rounds):
        pods.append(median_us(foo, calls))
        floors.append(median_us(floor.call, calls))
    return statistics.median(pods), statistics.median(floors)


def time_load(pods_dir: Path, python: str, repeats: int) -> tuple[float, float]:
    loads, bare = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        loader = PodLoader("bench", pods_dir=pods_dir).load_pod()
        loads.append(time.perf_counter() - start)
        loader.unload_pod()
        start = time.perf_counter()
        subprocess.run([python, "-c", "import bson"], check=True)
        bare.append(time.perf_counter() - start)
    return statistics.median(loads) * 1000, statistics.median(bare) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    options = parser.parse_args()
    all_cpus = os.sched_getaffinity(0)
    with tempfile.TemporaryDirectory() as tmp:
        pods_dir = Path(tmp) / "pods"
        (pods_dir / "bench").mkdir(parents=True)
        (pods_dir / "bench" / "pod.py").write_text(POD)
        (pods_dir / "bench" / "requirements.txt").write_text("")
        loader = PodLoader("bench", pods_dir=pods_dir).load_pod()
        venv_python = str(pods_dir / "bench" / "venv" / "bin" / "python")
        floor = Floor(venv_python)
        try:
            rounds, calls = options.rounds, options.calls
            print(f"tiny call foo(1, 2): median round trip, {rounds} rounds x {calls} calls")
            print(f"{'placement':<12}{'pypods':>10}{'floor':>10}{'ratio':>8}")
            one = {min(all_cpus)}
            for label, cpus in (("one core", one), ("unpinned", all_cpus)):
                pypods_us, floor_us = measure(loader, floor, options.calls, options.rounds, cpus)
                print(
                    f"{label:<12}{pypods_us:>8.1f}us{floor_us:>8.1f}us{pypods_us / floor_us:>7.2f}x"
                )
            pin([0], all_cpus)
        finally:
            floor.close()
            loader.unload_pod()
        load_ms, bare_ms = time_load(pods_dir, venv_python, 10)
        print()
        print("load_pod() with the venv already built (median of 10):")
        print(
            f"  load_pod(): {load_ms:.1f} ms; bare `python -c 'import bson'` in that venv: "
            f"{bare_ms:.1f} ms; ratio {load_ms / bare_ms:.2f}x"
        )


if __name__ == "__main__":
    sys.exit(main())
