"""Load with faults: threads calling one pod with random payloads while the pod is
killed and calls run past their timeout (driver: ``tests/soak.py``, a real client
process). The full run takes about 12 minutes: ``pytest --soak -m soak``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .soak import processes_mentioning

DRIVER = Path(__file__).parent / "soak.py"
MiB = 1 << 20


def run_soak(pods_dir: Path, *, threads: int, calls: int, kill_every: float, budget: float):
    result = subprocess.run(
        [
            sys.executable,
            str(DRIVER),
            "--threads",
            str(threads),
            "--calls",
            str(calls),
            "--kill-every",
            str(kill_every),
            "--pods-dir",
            str(pods_dir),
        ],
        capture_output=True,
        text=True,
        timeout=budget,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def check(figures: dict, pods_dir: Path, threads: int, calls: int) -> None:
    outcomes = figures["outcomes"]
    assert sum(outcomes.values()) == threads * calls, "every call has an outcome"
    assert outcomes.get("wrong", 0) == 0, figures["samples"]
    assert outcomes.get("other", 0) == 0, figures["samples"]
    assert outcomes.get("ok", 0) > threads * calls // 2
    faults = figures["faults"]
    assert faults.get("kills", 0) >= 1 and faults.get("timeouts", 0) >= threads
    # each fault ends some call with a documented error
    assert outcomes.get("crashed", 0) >= 1
    assert outcomes.get("crashed", 0) + outcomes.get("timed_out", 0) >= faults["timeouts"]

    before, after = figures["before"], figures["after"]
    assert after["fds"] == before["fds"]
    assert after["threads"] == before["threads"]
    assert after["rss"] - before["rss"] < 16 * MiB, (before, after)
    assert after["objects"] - before["objects"] < 1000, (before, after)
    initial, unloaded = figures["initial"], figures["unloaded"]
    assert unloaded["fds"] == initial["fds"]
    assert unloaded["threads"] == initial["threads"] == 1
    assert figures["pods_left"] == []
    assert processes_mentioning(str(pods_dir)) == [], "no pod outlives its client"


def test_soak_quick(pods_dir):
    """A short run in every suite: the same checks on 8 threads x 150 calls."""
    figures = run_soak(pods_dir, threads=8, calls=150, kill_every=0.5, budget=300)
    check(figures, pods_dir, threads=8, calls=150)


@pytest.mark.soak
def test_soak(pods_dir):
    """The full run: 8 threads x 20,000 calls, payloads of 0 B to 4 MB, a kill every
    2 s on average and one call in 2,000 past its timeout. Figures: docs/reliability.md."""
    figures = run_soak(pods_dir, threads=8, calls=20_000, kill_every=2.0, budget=3600)
    print(json.dumps(figures, indent=2))
    check(figures, pods_dir, threads=8, calls=20_000)
