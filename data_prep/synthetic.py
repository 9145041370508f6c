"""Generate the embedded benchmark: real encoded mp4 videos of an SSv2-like task where temporal order decides
the class (see video_adapt.data.synthetic), with annotations, and optionally its frame store.

    python -m data_prep.synthetic --out data/synthetic --prep
writes data/synthetic/videos/{train,val}/<class>/<id>.mp4, train.csv and val.csv (`path label`, usable by
`data_prep.folder --list`), classes.txt, and with --prep the store data/synthetic/store (with --shard I/N only part
I of it, data/synthetic/store/part-I-of-N, to join with `python -m data_prep.merge data/synthetic/store`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm import tqdm

from video_adapt.console import command
from data_prep.common import add_shard_option, fail, output_dir, print_report
from video_adapt.data.prepare import PrepError, PrepOptions, SplitSpec, VideoEntry, prepare_store
from video_adapt.data.synthetic import CLASSES, SyntheticSpec, generate_clip, write_video


def write_dataset(out: Path, spec: SyntheticSpec, train_per_class: int, val_per_class: int, seed: int,
                  progress: bool = True) -> dict[str, list[VideoEntry]]:
    """Write (or complete) the videos and list files; an existing video is kept, so reruns resume."""
    classes = list(CLASSES[:spec.num_classes])
    splits = {"train": train_per_class, "val": val_per_class}
    lists: dict[str, list[VideoEntry]] = {}
    total = spec.num_classes * (train_per_class + val_per_class)
    bar = tqdm(total=total, desc="generating", unit="video", disable=not progress, file=sys.stderr)
    for s, (split, per_class) in enumerate(splits.items()):
        entries = []
        for label, name in enumerate(classes):
            folder = out / "videos" / split / name.replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                vid = f"{split}_{label:02d}_{i:05d}"
                path = folder / f"{vid}.mp4"
                if not path.exists():
                    rng = np.random.default_rng((seed, s, label, i))
                    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.mp4")  # shard jobs may race here
                    write_video(str(tmp), generate_clip(label, rng, spec))
                    tmp.replace(path)
                entries.append(VideoEntry(vid, str(path), label))
                bar.update(1)
        lists[split] = entries
        lines = [f"{Path(e.path).relative_to(out / 'videos')} {e.label}" for e in entries]
        (out / f"{split}.csv").write_text("\n".join(lines) + "\n")
    bar.close()
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    return lists


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--classes", type=int, default=len(CLASSES), help=f"number of classes (at most {len(CLASSES)})")
    parser.add_argument("--videos-per-class", type=int, default=100, help="training videos per class")
    parser.add_argument("--val-per-class", type=int, default=50, help="validation videos per class")
    parser.add_argument("--frames", type=int, default=16, help="frames per generated video")
    parser.add_argument("--size", type=int, default=64, help="frame width and height in pixels")
    parser.add_argument("--distractors", type=int, default=SyntheticSpec.distractors)
    parser.add_argument("--noise", type=float, default=SyntheticSpec.noise, help="per-frame pixel noise (std)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prep", action="store_true", help="also prepare the frame store OUT/store")
    parser.add_argument("--workers", type=int, default=1)
    add_shard_option(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.classes <= len(CLASSES):
        return fail(f"--classes must be between 1 and {len(CLASSES)}")
    if args.shard and not args.prep:
        return fail("--shard splits the store's preparation; it needs --prep")
    spec = SyntheticSpec(size=args.size, frames=args.frames, num_classes=args.classes, distractors=args.distractors,
                         noise=args.noise)
    lists = write_dataset(args.out, spec, args.videos_per_class, args.val_per_class, args.seed)
    print(f"videos: {args.out / 'videos'}")
    for split in lists:
        print(f"{split} list: {args.out / f'{split}.csv'} ({len(lists[split])} videos)")
    if args.prep:
        opts = PrepOptions(short_side=0, shard_size=2000)
        try:
            report = prepare_store(output_dir(args.out / "store", args.shard), list(CLASSES[:args.classes]),
                                   [SplitSpec("train", lists["train"]), SplitSpec("val", lists["val"])],
                                   opts, source=f"synthetic {spec}", flip=False, workers=args.workers,
                                   extra_meta={"dataset": "synthetic"}, shard=args.shard)
        except PrepError as err:
            return fail(str(err))
        print_report(report)
        print(f"store: {report.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
