"""Options and output shared by every `video-adapt prep` command; the work itself is video_adapt.data.prepare.

Only argparse is imported at the top, so `--help` answers at once; errors are the library's one-line errors,
printed by video_adapt.console.command like every other command's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from video_adapt.data.prepare import PrepOptions, PrepReport, SplitSpec


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
    add_shard_option(parser)


def add_shard_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shard", metavar="I/N", type=shard_arg, default=None,
                        help="prepare only part I of N (I = 0..N-1, e.g. $SLURM_ARRAY_TASK_ID/8) into "
                             "OUT/part-I-of-N; join the N parts with video-adapt prep merge OUT")


def shard_arg(text: str) -> tuple[int, int]:
    from video_adapt.data.prepare import PrepError, parse_shard
    try:
        return parse_shard(text)
    except PrepError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--shard ")) from None


def existing_dir(path: Path) -> Path:
    """A --videos folder, or a one-line error naming it."""
    from video_adapt.data.prepare import PrepError
    if not path.is_dir():
        raise PrepError(f"{path}: no such directory")
    return path


def output_dir(out: str | Path, shard: tuple[int, int] | None) -> Path:
    """Where this job writes: the store itself, or its part directory under --shard."""
    from video_adapt.data.prepare import part_name
    return Path(out) / part_name(*shard) if shard else Path(out)


def options_from_args(args: argparse.Namespace) -> PrepOptions:
    from video_adapt.data.prepare import PrepOptions
    return PrepOptions(short_side=args.short_side, keep_every=args.keep_every, codec=args.codec, quality=args.quality,
                       shard_size=args.shard_size)


def run(args: argparse.Namespace, classes: list[str], splits: list[SplitSpec], source: str, flip: bool,
        dataset: str = "other", multilabel: bool = False) -> int:
    """Prepare, print the summary and every output path; exit code 1 under --strict with failures."""
    from video_adapt.data.prepare import SplitSpec, prepare_store
    if args.limit is not None:
        splits = [SplitSpec(s.name, s.entries[:args.limit]) for s in splits]
    report = prepare_store(output_dir(args.out, args.shard), classes, splits, options_from_args(args), source=source,
                           flip=flip, workers=args.workers, overwrite=args.overwrite, dataset=dataset,
                           shard=args.shard, multilabel=multilabel)
    print_report(report)
    if args.shard:
        print(f"part {args.shard[0]} of {args.shard[1]} done; once all are: video-adapt prep merge {args.out}")
    return 1 if args.strict and report.failed else 0


def print_report(report: PrepReport) -> None:
    """The first failures, the summary line and every output path."""
    for split, vid, path, reason in report.failures[:10]:
        print(f"failed ({split}): {reason}", file=sys.stderr)
    if len(report.failures) > 10:
        print(f"... {len(report.failures) - 10} more in {report.out / 'failed.csv'}", file=sys.stderr)
    print(report.summary())
    for name in ("meta.json", "failed.csv"):
        print(f"{name}: {report.out / name}")
