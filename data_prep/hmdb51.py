"""Prepare HMDB51: `<class>/<name>.avi` videos and the official split files.

    video-adapt prep hmdb51 --videos hmdb51 --splits testTrainMulti_7030_splits --split 1 --out data/hmdb51_split1

Split files are `<class>_test_split<k>.txt` with lines `<name>.avi <0|1|2>` (1 train, 2 test, 0 unused).
Every frame is stored at the decoded size (320x240 for HMDB51); the store records `dataset: hmdb51` and that
horizontal flips keep the labels. Sampling and test views are chosen at training time by the data protocol.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.common import add_common_options, existing_dir, run
from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, required=True, help="folder of <class>/<name>.avi")
    parser.add_argument("--splits", type=Path, required=True, help="folder of <class>_test_split<k>.txt files")
    parser.add_argument("--split", type=int, choices=[1, 2, 3], default=1)
    add_common_options(parser)
    args = parser.parse_args(argv)
    from video_adapt.data.listing import hmdb51_splits
    from video_adapt.data.prepare import SplitSpec
    classes, train, test = hmdb51_splits(existing_dir(args.videos), args.splits, args.split)
    return run(args, classes, [SplitSpec("train", train), SplitSpec("test", test)],
               source=f"hmdb51 split {args.split} {args.videos}", flip=True, dataset="hmdb51")


if __name__ == "__main__":
    sys.exit(main())
