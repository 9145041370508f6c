"""Prepare Something-Something v2 as distributed: `<id>.webm` videos and the label JSON files.

    video-adapt prep ssv2 --videos 20bn-something-something-v2 --labels labels --out data/ssv2 --workers 16

--labels holds labels.json (template -> class index as a string), train.json and validation.json (entries with
`id`, `label`, `template` with [something] brackets, `placeholders`) and optionally test.json (ids only).
Templates are matched to labels.json with the brackets removed; unknown templates stop the job and are listed.
Every frame is stored at the decoded size (240 px high for SSv2); the store records `dataset: ssv2` and no horizontal
flip (left/right is in the labels), so the data protocols pick their SSv2 settings at training time.
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
    parser.add_argument("--videos", type=Path, required=True, help="folder of <id>.webm files")
    parser.add_argument("--extension", default="webm",
                        help="the videos' extension: webm as distributed, mp4 after the official H.264 re-encoding")
    parser.add_argument("--labels", type=Path, required=True, help="folder with labels.json, train.json, validation.json")
    parser.add_argument("--with-test", action="store_true", help="also prepare test.json (no labels)")
    add_common_options(parser)
    args = parser.parse_args(argv)
    from video_adapt.data.listing import ssv2_classes, ssv2_entries
    from video_adapt.data.prepare import SplitSpec
    videos = existing_dir(args.videos)
    classes = ssv2_classes(args.labels)
    ext = args.extension.lstrip(".")
    splits = [SplitSpec("train", ssv2_entries(args.labels, "train.json", videos, classes, extension=ext)),
              SplitSpec("val", ssv2_entries(args.labels, "validation.json", videos, classes, extension=ext))]
    if args.with_test:
        splits.append(SplitSpec("test", ssv2_entries(args.labels, "test.json", videos, classes, False, extension=ext)))
    return run(args, classes, splits, source=f"ssv2 {videos}", flip=False, dataset="ssv2")


if __name__ == "__main__":
    sys.exit(main())
