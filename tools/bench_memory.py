"""Which ViT sizes fit at which batch on a 24 GB and an 80 GB GPU, for full fine-tuning and AdaptFormer, with and
without activation checkpointing (video_adapt.models.memory), at the real clip size.

    python tools/bench_memory.py                          # ViT-B/L/H at 16 x 224, bf16 autocast
    python tools/bench_memory.py --sizes base --frames 8 --capacities 24 40 80
    python tools/bench_memory.py --smoke                  # seconds (used by the tests)
    python tools/bench_memory.py --sizes giant --strategies ddp fsdp --world-size 8 --capacities 40 80 141

`--strategies fsdp` adds rows for sharded training (video_adapt.sharding): the state each GPU holds is 1/world of the
weights, gradients and AdamW moments plus two gathered blocks and the root group (`sharded_state_bytes`); the input
and the saved activations (autocast's bf16 weight copies among them) are the same as under DDP.

What is counted: the state (fp32 weights; gradients and AdamW moments of what trains), the input and every tensor
autograd saves for the backward (under checkpointing the blocks' inputs and one block recomputed), counted on 2- and
3-block models and extended to the full depth. That count does not depend on which kernels the CPU (or a GPU) runs.
What is not: kernel temporaries and workspaces, the gradients flowing through the backward, fragmentation; the fit
leaves --reserve GiB and --slack of the rest for them. The last column is the CPU profiler's true peak of a training
step of the 2-block model at batch 2, temporaries included, over its count: what this CPU's kernels add (another
CPU's, or a GPU's, add other amounts). Step time with checkpointing on and off is measured by
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
from video_adapt.models.memory import (FIT_BATCHES, FIT_DEPTHS, GiB, counted_step_bytes, estimate_training_memory,
                                       peak_step_bytes, state_bytes)
from video_adapt.models.tuning import METHODS
from video_adapt.models.vit import vit_config
from video_adapt.sharding import sharded_state_bytes

SIZES = {"nano": "vit_nano_patch8_32", "tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224", "base": "vit_base_patch16_224",
         "large": "vit_large_patch16_224", "huge": "vit_huge_patch16_224", "giant": "vit_giant_patch14_224"}


def cpu_peak_over_count(build, frames: int, img_size: int, amp: torch.dtype | None) -> float:
    """The CPU's true forward + backward peak (its kernels' temporaries included) over the count, for the smallest
    model the fit uses."""
    torch.manual_seed(0)
    model = build(FIT_DEPTHS[0])
    clips = torch.randn(FIT_BATCHES[0], model.cfg.in_chans, frames, img_size, img_size)
    return peak_step_bytes(model, clips, amp)[0] / counted_step_bytes(model, clips, amp)


def estimate_rows(sizes: list[str], methods: list[str], frames: int, img_size: int, capacities: list[float],
                  reserve: float, slack: float, amp: torch.dtype | None, strategies: tuple[str, ...] = ("ddp",),
                  world_size: int = 8) -> list[dict]:
    rows = []
    for size in sizes:
        for method in methods:
            for checkpointing in (False, True):
                build = partial(create_model, SIZES[size], num_classes=174, num_frames=frames, img_size=img_size,
                                tuning=method, use_checkpoint=checkpointing)
                depth = vit_config(SIZES[size]).depth
                with torch.device("meta"):  # only to count parameters
                    full_depth = build(depth=depth)
                counted = estimate_training_memory(lambda blocks: build(depth=blocks), depth, frames, img_size, amp)
                peak_ratio = cpu_peak_over_count(lambda blocks: build(depth=blocks), frames, img_size, amp)
                for strategy in strategies:
                    state = state_bytes(full_depth)
                    estimate = counted
                    if strategy == "fsdp":
                        estimate = counted.with_state(state, sharded_state_bytes(full_depth, world_size))
                        state = sharded_state_bytes(full_depth, world_size)
                    row = {"model": SIZES[size], "method": method, "checkpointing": checkpointing, "frames": frames,
                           "img_size": img_size, "strategy": strategy,
                           "world_size": world_size if strategy == "fsdp" else None, "state_gib": state / GiB,
                           "fixed_gib": estimate.fixed / GiB, "per_clip_mib": estimate.per_clip / 2**20,
                           "batch_1_gib": estimate.total(1) / GiB, "cpu_peak_over_count": peak_ratio}
                    for capacity in capacities:
                        row[f"batch @ {capacity:g} GB"] = estimate.largest_batch(int(capacity * 1e9), reserve * GiB,
                                                                                slack)
                    rows.append(row)
                print(f"{SIZES[size]:<24}{method:<12}{'ckpt' if checkpointing else '    '}  "
                      f"{row['per_clip_mib']:.0f} MiB/clip", flush=True)
    return rows


def table(rows: list[dict], capacities: list[float]) -> str:
    """Markdown table; a `strategy` column appears when some row is sharded (its state is per GPU)."""
    sharded = any(r.get("strategy") == "fsdp" for r in rows)
    head = " | ".join(f"largest batch, {c:g} GB" for c in capacities)
    lines = [f"| model | method |{' strategy |' if sharded else ''} checkpointing | state GiB | count, batch 1 GiB "
             f"| per clip MiB | {head} | CPU peak / count, {FIT_DEPTHS[0]} blocks, batch {FIT_BATCHES[0]} |",
             "|---|---|" + ("---|" if sharded else "") + "---|---|---|---|" + "---|" * len(capacities) + "---|"]
    for r in rows:
        fits = " | ".join(str(r[f"batch @ {c:g} GB"]) for c in capacities)
        strategy = f" FSDP x{r['world_size']} |" if r.get("strategy") == "fsdp" else " DDP |"
        lines.append(f"| {r['model']} | {r['method']} |{strategy if sharded else ''} "
                     f"{'on' if r['checkpointing'] else 'off'} | {r['state_gib']:.2f} | "
                     f"{r['batch_1_gib']:.2f} | {r['per_clip_mib']:.0f} | {fits} | {r['cpu_peak_over_count']:.2f} |")
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
    parser.add_argument("--strategies", nargs="+", default=["ddp"], choices=["ddp", "fsdp"],
                        help="ddp: every GPU holds the whole state; fsdp: sharded over --world-size GPUs")
    parser.add_argument("--world-size", type=int, default=8, help="GPUs the fsdp rows shard over")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.frames, args.img_size = ["nano"], 8, 64
    amp = torch.bfloat16 if args.amp == "bf16" else None
    rows = estimate_rows(args.sizes, args.methods, args.frames, args.img_size, args.capacities, args.reserve,
                         args.slack, amp, tuple(args.strategies), args.world_size)
    print()
    print("Counted: state, input and what autograd saves for the backward (kernel-independent). Not counted: kernel")
    print(f"temporaries and workspaces, left to the {args.reserve:g} GiB reserve and the {args.slack:.0%} slack.")
    print(table(rows, args.capacities))
    if args.json:
        write_json_atomic(args.json, rows)
        print(f"rows: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
