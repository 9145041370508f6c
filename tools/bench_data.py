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

from video_adapt.data.datasets import TubeTrainDataset, collate_encoded, decode_batch
from video_adapt.data.decode import open_video
from video_adapt.data.prepare import PrepOptions, SplitSpec, VideoEntry, prepare_store
from video_adapt.data.sampling import segment_indices
from video_adapt.data.synthetic import write_video
from video_adapt.data.transforms import random_resized_crop, to_tensor_clip
from video_adapt.data.tubes import TubeStore, decode_jpegs


# Something-Something v2 ships 220,847 VP9 webm videos at 240p and 12 fps in about 19.4 GB: about 88 KB, or
# about 175 kbit/s, for an average clip of about 4 s. Sources are encoded at that rate so that decoding them costs
# what decoding the real dataset costs (flat synthetic frames compress 4x smaller and decode 2x faster).
SSV2_BIT_RATE = 150_000  # libvpx-vp9 overshoots its target by ~15% on these frames: ~90 KB per 48 frames


def footage_like(seed: int, frames: int, height: int, width: int) -> np.ndarray:
    """RGB frames (T, H, W, 3) with the statistics that make real footage expensive to encode and decode:
    texture at every scale (1/f-like), a hand-held camera pan, a moving object and sensor noise."""
    import cv2
    rng = np.random.default_rng(seed)
    pad_h, pad_w = height // 4, width // 2
    big_h, big_w = height + 2 * pad_h, width + 2 * pad_w
    texture = np.full((big_h, big_w, 3), 110, np.float32)
    for cell, amplitude in ((64, 50), (16, 30), (4, 18), (1, 8)):
        noise = rng.normal(0, 1, (big_h // cell + 2, big_w // cell + 2, 3)).astype(np.float32)
        texture += amplitude * cv2.resize(noise, (big_w, big_h), interpolation=cv2.INTER_CUBIC)[:big_h, :big_w]
    yy, xx = np.mgrid[0:height, 0:width]
    video = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        dx = int(pad_w * t / max(frames - 1, 1))
        dy = int(pad_h * (1 + 0.8 * np.sin(t / 9 + seed)))
        frame = texture[dy:dy + height, dx:dx + width].copy()
        cx, cy = (0.2 + 0.6 * t / frames) * width, height / 2 + height / 8 * np.sin(t / 5 + seed)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 < (height / 7) ** 2
        frame[inside] = frame[inside] * 0.4 + np.array((200, 120, 90), np.float32) * 0.6
        frame += rng.normal(0, 2.5, frame.shape).astype(np.float32)
        video[t] = np.clip(frame, 0, 255)
    return video


def make_sources(folder: Path, count: int, frames: int, height: int, width: int) -> list[Path]:
    """`count` footage-like VP9 webm sources at about Something-Something v2's bit rate."""
    paths = []
    for i in range(count):
        path = folder / f"v{i:03d}.webm"
        write_video(str(path), footage_like(i, frames, height, width), fps=12, codec="libvpx-vp9",
                    bit_rate=SSV2_BIT_RATE)
        paths.append(path)
    return paths


class OnTheFly(Dataset):
    """The usual alternative: open the source video and decode the clip's frames for every sample."""

    def __init__(self, paths: list[Path], num_frames: int, img_size: int, backend: str):
        self.paths, self.num_frames, self.img_size, self.backend = paths, num_frames, img_size, backend

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng(i)
        reader = open_video(self.paths[i], [self.backend])
        frames = reader.read(segment_indices(reader.num_frames, self.num_frames, True, rng))
        return random_resized_crop(to_tensor_clip(frames), self.img_size, rng, scale=(0.5, 1.0)), 0


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
    backend = "decord" if "decord" in __import__("video_adapt.data.decode", fromlist=["BACKENDS"]).BACKENDS else "pyav"
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
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
