"""End to end: training epochs from videos on disk, frame store (prep + loader + step) against decoding every clip
on the fly (`data.source: videos`) + the same step.

Both pipelines are the training run's own: `TrainClips` over a `StoreSource` or a `FileSource`, `make_loader`,
`batch_to_device` (the num_sample copies, erasing on the device, nvJPEG batched decoding on CUDA where the
protocol allows it), then one forward + backward + AdamW step. An epoch is timed from its second batch on (the
first pays for worker start-up) to its end.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset, RandomSampler

from video_adapt.benchmarks.data_loader import prepare, protocol_view, videos_source
from video_adapt.data.datasets import NO_BOX, StoreSource, TrainClips, TrainView
from video_adapt.data.decode import BACKENDS
from video_adapt.errors import ConfigError


@dataclass
class E2EBench:
    """The model, the clips and the loaders of `run_e2e`."""

    model: str = "vit_tiny_patch16_224"
    method: str = "adaptformer"
    protocol: str = "adaptformer"
    dataset: str = "ssv2"
    clip_frames: int | None = None  # None: the protocol's (8 or 16)
    img_size: int = 112
    short_side: int = 0  # the store's (0: decoded size, as the official loaders decode)
    batch: int = 4
    workers: list[int] = field(default_factory=lambda: [0, 2])
    epochs: int = 1  # timed per pipeline and worker count
    epochs_amortised: int = 90  # epochs of a run (AdaptFormer recipe: 90)
    device: str = "cpu"
    amp: str = "off"


class Step:
    """One training step of the benchmarked model on a loader batch, moved to the device as training moves it."""

    def __init__(self, bench: E2EBench, view: TrainView, num_classes: int):
        from video_adapt import create_model
        from video_adapt.engine.precision import autocast_dtype
        torch.manual_seed(0)
        self.device = torch.device(bench.device)
        self.model = create_model(bench.model, num_classes=num_classes, num_frames=view.num_frames,
                                  img_size=view.img_size, tuning=bench.method).to(self.device).train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-4, fused=self.device.type == "cuda")
        self.amp = autocast_dtype(self.device, bench.amp)

    def __call__(self, batch: tuple) -> int:
        """Train on one loader batch; returns the clips it held (videos x copies)."""
        from video_adapt.engine.data import batch_to_device
        from video_adapt.engine.precision import autocast_context
        x, y = batch_to_device(batch, self.device)
        with autocast_context(self.device, self.amp):
            loss = torch.nn.functional.cross_entropy(self.model(x).float(), y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return len(y)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def model_only_rate(step: Step, view: TrainView, batch: int, steps: int) -> float:
    """Clips/s of the step alone on one fixed uint8 batch in the loader's layout: the ceiling of any pipeline."""
    clips = torch.randint(0, 256, (batch, view.num_sample, 3, view.num_frames, view.img_size, view.img_size),
                          dtype=torch.uint8)
    fixed = (clips, torch.zeros(batch, dtype=torch.long), torch.tensor([[NO_BOX] * view.num_sample] * batch))
    for _ in range(2):  # warm-up: the allocator's and the kernels' first calls
        step(fixed)
    step.sync()
    start = time.perf_counter()
    seen = sum(step(fixed) for _ in range(steps))
    step.sync()
    return seen / (time.perf_counter() - start)


def epoch_rate(step: Step, dataset: Dataset, batch: int, workers: int, epochs: int = 1) -> float:
    """Clips/s over `epochs` shuffled epochs (each after its first batch), data loading and steps together."""
    from video_adapt.engine.data import make_loader
    seen, seconds = 0, 0.0
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        loader = make_loader(dataset, batch, RandomSampler(dataset), workers, step.device, drop_last=True)
        start = None
        for item in loader:
            clips = step(item)
            if start is None:
                step.sync()
                start = time.perf_counter()
                continue
            seen += clips
        step.sync()
        if start is None:
            raise ConfigError(f"an epoch of {len(dataset)} videos at batch {batch} has fewer than 2 batches")
        seconds += time.perf_counter() - start
    if seen == 0:
        raise ConfigError(f"an epoch of {len(dataset)} videos at batch {batch} has fewer than 2 batches")
    return seen / seconds


def run_e2e(bench: E2EBench, sources: Sequence[Path], labels: Sequence[int], workdir: Path,
            log: Callable[[str], None] = lambda s: None) -> dict:
    """Prep (timed), model only, then per worker count an epoch from the store and one from the files."""
    view = protocol_view(bench.protocol, bench.img_size, bench.dataset, bench.clip_frames)
    backend = "decord" if "decord" in BACKENDS else next(iter(BACKENDS))
    results: dict = {"backend": backend, "view": {k: str(v) for k, v in vars(view).items()}}
    log("preparing the JPEG store")
    start = time.perf_counter()
    prepare(sources, workdir / "store", "jpeg", bench.short_side, labels, bench.dataset)
    prep_s = time.perf_counter() - start
    results["prep seconds"] = prep_s
    step = Step(bench, view, max(labels) + 1)
    log("model only")
    results["model only clips/s"] = model_only_rate(step, view, bench.batch, max(3, len(sources) // bench.batch))
    batched = (step.device.type == "cuda" and not view.randaugment and view.num_sample == 1)
    store = TrainClips(StoreSource(workdir / "store", "train"), view, decode="batch" if batched else "worker")
    files = TrainClips(videos_source(sources, labels, bench.dataset), view)
    clips_per_epoch = len(store) // bench.batch * bench.batch * view.num_sample
    for workers in bench.workers:
        log(f"{workers} workers: store")
        ours = epoch_rate(step, store, bench.batch, workers, bench.epochs)
        log(f"{workers} workers: videos")
        other = epoch_rate(step, files, bench.batch, workers, bench.epochs)
        epoch_s = clips_per_epoch / ours
        amortised = clips_per_epoch * bench.epochs_amortised / (prep_s + bench.epochs_amortised * epoch_s)
        results[f"{workers} workers"] = {
            "store, epoch clips/s": ours, "store, amortised clips/s": amortised, "videos clips/s": other,
            "store amortised / videos": amortised / other,
            "store epoch / model only": ours / results["model only clips/s"]}
    return results


def e2e_table(results: dict, workers: Sequence[int], epochs_amortised: int) -> str:
    lines = [f"prep: {results['prep seconds']:.1f} s; model only: {results['model only clips/s']:.1f} clips/s", "",
             f"| workers | store, epoch | store, amortised over {epochs_amortised} epochs | videos on the fly | "
             "amortised / videos | store epoch / model only |", "|---|---|---|---|---|---|"]
    for w in workers:
        r = results[f"{w} workers"]
        lines.append(f"| {w} | {r['store, epoch clips/s']:.1f} | {r['store, amortised clips/s']:.1f} | "
                     f"{r['videos clips/s']:.1f} | {r['store amortised / videos']:.2f}x | "
                     f"{r['store epoch / model only']:.2f} |")
    return "\n".join(lines)
