"""Options and output shared by every data_prep command (the work itself is video_adapt.data.prepare)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from video_adapt.data.prepare import PrepError, PrepOptions, PrepReport, SplitSpec, prepare_store


def add_common_options(parser: argparse.ArgumentParser, sampling: str, short_side: int = 256,
                       test_clips: int = 2) -> None:
    parser.add_argument("--out", required=True, help="store directory to write")
    parser.add_argument("--frames", type=int, nargs="+", default=[2, 4, 8, 16], help="frame counts to serve")
    parser.add_argument("--sampling", default=sampling, choices=["segment", "dense"])
    parser.add_argument("--stride", type=int, default=4, help="frame stride of dense sampling")
    parser.add_argument("--short-side", type=int, default=short_side, help="resize the short side (0 = keep)")
    parser.add_argument("--train-views", type=int, default=2, help="random training views stored per video")
    parser.add_argument("--test-clips", type=int, default=test_clips, help="temporal test clips per video")
    parser.add_argument("--codec", default="jpeg", choices=["jpeg", "raw"])
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--shard-size", type=int, default=500, help="videos per shard file")
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    parser.add_argument("--limit", type=int, default=None, help="at most N videos per split (for a quick try)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="delete an existing store and start again")
    parser.add_argument("--strict", action="store_true", help="exit non-zero when any video failed")


def options_from_args(args: argparse.Namespace) -> PrepOptions:
    return PrepOptions(frames=sorted(set(args.frames)), sampling=args.sampling, stride=args.stride,
                       short_side=args.short_side, train_views=args.train_views, test_clips=args.test_clips,
                       codec=args.codec, quality=args.quality, shard_size=args.shard_size, seed=args.seed)


def run(args: argparse.Namespace, classes: list[str], splits: list[SplitSpec], source: str, flip: bool) -> int:
    """Prepare, print the summary and every output path; exit code 1 under --strict with failures."""
    if args.limit is not None:
        splits = [SplitSpec(s.name, s.entries[:args.limit], s.kind) for s in splits]
    try:
        report: PrepReport = prepare_store(args.out, classes, splits, options_from_args(args), source=source,
                                           flip=flip, workers=args.workers, overwrite=args.overwrite)
    except PrepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for split, vid, path, reason in report.failures[:10]:
        print(f"failed ({split}): {reason}", file=sys.stderr)
    if len(report.failures) > 10:
        print(f"... {len(report.failures) - 10} more in {Path(args.out) / 'failed.csv'}", file=sys.stderr)
    print(report.summary())
    for name in ("meta.json", "failed.csv"):
        print(f"{name}: {Path(args.out) / name}")
    return 1 if args.strict and report.failed else 0


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
