"""Prepare HMDB51: `<class>/<name>.avi` videos and the official split files.

    python -m data_prep.hmdb51 --videos hmdb51 --splits testTrainMulti_7030_splits --split 1 --out data/hmdb51_split1

Split files are `<class>_test_split<k>.txt` with lines `<name>.avi <0|1|2>` (1 train, 2 test, 0 unused).
Every frame is stored at the decoded size (320x240 for HMDB51); the store records `dataset: hmdb51` and that
horizontal flips keep the labels. Sampling and test views are chosen at training time by the data protocol.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.common import add_common_options, fail, run
from video_adapt.console import command
from video_adapt.data.prepare import PrepError, SplitSpec, VideoEntry

SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>[123])\.txt$")


def hmdb51_splits(videos: Path, splits: Path, k: int) -> tuple[list[str], list[VideoEntry], list[VideoEntry]]:
    """Classes (sorted split-file names) and the train/test entries of split k."""
    if not splits.is_dir():
        raise PrepError(f"{splits}: no such directory")
    files = sorted(p for p in splits.iterdir() if (m := SPLIT_FILE.match(p.name)) and int(m["k"]) == k)
    if not files:
        raise PrepError(f"{splits}: no <class>_test_split{k}.txt files")
    classes = [SPLIT_FILE.match(p.name)["cls"] for p in files]
    train, test = [], []
    for label, path in enumerate(files):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise PrepError(f"{path}:{n}: expected '<name>.avi <0|1|2>', got {line!r}")
            name, tag = parts
            entry = VideoEntry(f"{classes[label]}/{Path(name).stem}", str(videos / classes[label] / name), label)
            if tag == "1":
                train.append(entry)
            elif tag == "2":
                test.append(entry)
    return classes, train, test


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, required=True, help="folder of <class>/<name>.avi")
    parser.add_argument("--splits", type=Path, required=True, help="folder of <class>_test_split<k>.txt files")
    parser.add_argument("--split", type=int, choices=[1, 2, 3], default=1)
    add_common_options(parser)
    args = parser.parse_args(argv)
    try:
        if not args.videos.is_dir():
            raise PrepError(f"{args.videos}: no such directory")
        classes, train, test = hmdb51_splits(args.videos, args.splits, args.split)
    except PrepError as err:
        return fail(str(err))
    return run(args, classes, [SplitSpec("train", train), SplitSpec("test", test)],
               source=f"hmdb51 split {args.split} {args.videos}", flip=True, dataset="hmdb51")


if __name__ == "__main__":
    sys.exit(main())
