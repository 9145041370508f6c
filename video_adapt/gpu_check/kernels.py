"""Which kernels run and how far the device goes: the SDPA backend a bf16 training step selects, `torch.compile`
against eager (same logits, speed), and the largest training batch that fits, per method and for Hugging Face."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from video_adapt.engine.precision import Precision
from video_adapt.gpu_check.runner import CheckFailure, Context, Skip
from video_adapt.gpu_check.training import build, fixed_batch, needs_package, sync

# bf16 keeps 8 significant bits (2^-9 ~ 2e-3 relative rounding per operation); eager and compiled code round at
# different places (fused kernels keep fp32 intermediates) and the difference grows through the blocks
BF16_RTOL = 5e-2
FAST_SDPA = ("flash", "memory-efficient")
# aten's SDPA implementations, by the name part of their forward and backward ops
SDPA_OPS = (("flash", "flash_attention"), ("memory-efficient", "efficient_attention"),
            ("cudnn", "cudnn_attention"), ("math", "attention_math"))


def sdpa_backends(op_names: Iterable[str]) -> dict[str, list[str]]:
    """The SDPA implementations that ran, forward and backward, from profiled op names
    (e.g. aten::_scaled_dot_product_flash_attention, ..._efficient_attention_backward)."""
    used: dict[str, list[str]] = {"forward": [], "backward": []}
    for name in op_names:
        lower = name.lower()
        if not lower.startswith("aten::") or "scaled_dot_product" not in lower:
            continue
        for backend, tag in SDPA_OPS:
            if tag in lower:
                side = used["backward" if "backward" in lower else "forward"]
                if backend not in side:
                    side.append(backend)
    return used


def attention_kernels(names: Iterable[str]) -> list[str]:
    """Device kernels that look like attention (flash, cutlass fmha, cuDNN SDPA), for the report."""
    keys = ("flash", "fmha", "sdpa", "attention")
    return sorted(n for n in names if not n.startswith(("aten::", "autograd::")) and "Backward" not in n
                  and any(k in n.lower() for k in keys))


def sdpa(ctx: Context) -> dict[str, Any]:
    """One bf16 AdaptFormer training step under the profiler: the SDPA forward and backward must be flash or
    memory-efficient on CUDA. On the CPU the same profile runs and the check is skipped, naming what ran."""
    from torch.profiler import ProfilerActivity, profile
    s, device = ctx.sizes, ctx.device
    model = build(s, "adaptformer", device).train()
    x, y = fixed_batch(s, 2, seed=5, device=device)
    precision = Precision.create(device, "bf16")

    def step() -> None:
        with precision.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        sync(device)
    step()  # warm-up: kernel selection and caches outside the profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.cuda else [])
    with profile(activities=activities) as prof:
        step()
    names = {e.key for e in prof.key_averages()}
    used = sdpa_backends(names)
    figures = {"model": s.model, "dtype": "bf16", "backends": used, "kernels": attention_kernels(names),
               "ops": sorted(n for n in names if n.startswith("aten::") and "scaled_dot_product" in n)}
    problem = sdpa_problem(used)
    if not ctx.cuda:
        raise Skip(f"the kernel choice is checked on CUDA only; on the CPU: {problem or describe(used)}", figures)
    if problem:
        raise CheckFailure(problem, figures)
    return figures


def describe(used: dict[str, list[str]]) -> str:
    return f"SDPA ran forward {'+'.join(used['forward']) or 'none'}, backward {'+'.join(used['backward']) or 'none'}"


def sdpa_problem(used: dict[str, list[str]]) -> str | None:
    """What is wrong with the SDPA implementations a bf16 step ran (None: flash or memory-efficient throughout)."""
    if used["forward"] and used["backward"] and set(used["forward"] + used["backward"]) <= set(FAST_SDPA):
        return None
    return f"{describe(used)}, not only flash or memory-efficient"


def median_ms(fn: Callable[[], Any], iters: int, device: torch.device) -> float:
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def compile_check(ctx: Context) -> dict[str, Any]:
    """`torch.compile` on and off: the same bf16 logits within BF16_RTOL (relative norm), and the forward's speed."""
    s, device = ctx.sizes, ctx.device
    model = build(s, "adaptformer", device).eval()
    x, _ = fixed_batch(s, s.compile_batch, seed=6, device=device)
    precision = Precision.create(device, "bf16")

    def forward(net: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad(), precision.autocast():
            return net(x).float()
    eager = forward(model)
    compiled = torch.compile(model, backend=s.compile_backend)
    start = time.perf_counter()
    out = forward(compiled)
    sync(device)
    compile_s = time.perf_counter() - start
    rel = ((out - eager).norm() / eager.norm()).item()
    eager_ms = median_ms(lambda: forward(model), s.timing_iters, device)
    compiled_ms = median_ms(lambda: forward(compiled), s.timing_iters, device)
    figures = {"model": s.model, "method": "adaptformer", "backend": s.compile_backend, "batch": s.compile_batch,
               "compile_s": compile_s, "relative_logit_diff": rel, "max_abs_logit_diff": (out - eager).abs().max().item(),
               "eager_ms": eager_ms, "compiled_ms": compiled_ms, "speedup": eager_ms / compiled_ms,
               "eager_clips_per_s": 1000 * s.compile_batch / eager_ms,
               "compiled_clips_per_s": 1000 * s.compile_batch / compiled_ms, "rtol": BF16_RTOL}
    if not rel <= BF16_RTOL:
        raise CheckFailure(f"compiled logits differ from eager by {rel:.2e} (relative), above {BF16_RTOL:g}", figures)
    return figures


def _training_model(ctx: Context, impl: str, method: str) -> tuple[torch.nn.Module, Callable]:
    """Hugging Face VideoMAE (full) or ours with `method`, on the device, and its forward on (B, 3, T, H, W)."""
    from video_adapt.benchmarks.model_step import NUM_CLASSES, hf_videomae
    s = ctx.sizes
    if impl == "hf":
        torch.manual_seed(0)
        hf = hf_videomae(s.model, s.frames, s.img_size, NUM_CLASSES).to(ctx.device).train()
        return hf, lambda x: hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
    model = build(s, method, ctx.device).train()
    return model, model


def _largest(ctx: Context, impl: str, method: str) -> dict[str, Any]:
    """One configuration's largest batch; its model and optimizer are freed on return."""
    from video_adapt.benchmarks.hardware import largest_batch as doubling
    s, device = ctx.sizes, ctx.device
    precision = Precision.create(device, "bf16")
    model, forward = _training_model(ctx, impl, method)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=True)

    def step(batch: int) -> None:
        x = torch.randn(batch, 3, s.frames, s.img_size, s.img_size, device=device)
        y = torch.zeros(batch, dtype=torch.long, device=device)
        try:
            with precision.autocast():
                loss = F.cross_entropy(forward(x).float(), y)
            loss.backward()
            optimizer.step()
            sync(device)
        finally:
            optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    best = doubling(step, start=s.largest_start, limit=s.largest_limit)
    return {"impl": impl, "method": method, "model": s.model, "frames": s.frames, "img_size": s.img_size,
            "largest_batch": best, "stopped_by_memory": best * 2 <= s.largest_limit,
            "seconds": time.perf_counter() - start}


def largest_batch(ctx: Context) -> dict[str, Any]:
    """The largest bf16 training batch (forward, backward, AdamW) that fits, doubling from `largest_start` as
    `tools/bench_model.py --batch auto` does, for Hugging Face's full fine-tuning and each of our methods."""
    rows = []
    for impl, method in [("hf", "full")] + [("ours", m) for m in ctx.sizes.bench_model_methods]:
        missing = needs_package(method) if impl == "ours" else None
        rows.append({"impl": impl, "method": method, "skipped": f"{missing} is not installed"} if missing
                    else _largest(ctx, impl, method))
        if ctx.cuda:
            torch.cuda.empty_cache()
    return {"rows": rows, "start": ctx.sizes.largest_start, "limit": ctx.sizes.largest_limit, "amp": "bf16"}
