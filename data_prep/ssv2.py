"""Prepare Something-Something v2 as distributed: `<id>.webm` videos and the label JSON files.

    python -m data_prep.ssv2 --videos 20bn-something-something-v2 --labels labels --out data/ssv2 --workers 16

--labels holds labels.json (template -> class index as a string), train.json and validation.json (entries with
`id`, `label`, `template` with [something] brackets, `placeholders`) and optionally test.json (ids only).
Templates are matched to labels.json with the brackets removed; unknown templates stop the job and are listed.
Every frame is stored at the decoded size (240 px high for SSv2); the store records `dataset: ssv2` and no horizontal
flip (left/right is in the labels), so the data protocols pick their SSv2 settings at training time.

The official runs first re-encode every webm to H.264 mp4 (`ffmpeg -i <id>.webm -c:v libx264 <id>.mp4`,
AF:DATASET.md:9; VM:DATASET.md:9) and decode those; `--extension mp4` prepares such a folder (docs/PROTOCOLS.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.common import add_common_options, fail, run
from video_adapt.console import command
from video_adapt.data.prepare import PrepError, SplitSpec, VideoEntry


def read_json(path: Path):
    if not path.is_file():
        raise PrepError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PrepError(f"{path}: not valid JSON ({err})") from None


def ssv2_classes(labels_dir: Path) -> list[str]:
    """Class names ordered by their index in labels.json."""
    mapping = read_json(labels_dir / "labels.json")
    by_index = sorted(((int(i), name) for name, i in mapping.items()))
    if [i for i, _ in by_index] != list(range(len(by_index))):
        raise PrepError(f"{labels_dir / 'labels.json'}: class indices are not 0..{len(by_index) - 1}")
    return [name for _, name in by_index]


def ssv2_entries(labels_dir: Path, split_file: str, videos: Path, classes: list[str],
                 labelled: bool = True, extension: str = "webm") -> list[VideoEntry]:
    items = read_json(labels_dir / split_file)
    index = {name: i for i, name in enumerate(classes)}
    entries, unknown = [], set()
    for item in items:
        label = -1
        if labelled:
            template = item["template"].replace("[", "").replace("]", "")
            if template not in index:
                unknown.add(template)
                continue
            label = index[template]
        entries.append(VideoEntry(str(item["id"]), str(videos / f"{item['id']}.{extension}"), label))
    if unknown:
        shown = "; ".join(sorted(unknown)[:5])
        raise PrepError(f"{labels_dir / split_file}: {len(unknown)} templates not in labels.json: {shown}")
    return entries


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
    try:
        if not args.videos.is_dir():
            raise PrepError(f"{args.videos}: no such directory")
        classes = ssv2_classes(args.labels)
        ext = args.extension.lstrip(".")
        splits = [SplitSpec("train", ssv2_entries(args.labels, "train.json", args.videos, classes, extension=ext)),
                  SplitSpec("val", ssv2_entries(args.labels, "validation.json", args.videos, classes, extension=ext))]
        if args.with_test:
            splits.append(SplitSpec("test", ssv2_entries(args.labels, "test.json", args.videos, classes, False,
                                                         extension=ext)))
    except PrepError as err:
        return fail(str(err))
    return run(args, classes, splits, source=f"ssv2 {args.videos}", flip=False, dataset="ssv2")


if __name__ == "__main__":
    sys.exit(main())
