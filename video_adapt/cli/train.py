"""Fine-tune a VideoMAE ViT on a frame store or video files (AdaptFormer, VPT, linear probing, LoRA, BitFit, ST-Adapter, full).

    video-adapt train --config ssv2/adaptformer_8f model.pretrained=videomae_b.pth
    torchrun --nproc_per_node 8 -m video_adapt train --config ssv2/adaptformer_8f
Overrides are dotted `key=value` pairs (train.lr=0.01 data.batch_size=16 resume=auto).
"""
from __future__ import annotations

import argparse
import sys

from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (may inherit with _base_)")
    parser.add_argument("--resume", help="'auto' (latest checkpoint in out_dir) or a checkpoint path")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)
    from video_adapt.config import load_config
    from video_adapt.engine import train
    overrides = list(args.overrides) + ([f"resume={args.resume}"] if args.resume else [])
    train(load_config(args.config, overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
