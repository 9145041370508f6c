"""Which ViT sizes fit at which batch on a 24 GB and an 80 GB GPU, for full fine-tuning and AdaptFormer, with and
without activation checkpointing: an estimate from exact peak measurements of 2- and 3-block models on the CPU
(video_adapt.models.memory), at the real clip size.

    python tools/bench_memory.py                          # ViT-B/L/H at 16 x 224, bf16 autocast
    python tools/bench_memory.py --sizes base --frames 8 --capacities 24 40 80
    python tools/bench_memory.py --smoke                  # seconds (used by the tests)

The peak of live tensor bytes (weights, AdamW state, gradients, saved activations, temporaries) is exact on the
CPU under bf16 autocast; a GPU adds its context, workspaces and fragmentation (--reserve, --slack), and its autocast
and attention kernels may keep slightly different tensors. Step time with checkpointing on and off is measured by
`tools/bench_model.py --checkpointing`.
On a GPU, `tools/bench_model.py --device cuda --batch auto` finds the real largest batch to compare with.
"""
from __future__ import annotations

import argparse
import sys
from functools import partial

import torch

from video_adapt import create_model
from video_adapt.console import command
from video_adapt.files import write_json_atomic
from video_adapt.models.memory import GiB, estimate_training_memory
from video_adapt.models.tuning import METHODS
from video_adapt.models.vit import vit_config

SIZES = {"nano": "vit_nano_patch8_32", "tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224", "base": "vit_base_patch16_224",
         "large": "vit_large_patch16_224", "huge": "vit_huge_patch16_224"}


def state_bytes(model: torch.nn.Module) -> int:
    """fp32 weights, and fp32 gradients and two AdamW moments for what trains (part of the measured peak)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 4 * total + 12 * trainable


def estimate_rows(sizes: list[str], methods: list[str], frames: int, img_size: int, capacities: list[float],
                  reserve: float, slack: float, amp: torch.dtype | None) -> list[dict]:
    rows = []
    for size in sizes:
        for method in methods:
            for checkpointing in (False, True):
                build = partial(create_model, SIZES[size], num_classes=174, num_frames=frames, img_size=img_size,
                                tuning=method, use_checkpoint=checkpointing)
                depth = vit_config(SIZES[size]).depth
                with torch.device("meta"):  # only to count parameters
                    full_depth = build(depth=depth)
                estimate = estimate_training_memory(lambda blocks: build(depth=blocks), depth, frames, img_size, amp)
                row = {"model": SIZES[size], "method": method, "checkpointing": checkpointing, "frames": frames,
                       "img_size": img_size, "state_gib": state_bytes(full_depth) / GiB, "fixed_gib": estimate.fixed / GiB,
                       "per_clip_mib": estimate.per_clip / 2**20, "batch_1_gib": estimate.total(1) / GiB}
                for capacity in capacities:
                    row[f"batch @ {capacity:g} GB"] = estimate.largest_batch(int(capacity * 1e9), reserve * GiB, slack)
                rows.append(row)
                print(f"{SIZES[size]:<24}{method:<12}{'ckpt' if checkpointing else '    '}  "
                      f"{row['per_clip_mib']:.0f} MiB/clip", flush=True)
    return rows


def table(rows: list[dict], capacities: list[float]) -> str:
    head = " | ".join(f"largest batch, {c:g} GB" for c in capacities)
    lines = [f"| model | method | checkpointing | state GiB | peak, batch 1 GiB | per clip MiB | {head} |",
             "|---|---|---|---|---|---|" + "---|" * len(capacities)]
    for r in rows:
        fits = " | ".join(str(r[f"batch @ {c:g} GB"]) for c in capacities)
        lines.append(f"| {r['model']} | {r['method']} | {'on' if r['checkpointing'] else 'off'} | {r['state_gib']:.2f} | "
                     f"{r['batch_1_gib']:.2f} | {r['per_clip_mib']:.0f} | {fits} |")
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["base", "large", "huge"], choices=list(SIZES))
    parser.add_argument("--methods", nargs="+", default=["full", "adaptformer"],
                        choices=METHODS)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--capacities", type=float, nargs="+", default=[24, 80], help="GPU memory, GB")
    parser.add_argument("--reserve", type=float, default=1.5, help="GiB for the CUDA context and workspaces")
    parser.add_argument("--slack", type=float, default=0.10, help="fraction lost to allocator fragmentation")
    parser.add_argument("--amp", default="bf16", choices=["bf16", "off"])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.frames, args.img_size = ["nano"], 8, 64
    amp = torch.bfloat16 if args.amp == "bf16" else None
    rows = estimate_rows(args.sizes, args.methods, args.frames, args.img_size, args.capacities, args.reserve,
                         args.slack, amp)
    print()
    print(table(rows, args.capacities))
    if args.json:
        write_json_atomic(args.json, rows)
        print(f"rows: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
