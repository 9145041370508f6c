"""What tools/bench_startup.py measures: how long a command takes to answer `--help`, against importing torch alone,
in interleaved rounds of fresh processes (the median of each)."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

PROBES: dict[str, list[str]] = {
    "python -m video_adapt --help": ["-m", "video_adapt", "--help"],
    "python -m video_adapt train --help": ["-m", "video_adapt", "train", "--help"],
    "python -m video_adapt infer --help": ["-m", "video_adapt", "infer", "--help"],
    'python -c "import torch"': ["-c", "import torch"],
    'python -c "pass"': ["-c", "pass"],
}


def time_once(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def startup_times(rounds: int) -> dict[str, Any]:
    """Seconds per probe (median over `rounds`, each round running every probe once, in turn)."""
    times: dict[str, list[float]] = {name: [] for name in PROBES}
    for name, args in PROBES.items():  # one warm-up each: the first run pays for the file-system cache
        time_once(args)
    for _ in range(rounds):
        for name, args in PROBES.items():
            times[name].append(time_once(args))
    return {"rounds": rounds, "median_s": {name: statistics.median(t) for name, t in times.items()},
            "all_s": times}
