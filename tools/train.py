"""Fine-tune a VideoMAE ViT on a tube store (AdaptFormer, VPT, linear probing or full fine-tuning).

    python tools/train.py --config configs/ssv2/adaptformer_8f.yaml model.pretrained=videomae_b.pth
    torchrun --nproc_per_node 8 tools/train.py --config configs/ssv2/adaptformer_8f.yaml
Overrides are dotted `key=value` pairs (train.lr=0.01 data.batch_size=16 resume=auto).
"""
from __future__ import annotations

import argparse
import sys

from video_adapt.checkpoint import CheckpointError
from video_adapt.config import ConfigError, load_config
from video_adapt.engine import TrainingError, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (may inherit with _base_)")
    parser.add_argument("--resume", help="'auto' (latest checkpoint in out_dir) or a checkpoint path")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"resume={args.resume}"] if args.resume else [])
    try:
        train(load_config(args.config, overrides))
    except (ConfigError, CheckpointError, TrainingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
