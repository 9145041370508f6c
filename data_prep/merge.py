"""Join the parts of a sharded preparation (`--shard I/N` jobs) into one frame store, without copying frames.

    video-adapt prep merge data/ssv2                          # every data/ssv2/part-*-of-N
    video-adapt prep merge data/ssv2 /scratch/part-0-of-8 ...  # or the part directories, in any order

The parts must come from the same options and source list, be finished and cover every video exactly once;
otherwise nothing is written and one line names the part (exit code 2). Shard files are hard-linked (the parts
must be on the output's filesystem); failed.csv, videos.csv and meta.json are rebuilt, meta.json last.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="store directory to write (usually where the parts are)")
    parser.add_argument("parts", type=Path, nargs="*", help="part directories (default: OUT/part-*-of-*)")
    parser.add_argument("--remove-parts", action="store_true",
                        help="delete the part directories once the store is complete (their shard files live on in "
                             "the store)")
    args = parser.parse_args(argv)
    from video_adapt.data.merge import merge_parts
    report = merge_parts(args.out, args.parts or None, remove_parts=args.remove_parts)
    print(report.summary())
    for name in ("meta.json", "failed.csv"):
        print(f"{name}: {args.out / name}")
    print(f"check it: video-adapt prep check {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
