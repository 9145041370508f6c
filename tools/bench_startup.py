"""How long `video-adapt --help` and a command's `--help` take against `import torch` (fresh processes,
interleaved rounds, medians).

    python tools/bench_startup.py --rounds 10 --json runs/bench/startup.json
The logic is video_adapt.benchmarks.startup.
"""
from __future__ import annotations

import argparse
import sys

from video_adapt.benchmarks.startup import startup_times
from video_adapt.console import command
from video_adapt.files import write_json_atomic


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    result = startup_times(args.rounds)
    for name, seconds in result["median_s"].items():
        print(f"{seconds * 1000:8.0f} ms  {name}")
    if args.json:
        write_json_atomic(args.json, result)
        print(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
