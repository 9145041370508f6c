"""Print trainable / total parameter counts of a preset under each tuning method.

    video-adapt params --model vit_base_patch16_224 --tuning adaptformer
"""
from __future__ import annotations

import argparse
import sys

from video_adapt import create_model, parameter_report
from video_adapt.console import command
from video_adapt.models.tuning import METHODS
from video_adapt.models.vit import PRESETS


def format_report(title: str, report: dict) -> str:
    rows = [f"{title}", f"{'group':<10}{'total':>14}{'trainable':>14}"]
    for group, counts in report["groups"].items():
        rows.append(f"{group:<10}{counts['total']:>14,}{counts['trainable']:>14,}")
    rows.append(f"{'all':<10}{report['total']:>14,}{report['trainable']:>14,}")
    rows.append(f"trainable share {100 * report['trainable_ratio']:.2f}%  |  "
                f"added by the method {report['added']:,} ({100 * report['added_ratio']:.2f}% of the backbone)")
    return "\n".join(rows)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_patch16_224", choices=sorted(PRESETS))
    parser.add_argument("--tuning", nargs="+", default=["adaptformer"], choices=METHODS)
    parser.add_argument("--num-classes", type=int, default=174)
    parser.add_argument("--bottleneck", type=int, default=64)
    parser.add_argument("--vpt-tokens", type=int, default=1)
    parser.add_argument("--vpt-mode", default="deep", choices=["deep", "shallow"])
    args = parser.parse_args(argv)
    for method in args.tuning:
        model = create_model(args.model, num_classes=args.num_classes, tuning=method, bottleneck=args.bottleneck,
                             vpt_tokens=args.vpt_tokens, vpt_mode=args.vpt_mode)
        print(format_report(f"{args.model} / {method} / {args.num_classes} classes", parameter_report(model)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
