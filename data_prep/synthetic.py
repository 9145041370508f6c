"""Generate the embedded benchmark: real encoded mp4 videos of an SSv2-like task where temporal order decides
the class (see video_adapt.data.synthetic), with annotations, and optionally its frame store.

    video-adapt prep synthetic --out data/synthetic --prep
writes data/synthetic/videos/{train,val}/<class>/<id>.mp4, train.csv and val.csv (`path label`, usable by
`data_prep.folder --list`), classes.txt, and with --prep the store data/synthetic/store (with --shard I/N only part
I of it, data/synthetic/store/part-I-of-N, to join with `video-adapt prep merge data/synthetic/store`).

    video-adapt prep synthetic --out data/multi --classes 4 --max-actions 3 --prep
makes a multi-label task instead: every video shows 1 to 3 different actions at once, each by its own actor, listed
as `path l1 l2 ...` and prepared as a multi-label store (training: sigmoid + BCE, mAP).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.common import add_shard_option, print_report
from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--classes", type=int, help="number of classes (default: all of the generator's)")
    parser.add_argument("--videos-per-class", type=int, default=100, help="training videos per class")
    parser.add_argument("--val-per-class", type=int, default=50, help="validation videos per class")
    parser.add_argument("--frames", type=int, default=16, help="frames per generated video")
    parser.add_argument("--size", type=int, default=64, help="frame width and height in pixels")
    parser.add_argument("--distractors", type=int, help="distractor shapes per video (default: the benchmark's)")
    parser.add_argument("--noise", type=float,
                        help="per-frame pixel noise, std in grey levels (default: the benchmark's)")
    parser.add_argument("--max-actions", type=int, default=1,
                        help="more than 1: a multi-label task with 1..N simultaneous actions per video")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prep", action="store_true", help="also prepare the frame store OUT/store")
    parser.add_argument("--workers", type=int, default=1)
    add_shard_option(parser)
    args = parser.parse_args(argv)
    from video_adapt.data.synthetic import CLASSES, SyntheticSpec, make_synthetic_store, write_dataset
    from video_adapt.errors import ConfigError
    args.classes = len(CLASSES) if args.classes is None else args.classes
    if not 1 <= args.classes <= len(CLASSES):
        raise ConfigError(f"--classes must be between 1 and {len(CLASSES)}")
    if args.shard and not args.prep:
        raise ConfigError("--shard splits the store's preparation; it needs --prep")
    if not 1 <= args.max_actions <= args.classes:
        raise ConfigError(f"--max-actions must be between 1 and the {args.classes} classes")
    given = {k: getattr(args, k) for k in ("distractors", "noise") if getattr(args, k) is not None}
    spec = SyntheticSpec(size=args.size, frames=args.frames, num_classes=args.classes, max_actions=args.max_actions,
                         **given)
    if args.prep:
        report = make_synthetic_store(args.out, spec, args.videos_per_class, args.val_per_class, args.seed,
                                      workers=args.workers, shard=args.shard)
        print_report(report)
        print(f"store: {report.out}")
    else:
        write_dataset(args.out, spec, args.videos_per_class, args.val_per_class, args.seed)
    print(f"videos: {args.out / 'videos'}")
    for split in ("train", "val"):
        print(f"{split} list: {args.out / f'{split}.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
