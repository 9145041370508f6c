"""Measuring the machine a benchmark runs on: the largest batch that fits, accelerator peaks for MFU, the process's
peak resident memory, and whether SDPA picks the flash-attention kernel."""
from __future__ import annotations

from typing import Any, Callable

import torch

from video_adapt.errors import ConfigError

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks (SXM)


def largest_batch(run: Callable[[int], Any], start: int = 4, limit: int = 4096) -> int:
    """Double the batch until CUDA runs out of memory; the last batch that ran ("batch filling memory")."""
    good, batch = 0, start
    while batch <= limit:
        try:
            run(batch)
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        good, batch = batch, batch * 2
    if not good:
        raise ConfigError(f"batch {start} does not fit on this GPU")
    return good


def peak_tflops(device: str, given: float | None) -> float | None:
    """The peak for MFU: `given`, else the known peak of this GPU, else None (CPUs: give it)."""
    if given:
        return given
    if device == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
        return next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
    return None


def check_flash(name: str, frames: int, img_size: int, batch: int, dtype: torch.dtype) -> dict:
    """Does SDPA run the flash kernel for this model's attention shapes? Forced flash must run, and a
    profile of the default dispatch must show a flash kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    from video_adapt.models.vit import vit_config
    c = vit_config(name)
    tokens = (frames // c.tubelet_size) * (img_size // c.patch_size) ** 2
    q = torch.randn(batch, c.num_heads, tokens, c.embed_dim // c.num_heads, device="cuda", dtype=dtype)
    out: dict = {"shape": list(q.shape), "dtype": str(dtype)}
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
        out["flash_runs"] = True
    except RuntimeError as error:
        out["flash_runs"], out["flash_error"] = False, str(error).splitlines()[0]
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
        torch.cuda.synchronize()
    kernels = sorted({e.key for e in prof.key_averages() if "attention" in e.key.lower() or "fmha" in e.key.lower()
                      or "flash" in e.key.lower()})
    out["kernels"] = kernels
    out["default_is_flash"] = any("flash" in k.lower() for k in kernels)
    return out
