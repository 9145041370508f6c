"""The frame store's training loader against the removed tube loader, in one process, on the same sources.

    python tools/bench_vs_tube.py                  # 24 SSv2-like 240 x 320 sources, 5 interleaved rounds
    python tools/bench_vs_tube.py --json out.json
    python tools/bench_vs_tube.py --smoke          # tiny sizes, seconds (used by the tests)

Needs the git history: the tube loader is taken from commit b2afcfc^. What is measured and why in one process:
video_adapt/benchmarks/tube_compare.py; results in BENCHMARKS.md ("Against the removed tube loader").
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from video_adapt.benchmarks.tube_compare import run_tube_compare, tube_compare_lines
from video_adapt.console import command
from video_adapt.files import write_json_atomic


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=45, help="frames per source video")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clips", type=int, default=192, help="clips timed per measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the old harness ran 2)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (used by the tests)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.videos, args.frames, args.rounds, args.clips = 2, 20, 1, 8
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        results = run_tube_compare(Path(tmp), args.videos, args.frames, args.rounds, args.clips)
    results["args"] = vars(args)
    print("\n".join(tube_compare_lines(results)))
    if args.json:
        write_json_atomic(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
