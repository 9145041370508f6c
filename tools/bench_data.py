"""Data benchmark: training-loader clips/s from the frame store (JPEG q90, raw) against decoding the same clips
from the video files on the fly (`data.source: videos`, decord in the workers), per clip protocol, and the store's
size in bytes per source byte.

    python tools/bench_data.py                  # 24 SSv2-like sources; AdaptFormer's and VideoMAE's clips
    python tools/bench_data.py --protocols tube --width 320 --short-side 224   # the removed tube benchmark's clip
    python tools/bench_data.py --device cuda    # adds nvJPEG batched decoding (AdaptFormer's clip, JPEG store)
    python tools/bench_data.py --smoke          # tiny sizes, seconds (used by the tests)

Sources are footage-like VP9 webm at Something-Something v2's size, frame rate and bit rate (240 x 427, 12 fps,
45 frames, ~90 KB; video_adapt/benchmarks/sources.py). The stores keep every frame at the decoded size (or at
--short-side), prepared with one worker. Protocols (video_adapt/benchmarks/data_loader.py): adaptformer = S-TSN
r = 4 + multi-scale crop, 8 x 224; videomae = S-SEG + RandAugment + random-resized crop + erasing box, 16 x 224,
2 copies per video; tube = the old tube benchmark's clip. Rates count clips as the model receives them (batch 8
videos), uint8 out; normalisation and erasing happen on the device in training and are not timed here. The timing
process runs 1 torch thread (--threads), as each DataLoader worker does, so a 0-worker rate is one core's.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from video_adapt.benchmarks.data_loader import CODECS, PROTOCOLS, DataBench, data_table, run_data_bench
from video_adapt.benchmarks.sources import make_sources
from video_adapt.console import command
from video_adapt.files import write_json_atomic


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DataBench()
    parser.add_argument("--videos", type=int, default=d.videos)
    parser.add_argument("--frames", type=int, default=d.frames, help="frames per source video")
    parser.add_argument("--height", type=int, default=d.height)
    parser.add_argument("--width", type=int, default=d.width)
    parser.add_argument("--protocols", nargs="+", default=d.protocols, choices=PROTOCOLS)
    parser.add_argument("--codecs", nargs="+", default=d.codecs, choices=CODECS)
    parser.add_argument("--short-side", type=int, default=d.short_side, help="store short side (0: decoded size)")
    parser.add_argument("--img-size", type=int, default=d.img_size)
    parser.add_argument("--clip-frames", type=int, help="frames per clip (default: each protocol's)")
    parser.add_argument("--dataset", default=d.dataset, help="ssv2 (VideoMAE: S-SEG) or another kind (S-LIN)")
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--min-clips", type=int, default=d.min_clips, help="clips timed per loader measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=d.workers)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where batched JPEG decoding runs (cuda: nvJPEG)")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help="torch threads of the timing process (workers run 1): 1 = a 0-worker rate per core")
    parser.add_argument("--rounds", type=int, default=d.rounds,
                        help="loader measurements per setting, interleaved across sources; the median is reported")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.videos, args.frames, args.height, args.width, args.protocols = 3, 12, 48, 64, list(PROTOCOLS)
        args.clip_frames, args.img_size, args.batch, args.min_clips, args.workers = 4, 32, 2, 4, [0]
        args.rounds = 1
    bench = DataBench(args.videos, args.frames, args.height, args.width, args.protocols, args.codecs,
                      args.short_side, args.img_size, args.clip_frames, args.dataset, args.batch, args.min_clips,
                      args.workers, args.device, decode_repeats=3 if args.smoke else 20,
                      threads=args.threads, rounds=args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        sources = make_sources(Path(tmp), args.videos, args.frames, args.height, args.width)
        results = {"args": vars(args), **run_data_bench(bench, sources, Path(tmp) / "stores",
                                                        log=lambda s: print(s, file=sys.stderr))}
    print(json.dumps({k: results[k] for k in ("backend", "torch threads", "sources")}))
    print(data_table(results))
    if args.json:
        write_json_atomic(args.json, results)
        print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
