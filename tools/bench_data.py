"""Data benchmark: preparation throughput, and training-loader clips/s from tubes (JPEG, raw) against decoding
the same clips on the fly from the source videos with decord, plus the store format against HDF5.

    python tools/bench_data.py                 # 240p VP9 webm sources, 48 frames, 16-frame clips at 224 px
    python tools/bench_data.py --smoke         # tiny sizes, seconds (used by the tests)

Sources are generated footage-like 240 x 320 VP9 webm at Something-Something v2's bit rate; prep is timed with one worker. Loader rates are
per process, batch 8, with 0 and 2 DataLoader workers; each clip is 16 frames chosen by segment sampling, a random
resized crop to the training size, uint8 out (normalisation happens on the device in training).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from video_adapt.benchmarks.sources import OnTheFly, make_sources
from video_adapt.console import command
from video_adapt.data.datasets import TubeTrainDataset, collate_encoded, decode_batch
from video_adapt.data.decode import BACKENDS, open_video
from video_adapt.data.prepare import PrepOptions, SplitSpec, VideoEntry, prepare_store
from video_adapt.data.sampling import segment_indices
from video_adapt.data.tubes import TubeStore, decode_jpegs
from video_adapt.files import write_json_atomic


def loader_rate(dataset: Dataset, workers: int, batch: int, min_clips: int, device: str | None = None) -> float:
    """Clips/s out of a DataLoader. With `device`, the dataset yields JPEG bytes (decode='batch') and each batch is
    decoded in one `decode_jpeg` call there (nvJPEG on CUDA), finished when the uint8 clips are on the device."""
    batched = device is not None
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=False,
                        persistent_workers=workers > 0, collate_fn=collate_encoded if batched else None)
    seen, start = 0, None
    while seen < min_clips:
        for clips, _ in loader:
            if batched:
                clips = decode_batch(clips, device)
                if clips.is_cuda:
                    torch.cuda.synchronize()
            if start is None:  # the first batch pays for worker start-up
                start = time.perf_counter()
                continue
            seen += clips.shape[0]
    return seen / (time.perf_counter() - start)


def decode_ms(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats


def hdf5_compare(store: TubeStore, repeats: int) -> dict[str, float] | None:
    """Random tube reads: our memory-mapped shards against the same JPEG bytes / raw frames in HDF5."""
    try:
        import h5py
    except ImportError:
        return None
    split = store.split("train")
    n = len(split.tubes)
    rng = np.random.default_rng(0)
    order = rng.integers(0, n, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tubes.h5"
        with h5py.File(path, "w") as f:
            blob = np.concatenate([np.frombuffer(b, np.uint8) for t in range(n) for b in store.payloads("train", t)])
            f.create_dataset("jpeg", data=blob)
            f.create_dataset("offset", data=split.frame_offset)
            f.create_dataset("length", data=split.frame_length)
            raw = f.create_group("raw")
            for t in range(n):
                raw.create_dataset(str(t), data=store.frames("train", t), chunks=True)
        with h5py.File(path, "r") as f:
            offsets, lengths, jpeg = f["offset"][:], f["length"][:], f["jpeg"]
            first = split.tubes[:, 4]
            count = split.tubes[:, 3]

            def h5_jpeg(t):
                a, b = first[t], first[t] + count[t]
                return decode_jpegs([jpeg[offsets[k]:offsets[k] + lengths[k]] for k in range(a, b)])

            out = {"hdf5 jpeg": decode_ms(lambda: [h5_jpeg(int(t)) for t in order], 1) / repeats,
                   "hdf5 raw": decode_ms(lambda: [f["raw"][str(int(t))][:] for t in order], 1) / repeats}
    out["ours jpeg"] = decode_ms(lambda: [store.frames("train", int(t)) for t in order], 1) / repeats
    return out


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=48, help="frames per source video")
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--clip-frames", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--min-clips", type=int, default=96, help="clips timed per loader measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where batched JPEG decoding runs (cuda: nvJPEG)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.videos, args.frames, args.height, args.width = 4, 12, 48, 64
        args.clip_frames, args.img_size, args.min_clips, args.workers = 4, 32, 8, [0]
    backend = "decord" if "decord" in BACKENDS else "pyav"
    results: dict[str, object] = {"backend": backend, "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = make_sources(tmp, args.videos, args.frames, args.height, args.width)
        entries = [VideoEntry(p.stem, str(p), 0) for p in sources]
        stores = {"jpeg, source size": ("jpeg", 0), f"jpeg, short side {args.img_size}": ("jpeg", args.img_size),
                  f"raw, short side {args.img_size}": ("raw", args.img_size)}
        for name, (codec, side) in stores.items():
            opts = PrepOptions(frames=[args.clip_frames], sampling="segment", short_side=side, train_views=2,
                               codec=codec, shard_size=1000)
            out = tmp / name.replace(" ", "_").replace(",", "")
            report = prepare_store(out, ["a"], [SplitSpec("train", entries, "train")], opts, "bench", flip=False,
                                   progress=False)
            results[f"prep videos/s ({name})"] = report.videos / report.seconds
            results[f"store MB ({name})"] = report.bytes / 2**20
            stores[name] = out
        # decode cost of one clip: decord from the source vs our tubes
        reader = open_video(sources[0], [backend])
        idx = segment_indices(reader.num_frames, args.clip_frames, False)
        results["decode ms/clip: on the fly"] = decode_ms(lambda: open_video(sources[0], [backend]).read(idx), 5)
        for name, out in stores.items():
            store = TubeStore(out)
            results[f"decode ms/clip: {name}"] = decode_ms(lambda: store.frames("train", 0), 20)
        for workers in args.workers:
            fly = loader_rate(OnTheFly(sources, args.clip_frames, args.img_size, backend), workers, args.batch, args.min_clips)
            results[f"loader clips/s, {workers} workers: on the fly"] = fly
            for name, out in stores.items():
                ds = TubeTrainDataset(str(out), "train", args.clip_frames, args.img_size, scale=(0.5, 1.0))
                rate = loader_rate(ds, workers, args.batch, args.min_clips)
                results[f"loader clips/s, {workers} workers: {name}"] = rate
                results[f"speed-up, {workers} workers: {name}"] = rate / fly
                if name.startswith("jpeg"):  # batched decoding in the main process (nvJPEG on a GPU)
                    ds = TubeTrainDataset(str(out), "train", args.clip_frames, args.img_size, scale=(0.5, 1.0),
                                          decode="batch")
                    rate = loader_rate(ds, workers, args.batch, args.min_clips, args.device)
                    results[f"loader clips/s, {workers} workers: {name}, batched decode on {args.device}"] = rate
                    results[f"speed-up, {workers} workers: {name}, batched decode on {args.device}"] = rate / fly
        results["random tube read+decode ms"] = hdf5_compare(TubeStore(stores["jpeg, source size"]), 20 if not args.smoke else 4)
    for key, value in results.items():
        if key != "args":
            print(f"{key}: {json.dumps(value) if isinstance(value, dict) else (f'{value:.2f}' if isinstance(value, float) else value)}")
    if args.json:
        write_json_atomic(args.json, results)
        print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
