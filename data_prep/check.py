"""Validate a frame store (video_adapt.data.check): every frame decodes to its video's size, labels are in range, counts match meta.json;
print a summary.

    video-adapt prep check data/ssv2
Exit code 0 when the store is sound, 1 when a problem was found (each printed on one line).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    args = parser.parse_args(argv)
    from video_adapt.data.check import check_store
    from video_adapt.data.datasets import split_statistics
    from video_adapt.data.store import FrameStore
    problems = check_store(args.store)
    if not problems:
        store = FrameStore(args.store)
        meta = store.meta
        print(f"{args.store}: {len(store.classes)} classes, dataset {meta.dataset}, every "
              f"{'frame' if meta.keep_every == 1 else str(meta.keep_every) + ' frames'}, short side "
              f"{meta.short_side or 'as decoded'}, {meta.codec}, flips {'allowed' if meta.flip else 'off'}")
        for split, info in split_statistics(store).items():
            per_class = info["per_class"]
            print(f"  {split}: {info['videos']} videos ({info['failed']} failed at prep), "
                  f"{info['frames']} frames, {info['bytes'] / 2**20:.1f} MB; videos per class "
                  f"min {min(per_class)} / max {max(per_class)}")
        print("OK")
        return 0
    for p in problems:
        print(f"problem: {p}")
    print(f"{len(problems)} problem(s) found")
    return 1


if __name__ == "__main__":
    sys.exit(main())
