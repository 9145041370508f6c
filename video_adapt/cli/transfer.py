"""The transfer suite: AdaptFormer on a backbone against AdaptFormer on a random frozen backbone, on temporal task
families from generators the backbone's pretraining never saw (other motions, other textures and object kinds, two
interacting objects, a moving camera; video_adapt/data/transfer.py). Each family's videos are generated as mp4
files and prepared into a frame store; the runs use the embedded benchmark's recipe (configs/demo/base.yaml).

    video-adapt transfer                                   # the demo backbone, 8 frames, 3 seeds (docs/TRANSFER.md)
    video-adapt transfer --backbone my_backbone.safetensors --families motion camera --seeds 0
Finished runs are reused and interrupted ones resume; a backbone's runs are kept apart by its file's hash.
"""
from __future__ import annotations

import argparse
import sys

from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="demo", help="a backbone file, or 'demo' (the committed one)")
    parser.add_argument("--out", default="runs/transfer")
    parser.add_argument("--grid", help="default: configs/demo/grid_transfer.yaml")
    parser.add_argument("--families", nargs="+", help="default: the grid's (motion appearance interaction camera)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the grid's")
    parser.add_argument("--frames", type=int, nargs="+", help="default: the grid's")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides for every run")
    args = parser.parse_args(argv)
    from video_adapt.transfer_suite import run_transfer
    run_transfer(args.out, args.backbone, args.seeds, args.frames, args.families, args.overrides, args.grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
