"""Prepare your own videos: class folders (`<class>/<video>`) or a list file of `path label` lines.

    video-adapt prep folder --videos my_clips/train --val-videos my_clips/val --out data/mine
    video-adapt prep folder --list train.csv --val-list val.csv --root videos/ --out data/mine

List files: one video per line, `path label` separated by a space, tab or comma (VideoMAE's train.csv /
val.csv work as they are); the label is a class index or a class name; paths are relative to --root and
may not escape it. Without a validation set, --val-fraction holds out part of the training videos.

Multi-label tasks (several actions per video, Charades-style): --multilabel with list files whose lines carry the
video's set of labels after the path, `path l1 l2 l3` or `path,l1,l2` (indices or class names; a path alone is a
video with none of the classes). Class folders cannot say that a video has several labels.

    video-adapt prep folder --list train.csv --val-list val.csv --root videos/ --multilabel --out data/mine
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.common import add_common_options, run
from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", type=Path, help="training videos in class folders")
    src.add_argument("--list", type=Path, help="training list file (path label)")
    parser.add_argument("--val-videos", type=Path, help="validation videos in class folders")
    parser.add_argument("--val-list", type=Path, help="validation list file")
    parser.add_argument("--root", type=Path, default=Path("."), help="root of the paths in list files")
    parser.add_argument("--val-fraction", type=float, default=0.0, help="hold out this share of training videos")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the --val-fraction hold-out (every --shard job must use the same)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                        help="allow horizontal flips in training (off when left/right matters)")
    parser.add_argument("--multilabel", action="store_true",
                        help="list lines carry a set of labels per video (path l1 l2 ...); training uses sigmoid + BCE "
                             "and reports mAP")
    parser.add_argument("--dataset", default="other",
                        help="dataset kind recorded in the store; 'ssv2' picks VideoMAE's SSv2 protocol settings")
    add_common_options(parser)
    args = parser.parse_args(argv)
    from video_adapt.data.listing import holdout, read_list, scan_class_folders
    from video_adapt.data.prepare import PrepError, SplitSpec
    if args.multilabel and (args.videos or args.val_videos):
        raise PrepError("--multilabel needs list files (--list, --val-list): class folders give each video one label")
    if args.videos:
        classes, train = scan_class_folders(args.videos)
    else:
        classes, train = read_list(args.list, args.root, None, args.multilabel)
    val = []
    if args.val_videos:
        _, val = scan_class_folders(args.val_videos, classes)
    elif args.val_list:
        _, val = read_list(args.val_list, args.root, classes, args.multilabel)
    elif args.val_fraction > 0:
        train, val = holdout(train, args.val_fraction, args.seed)
    splits = [SplitSpec("train", train)] + ([SplitSpec("val", val)] if val else [])
    return run(args, classes, splits, source=str(args.videos or args.list), flip=args.flip,
               dataset=args.dataset, multilabel=args.multilabel)


if __name__ == "__main__":
    sys.exit(main())
