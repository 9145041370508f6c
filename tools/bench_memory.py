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
The code is video_adapt/benchmarks/memory_fit.py.
On a GPU, `tools/bench_model.py --device cuda --batch auto` finds the real largest batch to compare with.
"""
from __future__ import annotations

import argparse
import sys

import torch

from video_adapt.benchmarks.memory_fit import estimate_rows, table
from video_adapt.console import command
from video_adapt.files import write_json_atomic
from video_adapt.models.methods import METHODS
from video_adapt.models.vit import SIZE_NAMES


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["base", "large", "huge"], choices=list(SIZE_NAMES))
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
    rows = estimate_rows(args.sizes, args.methods, frames=args.frames, img_size=args.img_size,
                         capacities=args.capacities, reserve=args.reserve, slack=args.slack, amp=amp,
                         strategies=tuple(args.strategies), world_size=args.world_size)
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
