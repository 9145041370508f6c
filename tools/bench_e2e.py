"""End to end: training clips/s from videos on disk, our tube pipeline against decoding every clip on the fly.

    python tools/bench_e2e.py                       # CPU: ViT-T, 8 frames at 112 px, 48 SSv2-like videos
    python tools/bench_e2e.py --device cuda --amp bf16 --model vit_small_patch16_224 --img-size 224 --batch 32 \
        --videos 512 --workers 8                    # GPU: the issue's ViT-S at 8 frames
    python tools/bench_e2e.py --videos-dir /data/my_videos     # your own videos instead of generated ones
    python tools/bench_e2e.py --smoke               # seconds (used by the tests)

Four rates, all for the same model step (forward + backward + AdamW, AdaptFormer by default):
- model only: the step on one fixed batch, no data at all (the ceiling);
- tubes, epoch: our loader (JPEG tubes at the training short side; batched nvJPEG decoding on CUDA) + the step;
- tubes, amortised: the same with the one-off preparation spread over the epochs of a run (90, the AdaptFormer
  recipe): clips x epochs / (prep + epochs x epoch time);
- on the fly: the usual alternative (Hugging Face's video-classification example, VideoMAE): each clip decoded
  from its source with decord in the DataLoader workers, same sampling and augmentation, + the step.
An epoch is timed from its second batch on (the first pays for worker start-up) to its end.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset, RandomSampler

from video_adapt import create_model
from video_adapt.benchmarks.sources import OnTheFly, list_videos, make_sources
from video_adapt.console import command
from video_adapt.data.datasets import TubeTrainDataset
from video_adapt.data.decode import BACKENDS
from video_adapt.data.prepare import PrepOptions, SplitSpec, VideoEntry, prepare_store
from video_adapt.engine.data import make_loader, to_model_input
from video_adapt.engine.precision import autocast_context, autocast_dtype
from video_adapt.errors import ConfigError
from video_adapt.files import write_json_atomic
from video_adapt.models.tuning import METHODS


class Step:
    """One training step of the benchmarked model on a batch of uint8 (or still-encoded) clips."""

    def __init__(self, args: argparse.Namespace, num_classes: int):
        torch.manual_seed(0)
        self.device = torch.device(args.device)
        self.model = create_model(args.model, num_classes=num_classes, num_frames=args.clip_frames,
                                  img_size=args.img_size, tuning=args.method).to(self.device).train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-4, fused=self.device.type == "cuda")
        self.amp = autocast_dtype(self.device, args.amp)

    def __call__(self, clips, labels: torch.Tensor) -> None:
        x = to_model_input(clips, self.device)
        with autocast_context(self.device, self.amp):
            loss = torch.nn.functional.cross_entropy(self.model(x).float(), labels.to(self.device))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def model_only_rate(step: Step, args: argparse.Namespace, steps: int) -> float:
    clips = torch.randint(0, 256, (args.batch, 3, args.clip_frames, args.img_size, args.img_size), dtype=torch.uint8)
    labels = torch.zeros(args.batch, dtype=torch.long)
    step(clips, labels)
    step.sync()
    start = time.perf_counter()
    for _ in range(steps):
        step(clips, labels)
    step.sync()
    return steps * args.batch / (time.perf_counter() - start)


def epoch_rate(step: Step, dataset: Dataset, args: argparse.Namespace, workers: int) -> float:
    """Clips/s over one shuffled epoch (after its first batch), data loading and steps together."""
    loader = make_loader(dataset, args.batch, RandomSampler(dataset), workers, step.device, drop_last=True)
    seen, start = 0, None
    for clips, labels in loader:
        step(clips, labels)
        if start is None:
            step.sync()
            start = time.perf_counter()
            continue
        seen += len(labels)
    step.sync()
    if start is None or seen == 0:
        raise ConfigError(f"an epoch of {len(dataset)} clips at batch {args.batch} has fewer than 2 batches")
    return seen / (time.perf_counter() - start)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=48, help="generated sources")
    parser.add_argument("--source-frames", type=int, default=48)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--videos-dir", type=Path, help="use these videos instead of generated ones")
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--method", default="adaptformer", choices=METHODS)
    parser.add_argument("--clip-frames", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--epochs-amortised", type=int, default=90, help="epochs of a run (AdaptFormer recipe: 90)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.videos, args.source_frames, args.height, args.width = 8, 12, 48, 64
        args.model, args.clip_frames, args.img_size, args.batch, args.workers = "vit_nano_patch8_32", 4, 32, 2, [0]
    backend = "decord" if "decord" in BACKENDS else next(iter(BACKENDS))
    results: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}, "backend": backend}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.videos_dir:
            sources, labels = list_videos(args.videos_dir)
        else:
            sources = make_sources(tmp, args.videos, args.source_frames, args.height, args.width)
            labels = [i % 4 for i in range(len(sources))]
        num_classes = max(labels) + 1
        entries = [VideoEntry(p.stem, str(p), label) for p, label in zip(sources, labels)]
        opts = PrepOptions(frames=[args.clip_frames], sampling="segment", short_side=args.img_size, train_views=2,
                           codec="jpeg", shard_size=1000)
        start = time.perf_counter()
        prepare_store(tmp / "store", [str(c) for c in range(num_classes)], [SplitSpec("train", entries, "train")],
                      opts, "bench", flip=False, progress=False)
        prep_s = time.perf_counter() - start
        results["prep seconds"] = prep_s
        step = Step(args, num_classes)
        results["model only clips/s"] = model_only_rate(step, args, max(3, len(sources) // args.batch))
        decode = "batch" if step.device.type == "cuda" else "worker"
        tubes = TubeTrainDataset(str(tmp / "store"), "train", args.clip_frames, args.img_size, decode=decode)
        fly = OnTheFly(sources, args.clip_frames, args.img_size, backend, labels)
        for workers in args.workers:
            ours = epoch_rate(step, tubes, args, workers)
            other = epoch_rate(step, fly, args, workers)
            epoch_s = len(tubes) / ours
            amortised = len(tubes) * args.epochs_amortised / (prep_s + args.epochs_amortised * epoch_s)
            results[f"{workers} workers: tubes, epoch clips/s"] = ours
            results[f"{workers} workers: tubes, amortised clips/s"] = amortised
            results[f"{workers} workers: on the fly clips/s"] = other
            results[f"{workers} workers: tubes amortised / on the fly"] = amortised / other
            results[f"{workers} workers: tubes epoch / model only"] = ours / results["model only clips/s"]
    print(table(results, args.workers))
    if args.json:
        write_json_atomic(args.json, results)
        print(f"figures: {args.json}")
    return 0


def table(results: dict, workers: list[int]) -> str:
    lines = [f"prep: {results['prep seconds']:.1f} s; model only: {results['model only clips/s']:.1f} clips/s",
             "", "| workers | tubes, epoch | tubes, amortised | on the fly | amortised / on the fly | epoch / model only |",
             "|---|---|---|---|---|---|"]
    for w in workers:
        r = {k.split(": ", 1)[1]: v for k, v in results.items() if k.startswith(f"{w} workers: ")}
        lines.append(f"| {w} | {r['tubes, epoch clips/s']:.1f} | {r['tubes, amortised clips/s']:.1f} | "
                     f"{r['on the fly clips/s']:.1f} | {r['tubes amortised / on the fly']:.2f}x | "
                     f"{r['tubes epoch / model only']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
