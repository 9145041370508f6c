"""Preparation cost on sources like the real datasets: store bytes per source byte, videos/s per worker and merge
time, and what they mean for full Something-Something v2 and HMDB51 on one machine and on 8 (16 workers each).

    python tools/bench_prep.py                  # 24 videos per kind, JPEG q90 and raw at the decoded size
    python tools/bench_prep.py --smoke          # tiny sizes, seconds (used by the tests)

The measuring code is video_adapt/benchmarks/prep.py. Sources are footage-like (video_adapt/benchmarks/sources.py):
SSv2-like 45 frames of 320 x 240 at 12 fps, VP9 webm at SSv2's bit rate (~90 KB per video); HMDB51-like 90 frames of
320 x 240 at 30 fps, MPEG-4 avi at HMDB51's (~300 KB per video, 2 GB for 6,766). Each store is prepared with one
worker as 2 parts (`--shard 0/2`, `1/2`, run one after the other) and merged, so the timed path is the one a cluster
runs. A worker's rate is videos per CPU second of the preparing process (decoder threads included): on a shared host
the wall clock measures the neighbours, the CPU time does not. The full-dataset figures scale it linearly to 16
workers per machine, one core each (workers share nothing but the disk, whose write rate the figures list), plus the
merge, timed per shard file here.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from video_adapt.benchmarks.prep import KINDS, full_dataset, make_sources, measure, smoke_kinds
from video_adapt.console import command
from video_adapt.files import write_json_atomic


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24, help="source videos per kind")
    parser.add_argument("--codecs", nargs="+", default=["jpeg", "raw"], choices=["jpeg", "raw"])
    parser.add_argument("--workers", type=int, default=16, help="workers per machine in the extrapolation")
    parser.add_argument("--machines", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--shard-size", type=int, default=4,
                        help="videos per shard here (the merge is timed per shard file)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    kinds = KINDS
    if args.smoke:
        args.videos, args.codecs = 3, ["jpeg"]
        kinds = smoke_kinds()
    results: dict[str, dict[str, float]] = {}
    rows = ["| dataset | store | bytes per source byte | store KB / video | videos/s per worker | full store, GB | "
            + " | ".join(f"{m} x {args.workers} workers, min" for m in args.machines) + " | writes, MB/s per machine |",
            "|---" * (7 + len(args.machines)) + "|"]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            sources = make_sources(Path(tmp) / kind.name, kind, args.videos)
            for codec in args.codecs:
                m = measure(kind, sources, codec=codec, out=Path(tmp) / f"{kind.name}-{codec}",
                            shard_size=args.shard_size)
                full = {n: full_dataset(kind, m, workers=args.workers, machines=n, shard_size=500)
                        for n in args.machines}
                results[f"{kind.name} {codec}"] = {**m, **{f"{n} machines {k}": v for n, f in full.items()
                                                          for k, v in f.items()}}
                rows.append(f"| {kind.name} ({kind.full_videos:,} videos, {kind.full_gb} GB) | {codec} | "
                            f"{m['store bytes per source byte']:.1f} | {m['store KB per video']:.0f} | "
                            f"{m['videos/s per worker']:.1f} | {full[args.machines[0]]['store GB']:.0f} | "
                            + " | ".join(f"{f['minutes']:.1f}" for f in full.values())
                            + f" | {full[args.machines[0]]['write MB/s per machine']:.0f} |")
    for name, figures in results.items():
        print(name + ": " + ", ".join(f"{k} {v:.3g}" for k, v in figures.items()))
    print("\n".join(rows))
    if args.json:
        write_json_atomic(args.json, results)
        print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
