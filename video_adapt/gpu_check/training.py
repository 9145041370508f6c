"""Training on the device with the engine's own parts (`create_optimizer`: fused AdamW on CUDA; `Precision`: autocast
and, for fp16, the gradient scaler):

- `method_steps`: each tuning method, `steps` steps on one fixed batch: the loss is finite and falls, every frozen
  tensor is bit-unchanged and every tuned tensor changed;
- `ddp`: torchrun with 1 process (2 where there are 2 GPUs; 1 and 2 with gloo on the CPU) ends with the weights of
  one process without DDP (`ddp_worker`);
- `fsdp`: `video_adapt.sharding` on one process: a sharded step equals an unsharded one, and the full state
  (weights and AdamW state) goes out and back in exactly.
"""
from __future__ import annotations

import importlib.util
import json
import math
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from video_adapt.engine.optim import create_optimizer
from video_adapt.engine.precision import Precision
from video_adapt.gpu_check.runner import CheckFailure, Context, Skip
from video_adapt.gpu_check.sizes import Sizes

DDP_RTOL = 1e-4  # fp32 without TF32: splitting the batch only reorders sums (~1e-6 of an update)
FSDP_ATOL = 1e-5  # one process: FSDP gathers and reduces over itself, the same arithmetic as no sharding


def build(sizes: Sizes, method: str, device: torch.device, seed: int = 0) -> nn.Module:
    """The check's preset with `method` and a random backbone, initialised on the device."""
    from video_adapt import create_model
    torch.manual_seed(seed)
    with torch.device(device):
        model = create_model(sizes.model, num_classes=sizes.classes, num_frames=sizes.frames,
                             img_size=sizes.img_size, tuning=method)
    return model.to(device)  # buffers made from numpy arrays are created on the CPU


def fixed_batch(sizes: Sizes, batch: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised-looking clips and labels, the same on every device and process."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, sizes.frames, sizes.img_size, sizes.img_size, generator=g)
    y = torch.randint(0, sizes.classes, (batch,), generator=g)
    return x.to(device), y.to(device)


def needs_package(method: str) -> str | None:
    """The optional package a method needs and this Python lacks (LoRA: peft), else None."""
    if method == "lora" and importlib.util.find_spec("peft") is None:
        return "peft"
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def method_steps(ctx: Context, method: str, amp: str) -> dict[str, Any]:
    """`steps` training steps of `method` on one fixed batch under `amp` autocast (fp16 with the gradient scaler)."""
    missing = needs_package(method)
    if missing:
        raise Skip(f"{missing} is not installed here (LoRA needs it): install its wheel, see docs/GPU_CHECK.md")
    s, device = ctx.sizes, ctx.device
    model = build(s, method, device).train()
    named = dict(model.named_parameters())
    frozen = {n: p.detach().clone() for n, p in named.items() if not p.requires_grad}
    tuned = {n: p.detach().clone() for n, p in named.items() if p.requires_grad}
    precision = Precision.create(device, amp)
    optimizer = create_optimizer(model, "adamw", s.full_lr if method == "full" else s.lr, weight_decay=0.0)
    trainable = [named[n] for n in tuned]
    x, y = fixed_batch(s, s.batch, seed=1, device=device)
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(device)
    losses, times, skipped = [], [], 0
    for _ in range(s.steps):
        start = time.perf_counter()
        with precision.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        precision.backward(loss)
        scale = precision.scaler.get_scale() if precision.scaler is not None else None
        precision.step(optimizer, trainable)
        if scale is not None and precision.scaler.get_scale() < scale:  # the scaler skipped this step (inf grads)
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # also waits for the step
        times.append(time.perf_counter() - start)
    changed_frozen = [n for n, before in frozen.items() if not torch.equal(before, named[n])]
    unchanged_tuned = [n for n, before in tuned.items() if torch.equal(before, named[n])]
    figures = {"method": method, "amp": amp, "batch": s.batch, "steps": s.steps,
               "losses": [round(v, 5) for v in losses], "scaler_skipped_steps": skipped,
               "tuned_tensors": len(tuned), "frozen_tensors": len(frozen),
               "tuned_unchanged": unchanged_tuned[:5], "frozen_changed": changed_frozen[:5],
               "step_ms_median": 1000 * statistics.median(times[1:] or times),
               "optimizer_fused": bool(optimizer.defaults.get("fused"))}
    if ctx.cuda:
        figures["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    problems = []
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad:
        problems.append(f"non-finite loss at step {bad[0]}")
    elif not losses[-1] < losses[0]:
        problems.append(f"the loss did not fall: {losses[0]:.4f} -> {losses[-1]:.4f}")
    if changed_frozen:
        problems.append(f"{len(changed_frozen)} frozen tensors changed (first: {changed_frozen[0]})")
    if unchanged_tuned:
        problems.append(f"{len(unchanged_tuned)} of {len(tuned)} tuned tensors unchanged (first: {unchanged_tuned[0]})")
    if problems:
        raise CheckFailure("; ".join(problems), figures)
    return figures


def update_difference(initial: dict[str, torch.Tensor], ours: dict[str, torch.Tensor],
                      reference: dict[str, torch.Tensor]) -> dict[str, Any]:
    """How far two trainings of the same start ended apart: the largest absolute weight difference, and the largest
    difference of a tensor's update relative to the reference's update (a scale-free measure)."""
    worst_abs, worst_rel, worst = 0.0, 0.0, ""
    for name, ref in reference.items():
        a, r, start = ours[name].float().cpu(), ref.float().cpu(), initial[name].float().cpu()
        abs_diff = (a - r).abs().max().item() if a.numel() else 0.0
        step = (r - start).norm().item()
        rel = (a - r).norm().item() / step if step > 0 else (0.0 if abs_diff == 0 else float("inf"))
        if rel > worst_rel or (rel == worst_rel and abs_diff > worst_abs):
            worst = name
        worst_abs, worst_rel = max(worst_abs, abs_diff), max(worst_rel, rel)
    return {"max_abs_diff": worst_abs, "max_relative_update_diff": worst_rel, "worst_tensor": worst}


def ddp(ctx: Context) -> dict[str, Any]:
    """torchrun with 1 (and 2) processes: DDP's weights against one process without DDP, same global batch."""
    worlds = [1, 2] if not ctx.cuda or torch.cuda.device_count() >= 2 else [1]
    runs = {}
    for world in worlds:
        out = ctx.work / f"ddp_{world}.json"
        ctx.run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world),
                 "-m", "video_adapt.gpu_check.ddp_worker", "--out", str(out), "--sizes", ctx.sizes.name,
                 "--device", ctx.device.type])
        runs[str(world)] = json.loads(out.read_text())
    figures: dict[str, Any] = {"processes": runs, "rtol": DDP_RTOL}
    if len(worlds) == 1:
        figures["note"] = "2 processes need 2 GPUs; this machine has 1"
    bad = [w for w, r in runs.items() if not r["max_relative_update_diff"] <= DDP_RTOL]
    if bad:
        raise CheckFailure(f"DDP with {bad[0]} process(es) ended {runs[bad[0]]['max_relative_update_diff']:.2e} "
                           f"(relative) from one process, above {DDP_RTOL:g}", figures)
    return figures


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, x: torch.Tensor,
          y: torch.Tensor) -> float:
    with precision.autocast():
        loss = F.cross_entropy(model(x).float(), y)
    precision.backward(loss)
    precision.step(optimizer, [p for p in model.parameters() if p.requires_grad])
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _optimizer_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if set(a.get("state", {})) != set(b.get("state", {})):
        return False
    for index, state in a["state"].items():
        for key, value in state.items():
            other = b["state"][index][key]
            if isinstance(value, torch.Tensor) and not torch.equal(value.cpu(), other.cpu()):
                return False
    return True


def fsdp(ctx: Context) -> dict[str, Any]:
    """FSDP2 (`video_adapt.sharding`) on one process, full fine-tuning in bf16 autocast with the engine's AdamW: one
    sharded step against one unsharded step, then the full state out, into a fresh sharded model, and out again."""
    import torch.distributed as dist

    from video_adapt.sharding import (full_optimizer_state, full_state_dict, load_full_optimizer_state,
                                      load_full_state_dict, shard_model)
    if dist.is_initialized():
        raise CheckFailure("a process group is already initialised in this process")
    s, device = ctx.sizes, ctx.device
    rendezvous = ctx.work / "fsdp_group"
    rendezvous.unlink(missing_ok=True)  # a file store left by an earlier run would be joined, not made
    dist.init_process_group("nccl" if ctx.cuda else "gloo", init_method=rendezvous.as_uri(), rank=0, world_size=1)
    try:
        precision = Precision.create(device, "bf16")
        reference = build(s, "full", device, seed=0).train()
        initial = {k: v.detach().cpu().clone() for k, v in reference.state_dict().items()}
        sharded = shard_model(build(s, "full", device, seed=1).train())
        load_full_state_dict(sharded, initial)  # the reference's start, broadcast from rank 0
        make = lambda m: create_optimizer(m, "adamw", s.full_lr, weight_decay=0.05)  # noqa: E731
        opt_ref, opt_sharded = make(reference), make(sharded)
        batches = [fixed_batch(s, 2, seed=10 + i, device=device) for i in range(2)]
        start = time.perf_counter()
        loss = _step(sharded, opt_sharded, precision, *batches[0])
        sync(device)
        step_s = time.perf_counter() - start
        _step(reference, opt_ref, precision, *batches[0])
        weights, opt_state = full_state_dict(sharded), full_optimizer_state(sharded, opt_sharded)
        one_step = update_difference(initial, weights, reference.state_dict())

        fresh = shard_model(build(s, "full", device, seed=2).train())
        load_full_state_dict(fresh, weights)
        opt_fresh = make(fresh)
        load_full_optimizer_state(fresh, opt_fresh, opt_state)
        again = full_state_dict(fresh)
        round_trip = (set(again) == set(weights) and all(torch.equal(again[k], weights[k]) for k in weights)
                      and _optimizer_equal(full_optimizer_state(fresh, opt_fresh), opt_state))
        after = {k: v.detach().cpu().clone() for k, v in reference.state_dict().items()}
        _step(fresh, opt_fresh, precision, *batches[1])
        _step(reference, opt_ref, precision, *batches[1])
        resumed = update_difference(after, full_state_dict(fresh), reference.state_dict())
        sharded_type = type(next(fresh.parameters())).__name__
    finally:
        dist.destroy_process_group()
    figures = {"model": s.model, "loss": loss, "sharded_step_s": step_s, "parameters": sharded_type,
               "one_step_vs_unsharded": one_step, "full_state_round_trip_exact": round_trip,
               "resumed_step_vs_unsharded": resumed, "atol": FSDP_ATOL}
    problems = []
    if sharded_type != "DTensor":
        problems.append(f"parameters are {sharded_type}, not DTensor: nothing was sharded")
    if not one_step["max_abs_diff"] <= FSDP_ATOL:
        problems.append(f"a sharded step ended {one_step['max_abs_diff']:.2e} from an unsharded one")
    if not round_trip:
        problems.append("the full state did not come back exactly")
    if not resumed["max_abs_diff"] <= FSDP_ATOL:
        problems.append(f"the step after the round trip ended {resumed['max_abs_diff']:.2e} from an unsharded one")
    if problems:
        raise CheckFailure("; ".join(problems), figures)
    return figures
