"""The data path on the device: a small generated frame store, nvJPEG batches against the CPU workers' clips, and
`video-adapt train` on that store with `data.gpu_decode`.

The store is made by `data_prep.synthetic` (real mp4 videos, then JPEG frames). Writing videos needs PyAV, which
the GPU machine lacks, so for a GPU run it is prepared beforehand (`python tools/gpu_check.py --prepare DIR`) and
carried; the quick run makes its own.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from video_adapt.gpu_check.runner import CheckFailure, Context, Skip
from video_adapt.gpu_check.sizes import Sizes

GREY_LEVELS = 1  # the bound: the batch decoded on the device equals the workers' clips within one level
CLI_METHOD = "adaptformer"


def make_store(out: Path, sizes: Sizes) -> Path:
    """Generated videos and their JPEG frame store under `out`; returns the store."""
    from video_adapt.data.synthetic import SyntheticSpec, make_synthetic_store
    classes, train, val, size, frames = sizes.store
    return make_synthetic_store(out, SyntheticSpec(size=size, frames=frames, num_classes=classes), train, val).out


def store_for(ctx: Context) -> Path:
    """The store given with --store, else one generated once in the scratch folder (needs PyAV)."""
    if ctx.store is None:
        if importlib.util.find_spec("av") is None:
            raise Skip("no --store given, and PyAV (to write the videos) is not installed here: prepare one with "
                       "`python tools/gpu_check.py --prepare DIR` where PyAV is, and pass --store DIR/store")
        ctx.store = make_store(ctx.work / "synthetic", ctx.sizes)
    return ctx.store


def cli_overrides(ctx: Context, store: Path, out: Path, amp: str) -> list[str]:
    """`video-adapt train` overrides: one epoch of AdaptFormer on a random backbone, nvJPEG decoding where CUDA is,
    one test view per video, and a non-finite loss stops the run (so it fails here)."""
    s = ctx.sizes
    return [f"data.root={store}", f"out_dir={out}", f"device={ctx.device.type}", f"model.name={s.cli_model}",
            "model.pretrained=none", f"model.tuning={CLI_METHOD}", f"data.num_frames={s.cli_frames}",
            f"data.img_size={s.cli_img_size}", f"data.batch_size={s.cli_batch}", f"data.num_workers={s.cli_workers}",
            "data.gpu_decode=true", "data.test_clips=1", "data.test_crops=1", "train.global_batch=null",
            "train.epochs=1", "train.warmup_epochs=0", "train.lr=0.01", f"train.amp={amp}", "train.nonfinite=stop",
            "train.log_every=1"]


def decode(ctx: Context) -> dict[str, Any]:
    """The training set `video-adapt train` builds decodes on the device (CUDA), and one batch decoded there
    (`decode_batch`, nvJPEG) equals the CPU workers' clips of the same items within one grey level."""
    from video_adapt.config import load_config
    from video_adapt.data.datasets import TrainClips, collate_encoded, decode_batch
    from video_adapt.engine.data import build_datasets, data_facts, resolve_data
    store = store_for(ctx)
    cfg = load_config(None, cli_overrides(ctx, store, ctx.work / "unused", "bf16"))
    cfg = resolve_data(cfg, data_facts(cfg))
    engine_set, _ = build_datasets(cfg)
    source, view, seed = engine_set.source, engine_set.view, cfg.train.seed
    workers, batched = TrainClips(source, view, seed, decode="worker"), TrainClips(source, view, seed, decode="batch")
    n = min(len(workers), max(ctx.sizes.cli_batch, 8))
    expected = torch.stack([workers[i][0] for i in range(n)])
    encoded, _ = collate_encoded([batched[i] for i in range(n)])
    decode_batch(encoded, ctx.device)  # the first call pays for nvJPEG's start
    start = time.perf_counter()
    decoded, _ = decode_batch(encoded, ctx.device)
    if decoded.is_cuda:
        torch.cuda.synchronize(decoded.device)
    seconds = time.perf_counter() - start
    diff = (decoded.cpu().to(torch.int16) - expected.to(torch.int16)).abs()
    figures = {"clips": n, "shape": list(decoded.shape), "decoded_on": str(decoded.device),
               "engine_decode": engine_set.decode, "max_grey_diff": int(diff.max()),
               "mean_grey_diff": float(diff.float().mean()), "share_above_1": float((diff > 1).float().mean()),
               "decode_batch_ms": 1000 * seconds, "frames_per_s": n * view.num_frames / seconds}
    problems = []
    if decoded.device.type != ctx.device.type:
        problems.append(f"decoded on {decoded.device}, not {ctx.device.type}")
    if ctx.cuda and engine_set.decode != "batch":
        problems.append(f"video-adapt train would decode in the workers ({engine_set.decode}), not on the GPU")
    if figures["max_grey_diff"] > GREY_LEVELS:
        problems.append(f"the device's batch differs from the workers' clips by up to {figures['max_grey_diff']} "
                        f"grey levels ({100 * figures['share_above_1']:.3f}% of values by more than {GREY_LEVELS})")
    if problems:
        raise CheckFailure("; ".join(problems), figures)
    return figures


def train_cli(ctx: Context, amp: str) -> dict[str, Any]:
    """One epoch through `video-adapt train` under `amp` (fp16: the engine's gradient scaler), with data.gpu_decode."""
    store = store_for(ctx)
    out = ctx.work / f"train_{amp}"
    ctx.run(["-m", "video_adapt", "train", *cli_overrides(ctx, store, out, amp)])
    summary = json.loads((out / "summary.json").read_text())
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train_loss"]) for r in rows]
    figures = {"amp": amp, "model": ctx.sizes.cli_model, "method": CLI_METHOD, "store": str(store),
               "train_loss": losses, "clips_per_s": float(rows[-1]["clips_per_s"]),
               "skipped_steps": int(float(rows[-1]["skipped_steps"])), "final_top1": summary["final_top1"],
               "wall_time_s": summary["wall_time_s"], "peak_memory_mib": summary["peak_memory_bytes"] / 2**20,
               "device": summary["device"]}
    if not losses or not all(math.isfinite(v) for v in losses):
        raise CheckFailure(f"training loss {losses} is not finite", figures)
    return figures
