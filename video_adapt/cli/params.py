"""Print trainable / total parameter counts of a preset under each tuning method.

    video-adapt params --model vit_base_patch16_224 --tuning adaptformer vpt lora bitfit st_adapter linear full

Each method is sized as its registry entry and configs/methods/<method>.yaml say (the papers' sizes: AdaptFormer d_hat 64, VPT 1 token,
LoRA rank 8 on qkv, ST-Adapter 384 wide); the flags below override that. Models are built on the meta device.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from video_adapt.console import command
from video_adapt.models.methods import LORA_TARGETS, METHODS, ST_POSITIONS, VPT_MODES
from video_adapt.models.presets import PRESETS


def format_report(title: str, report: dict) -> str:
    rows = [f"{title}", f"{'group':<10}{'total':>14}{'trainable':>14}"]
    for group, counts in report["groups"].items():
        rows.append(f"{group:<10}{counts['total']:>14,}{counts['trainable']:>14,}")
    rows.append(f"{'all':<10}{report['total']:>14,}{report['trainable']:>14,}")
    rows.append(f"trainable share {100 * report['trainable_ratio']:.2f}%  |  "
                f"added by the method {report['added']:,} ({100 * report['added_ratio']:.2f}% of the backbone)")
    return "\n".join(rows)


def method_options(method: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The method at its paper's size (its registry entry, as configs/methods/<method>.yaml), then `overrides`."""
    from video_adapt.models.methods import method_spec
    return {**method_spec(method).paper_size, **overrides}


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_patch16_224", choices=sorted(PRESETS))
    parser.add_argument("--tuning", nargs="+", default=["adaptformer"], choices=METHODS)
    parser.add_argument("--num-classes", type=int, default=174)
    parser.add_argument("--bottleneck", type=int, help="AdaptFormer's d_hat / ST-Adapter's width")
    parser.add_argument("--vpt-tokens", type=int)
    parser.add_argument("--vpt-mode", choices=VPT_MODES)
    parser.add_argument("--lora-rank", type=int)
    parser.add_argument("--lora-targets", nargs="+", choices=list(LORA_TARGETS))
    parser.add_argument("--st-position", choices=ST_POSITIONS)
    args = parser.parse_args(argv)
    import torch

    from video_adapt import create_model, parameter_report
    given = {key: getattr(args, key) for key in ("bottleneck", "vpt_tokens", "vpt_mode", "lora_rank", "lora_targets",
                                                  "st_position") if getattr(args, key) is not None}
    summary = []
    for method in args.tuning:
        with torch.device("meta"):
            model = create_model(args.model, num_classes=args.num_classes, tuning=method,
                                 **method_options(method, given))
        report = parameter_report(model)
        print(format_report(f"{args.model} / {method} / {args.num_classes} classes", report))
        print()
        summary.append(f"| {method} | {report['added']:,} | {report['trainable']:,} | "
                       f"{100 * report['trainable_ratio']:.2f}% |")
    if len(summary) > 1:
        print("| method | added | trainable (head included) | trainable share |\n|---|---|---|---|")
        print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
