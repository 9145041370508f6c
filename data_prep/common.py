"""Options and output shared by every data_prep command (the work itself is video_adapt.data.prepare)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from video_adapt.data.prepare import PrepError, PrepOptions, PrepReport, SplitSpec, prepare_store


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="store directory to write")
    parser.add_argument("--short-side", type=int, default=0,
                        help="downscale so the short side is at most this (0 = keep the decoded size, as the official "
                             "loaders decode)")
    parser.add_argument("--keep-every", type=int, default=1,
                        help="keep every k-th frame (for long sources; sampling strides must be multiples of k)")
    parser.add_argument("--codec", default="jpeg", choices=["jpeg", "raw"])
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--shard-size", type=int, default=500, help="videos per shard file")
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    parser.add_argument("--limit", type=int, default=None, help="at most N videos per split (for a quick try)")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing store and start again")
    parser.add_argument("--strict", action="store_true", help="exit non-zero when any video failed")


def options_from_args(args: argparse.Namespace) -> PrepOptions:
    return PrepOptions(short_side=args.short_side, keep_every=args.keep_every, codec=args.codec, quality=args.quality,
                       shard_size=args.shard_size)


def run(args: argparse.Namespace, classes: list[str], splits: list[SplitSpec], source: str, flip: bool,
        dataset: str = "other") -> int:
    """Prepare, print the summary and every output path; exit code 1 under --strict with failures."""
    if args.limit is not None:
        splits = [SplitSpec(s.name, s.entries[:args.limit]) for s in splits]
    try:
        report: PrepReport = prepare_store(args.out, classes, splits, options_from_args(args), source=source,
                                           flip=flip, workers=args.workers, overwrite=args.overwrite,
                                           extra_meta={"dataset": dataset})
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
