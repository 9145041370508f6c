"""End to end: training clips/s from videos on disk, the frame store (prep + loader + step) against decoding every
clip on the fly from the video files (`data.source: videos`) + the same step.

    python tools/bench_e2e.py                       # CPU: ViT-T + AdaptFormer, AdaptFormer's clip at 112 px, 48 videos
    python tools/bench_e2e.py --device cuda --amp bf16 --model vit_small_patch16_224 --img-size 224 --batch 32 \
        --videos 512 --workers 8                    # GPU: ViT-S at 8 frames (nvJPEG batched decoding)
    python tools/bench_e2e.py --videos-dir /data/my_videos     # your own videos (class sub-folders give labels)
    python tools/bench_e2e.py --smoke               # seconds (used by the tests)

Four rates, all for the same model step (forward + backward + AdamW, AdaptFormer by default):
- model only: the step on one fixed batch, no data at all (the ceiling);
- store, epoch: a JPEG frame store at the decoded size, prepared once, and the training loader + the step;
- store, amortised: the same with the one-off preparation spread over the epochs of a run (90, the AdaptFormer
  recipe): clips x epochs / (prep + epochs x epoch time);
- videos: each clip decoded from its file with decord in the DataLoader workers, same rules, + the step.
Generated sources are SSv2-like (footage-like VP9 webm, 240 x 427, 12 fps, 45 frames, SSv2's bit rate).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from video_adapt.benchmarks.data_loader import PROTOCOLS
from video_adapt.benchmarks.e2e import E2EBench, e2e_table, run_e2e
from video_adapt.benchmarks.sources import list_videos, make_sources
from video_adapt.console import command
from video_adapt.files import write_json_atomic
from video_adapt.models.methods import METHODS


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = E2EBench()
    parser.add_argument("--videos", type=int, default=48, help="generated sources")
    parser.add_argument("--source-frames", type=int, default=45)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=427)
    parser.add_argument("--videos-dir", type=Path, help="use these videos instead of generated ones")
    parser.add_argument("--model", default=d.model)
    parser.add_argument("--method", default=d.method, choices=METHODS)
    parser.add_argument("--protocol", default=d.protocol, choices=PROTOCOLS)
    parser.add_argument("--dataset", default=d.dataset, help="ssv2 or another kind (picks VideoMAE's rule)")
    parser.add_argument("--clip-frames", type=int, help="frames per clip (default: the protocol's)")
    parser.add_argument("--img-size", type=int, default=d.img_size)
    parser.add_argument("--short-side", type=int, default=d.short_side, help="store short side (0: decoded size)")
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--workers", type=int, nargs="+", default=d.workers)
    parser.add_argument("--epochs", type=int, default=d.epochs, help="epochs timed per pipeline and worker count")
    parser.add_argument("--epochs-amortised", type=int, default=d.epochs_amortised,
                        help="epochs of a run (AdaptFormer recipe: 90)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", default=d.amp, choices=["off", "bf16", "fp16"])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.videos, args.source_frames, args.height, args.width = 8, 12, 48, 64
        args.model, args.clip_frames, args.img_size, args.batch, args.workers = "vit_nano_patch8_32", 4, 32, 2, [0]
    bench = E2EBench(args.model, args.method, args.protocol, args.dataset, args.clip_frames, args.img_size,
                     args.short_side, args.batch, args.workers, args.epochs, args.epochs_amortised, args.device,
                     args.amp)
    with tempfile.TemporaryDirectory() as tmp:
        if args.videos_dir:
            sources, labels = list_videos(args.videos_dir)
        else:
            sources = make_sources(Path(tmp), args.videos, args.source_frames, args.height, args.width)
            labels = [i % 4 for i in range(len(sources))]
        results = {"args": {k: str(v) for k, v in vars(args).items()},
                   **run_e2e(bench, sources, labels, Path(tmp) / "work", log=lambda s: print(s, file=sys.stderr))}
    print(e2e_table(results, args.workers, args.epochs_amortised))
    if args.json:
        write_json_atomic(args.json, results)
        print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
