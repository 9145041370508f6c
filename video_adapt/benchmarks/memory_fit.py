"""What tools/bench_memory.py computes: per model size, method and checkpointing, the counted training memory
(video_adapt.models.memory) extended to the full depth, under DDP or FSDP, the largest batch per GPU capacity, and
the CPU profiler's peak over the count as a cross-check."""
from __future__ import annotations

from functools import partial

import torch

from video_adapt import create_model
from video_adapt.models.memory import (FIT_BATCHES, FIT_DEPTHS, GiB, counted_step_bytes, estimate_training_memory,
                                       peak_step_bytes, state_bytes)
from video_adapt.models.vit import SIZE_NAMES, vit_config
from video_adapt.sharding import sharded_state_bytes

def cpu_peak_over_count(build, frames: int, img_size: int, amp: torch.dtype | None) -> float:
    """The CPU's true forward + backward peak (its kernels' temporaries included) over the count, for the smallest
    model the fit uses."""
    torch.manual_seed(0)
    model = build(FIT_DEPTHS[0])
    clips = torch.randn(FIT_BATCHES[0], model.cfg.in_chans, frames, img_size, img_size)
    return peak_step_bytes(model, clips, amp)[0] / counted_step_bytes(model, clips, amp)


def estimate_rows(sizes: list[str], methods: list[str], *, frames: int, img_size: int, capacities: list[float],
                  reserve: float, slack: float, amp: torch.dtype | None, strategies: tuple[str, ...] = ("ddp",),
                  world_size: int = 8) -> list[dict]:
    """One row per size x method x checkpointing x strategy: state, per-clip bytes and the largest batch for each
    capacity (GB), leaving `reserve` GiB and a `slack` fraction for what the count leaves out."""
    rows = []
    for size in sizes:
        for method in methods:
            for checkpointing in (False, True):
                build = partial(create_model, SIZE_NAMES[size], num_classes=174, num_frames=frames, img_size=img_size,
                                tuning=method, use_checkpoint=checkpointing)
                depth = vit_config(SIZE_NAMES[size]).depth
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
                    row = {"model": SIZE_NAMES[size], "method": method, "checkpointing": checkpointing,
                           "frames": frames, "img_size": img_size, "strategy": strategy,
                           "world_size": world_size if strategy == "fsdp" else None, "state_gib": state / GiB,
                           "fixed_gib": estimate.fixed / GiB, "per_clip_mib": estimate.per_clip / 2**20,
                           "batch_1_gib": estimate.total(1) / GiB, "cpu_peak_over_count": peak_ratio}
                    for capacity in capacities:
                        row[f"batch @ {capacity:g} GB"] = estimate.largest_batch(int(capacity * 1e9), reserve * GiB,
                                                                                slack)
                    rows.append(row)
                print(f"{SIZE_NAMES[size]:<24}{method:<12}{'ckpt' if checkpointing else '    '}  "
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
