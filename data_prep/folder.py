"""Prepare your own videos: class folders (`<class>/<video>`) or a list file of `path label` lines.

    python -m data_prep.folder --videos my_clips/train --val-videos my_clips/val --out data/mine
    python -m data_prep.folder --list train.csv --val-list val.csv --root videos/ --out data/mine

List files: one video per line, `path label` separated by a space, tab or comma (VideoMAE's train.csv /
val.csv work as they are); the label is a class index or a class name; paths are relative to --root and
may not escape it. Without a validation set, --val-fraction holds out part of the training videos.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python data_prep/folder.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.common import add_common_options, fail, run
from video_adapt.console import command
from video_adapt.data.decode import VIDEO_EXTENSIONS
from video_adapt.data.prepare import PrepError, SplitSpec, VideoEntry


def scan_class_folders(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[VideoEntry]]:
    """`root/<class>/<video>`: classes are the sorted folder names (or the given list)."""
    if not root.is_dir():
        raise PrepError(f"{root}: no such directory")
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    classes = classes or found
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise PrepError(f"{root}: class folders {unknown} are not among the training classes")
    entries = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and (path.suffix.lower() in VIDEO_EXTENSIONS or not path.suffix):
                entries.append(VideoEntry(str(path.relative_to(root).with_suffix("")), str(path), label))
    if not entries:
        raise PrepError(f"{root}: no videos found in class folders")
    return classes, entries


def read_list(path: Path, root: Path, classes: list[str] | None) -> tuple[list[str], list[VideoEntry]]:
    """`path label` lines; labels are indices or class names. Paths escaping `root` are refused per line."""
    if not path.is_file():
        raise PrepError(f"{path}: no such list file")
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"[,\t ]+", line)
        if len(parts) < 2:
            raise PrepError(f"{path}:{n}: expected 'path label', got {line!r}")
        pairs.append((parts[0], parts[-1] if len(parts) == 2 else parts[1], n))
    names_are_ints = all(re.fullmatch(r"-?\d+", label) for _, label, _ in pairs)
    if classes is None:
        if names_are_ints:
            classes = [str(i) for i in range(max((int(l) for _, l, _ in pairs), default=-1) + 1)]
        else:
            classes = sorted({label for _, label, _ in pairs})
    root_resolved = root.resolve()
    entries = []
    for rel, label, n in pairs:
        if names_are_ints:
            index = int(label)
            if not 0 <= index < len(classes):
                raise PrepError(f"{path}:{n}: label {index} out of range 0..{len(classes) - 1}")
        elif label in classes:
            index = classes.index(label)
        else:
            raise PrepError(f"{path}:{n}: unknown class {label!r}")
        full = (root / rel).resolve()
        error = None
        if root_resolved not in full.parents and full != root_resolved:
            error = f"{rel}: path escapes --root {root}; refused"
        entries.append(VideoEntry(os.path.splitext(rel)[0], str(full), index, error))
    return classes, entries


def holdout(entries: list[VideoEntry], fraction: float, seed: int) -> tuple[list[VideoEntry], list[VideoEntry]]:
    """Every class keeps at least one training video; about `fraction` of each class goes to validation."""
    import numpy as np
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in sorted({e.label for e in entries}):
        items = [e for e in entries if e.label == label]
        order = rng.permutation(len(items))
        k = min(int(round(fraction * len(items))), len(items) - 1)
        val += [items[i] for i in sorted(order[:k])]
        train += [items[i] for i in sorted(order[k:])]
    return train, val


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
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                        help="allow horizontal flips in training (off when left/right matters)")
    add_common_options(parser, sampling="dense")
    args = parser.parse_args(argv)
    try:
        if args.videos:
            classes, train = scan_class_folders(args.videos)
        else:
            classes, train = read_list(args.list, args.root, None)
        val = []
        if args.val_videos:
            _, val = scan_class_folders(args.val_videos, classes)
        elif args.val_list:
            _, val = read_list(args.val_list, args.root, classes)
        elif args.val_fraction > 0:
            train, val = holdout(train, args.val_fraction, args.seed)
    except PrepError as err:
        return fail(str(err))
    splits = [SplitSpec("train", train, "train")] + ([SplitSpec("val", val, "eval")] if val else [])
    return run(args, classes, splits, source=str(args.videos or args.list), flip=args.flip)


if __name__ == "__main__":
    sys.exit(main())
