"""VideoMAE masked-autoencoder pretraining as the official code runs it, from a frame store or synthetic clips.

    video-adapt pretrain store=data/ssv2 out_dir=runs/pretrain_ssv2        # the official ViT-B SSv2 settings
    video-adapt pretrain --config pretrain/demo epochs=5       # the embedded benchmark's small model

Settings are the fields of video_adapt.pretraining.PretrainConfig, from a YAML file (--config, may inherit with
_base_) and `key=value` overrides, checked like training configs. Writes OUT/checkpoint.pth in the official
VideoMAE pretrain layout (loadable by load_pretrained), OUT/train_state.pt to resume from, and
OUT/pretrain_summary.json.
"""
from __future__ import annotations

import argparse
import sys

from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML of PretrainConfig fields (may inherit with _base_)")
    parser.add_argument("--no-resume", action="store_true", help="start again even if out_dir has a state")
    parser.add_argument("overrides", nargs="*", help="key=value settings (e.g. epochs=60 store=data/ssv2)")
    args = parser.parse_args(argv)
    from video_adapt.pretraining import load_pretrain_config, pretrain
    cfg = load_pretrain_config(args.config, args.overrides)
    summary = pretrain(cfg, resume=not args.no_resume)
    print(f"final loss {summary['final_loss']:.4f} after {summary['steps']} steps, {summary['wall_time_s']:.0f} s")
    print(f"checkpoint: {summary['checkpoint']}")
    print(f"summary: {cfg.out_dir}/pretrain_summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
