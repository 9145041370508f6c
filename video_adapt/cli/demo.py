"""The embedded benchmark, end to end, on CPU in minutes: generate the synthetic action videos, prepare the frame store,
fine-tune AdaptFormer, VPT, linear probing (plus a random-backbone AdaptFormer control and full fine-tuning) on a
small backbone pretrained by our own VideoMAE code at 2, 4 and 8 frames, test with multiple views, print the
comparison table and classify one freshly generated video file per class.

    video-adapt demo                       # one seed (the README's first command)
    video-adapt demo --seeds 0 1 2         # the README's table: mean +- std over three seeds
Finished runs are reused and interrupted ones resume, so the command can be rerun at will.
"""
from __future__ import annotations

import argparse
import sys

from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: configs/demo/grid.yaml")
    parser.add_argument("--frames", type=int, nargs="+", help="default: configs/demo/grid.yaml")
    parser.add_argument("--variants", nargs="+", help="subset of the variants in configs/demo/grid.yaml")
    args = parser.parse_args(argv)
    from video_adapt.demo import run_demo
    run_demo(args.out, args.seeds, args.frames, args.variants)
    return 0


if __name__ == "__main__":
    sys.exit(main())
