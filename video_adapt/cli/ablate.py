"""The article's parameter-accuracy trade-off and ablations, each one command with a table and a plot.

    video-adapt ablate --study tradeoff --config demo/base --frames 8 --out runs/ablate \
        data.root=runs/demo/data/store model.pretrained=demo

Studies: tradeoff (every method's trainable parameters against accuracy: VPT with 1-16 prompt tokens, AdaptFormer
with d_hat 1-256, LoRA with rank 1-16, ST-Adapter with width 2-128, BitFit, linear probing, full fine-tuning at
--full-lr), scale (s = 0.01 ... 1 and learnable), position (parallel vs sequential), layers (first / last block(s)
vs all), input (LN(x') vs raw x'), init (article / lora / official adapter init x both inputs), or all.
Finished runs are reused; interrupted ones resume.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from video_adapt.console import command, print_outputs


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="all",
                        choices=["all", "tradeoff", "scale", "position", "layers", "input", "init"])
    parser.add_argument("--full-lr", type=float,
                        help="full fine-tuning's lr in the trade-off (default: a tenth of the config's, as the demo grid)")
    parser.add_argument("--config", help="base training config")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="runs/ablate")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides for every run")
    args = parser.parse_args(argv)
    from video_adapt.config import load_config
    from video_adapt.experiments import aggregate, run_grid, studies, write_comparison
    from video_adapt.models.vit import vit_config
    base = load_config(args.config, args.overrides)
    depth = vit_config(base.model.name, **base.model.arch).depth
    if args.full_lr is not None:
        full = [f"train.lr={args.full_lr}"]
    else:  # fine-tuning every weight at the adapters' learning rate wrecks the pretrained backbone
        full = [f"train.lr={base.train.lr / 10}"] if base.train.lr is not None else \
            [f"train.base_lr={base.train.base_lr / 10}"]
    every = studies(depth, full)
    chosen = every if args.study == "all" else {args.study: every[args.study]}
    for name, variants in chosen.items():
        out = Path(args.out) / name
        cells = aggregate(run_grid(args.config, args.overrides, variants, [args.frames], args.seeds, out))
        table, paths = write_comparison(cells, out, study=name)
        print(f"\n## {name}\n{table}")
        print_outputs(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
