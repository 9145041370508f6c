"""The frame store's training loader against the removed tube loader, in one process, on the same sources.

    python tools/bench_vs_tube.py                  # 24 SSv2-like 240 x 320 sources, 5 interleaved rounds
    python tools/bench_vs_tube.py --json out.json

The tube loader (`TubeTrainDataset`, removed in b2afcfc) is taken from the git history (`git archive b2afcfc^`,
so this needs a clone, not a source archive) and imported under another package name, so both loaders run in the
same process, on the same source videos, at the same moment: on a shared host the load drifts by ~20% between
runs, which makes figures from separate runs hard to compare. Both load the tube benchmark's clip: 16 frames by
segment sampling, a random resized crop of area 0.5-1 to 224, no flip, batch 8, 0 workers, 2 torch threads (the
old harness's settings), from stores at short side 224 (JPEG q90 and raw). Each round times every loader once, in
a rotated order; the median over rounds is reported, with the per-round ratio store / tube. "read" times only what
the store does, reading and decoding a clip's 16 frames, without the crop: the tube reads one of its two stored
16-frame clips; the store draws 16 of the video's 45 frames afresh.

The crops differ by design: the tube loader resized with antialiasing, the `tube` view resizes as VideoMAE's
random-resized crop does (plain bilinear, the official kernel), which on a CPU is sometimes faster and sometimes
slower for the same box.
"""
from __future__ import annotations

import argparse
import importlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from video_adapt.benchmarks.data_loader import prepare, protocol_view
from video_adapt.benchmarks.sources import make_sources
from video_adapt.data.datasets import StoreSource, TrainClips
from video_adapt.data.sampling import train_indices
from video_adapt.console import command
from video_adapt.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TUBE_COMMIT = "b2afcfc^"  # the last commit with the tube store
OLD = "video_adapt_tube"


def import_tube_package(folder: Path):
    """The tube-era `video_adapt` package from git, renamed so it imports beside today's."""
    got = subprocess.run(["git", "-C", str(REPO), "archive", TUBE_COMMIT, "video_adapt"], capture_output=True)
    if got.returncode:
        raise ConfigError(f"{REPO}: git cannot give {TUBE_COMMIT}, the tube loader's commit (a shallow clone or a "
                          f"source archive?): {got.stderr.decode(errors='replace').strip()[:200]}")
    archive = got.stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "video_adapt").rename(folder / OLD)
    for path in (folder / OLD).rglob("*.py"):
        path.write_text(re.sub(r"\bvideo_adapt\b", OLD, path.read_text()))
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{OLD}.data.datasets"), importlib.import_module(f"{OLD}.data.prepare")


def clip_reader(dataset: Dataset, old_sampling) -> Callable[[int], np.ndarray]:
    """Read and decode the frames of one training clip of video k, as the dataset's own __getitem__ does."""
    rng = np.random.default_rng(0)
    if isinstance(dataset, TrainClips):
        def read(k: int) -> np.ndarray:
            video = dataset.source.video(k)
            return video.read(train_indices("seg", video.num_frames, 16, 1, rng))
        return read
    def read_tube(k: int) -> np.ndarray:
        tube = int(dataset._views[k][rng.integers(0, len(dataset._views[k]))])
        positions = old_sampling.subsample_positions(dataset._stored_frames, 16, dataset.rule, train=True, rng=rng)
        return dataset.store.frames(dataset.split, tube, positions)
    return read_tube


def clips_per_second(dataset: Dataset, clips: int, batch: int) -> float:
    """Clips/s out of a 0-worker DataLoader, the first batch untimed."""
    loader = DataLoader(dataset, batch_size=batch, sampler=RandomSampler(dataset, num_samples=clips + batch))
    seen, start = 0, None
    for item in loader:
        if start is None:
            start = time.perf_counter()
            continue
        seen += item[0].shape[0]
    return seen / (time.perf_counter() - start)


def reads_per_second(read, count: int, clips: int) -> float:
    """Clips/s of `read(k)` (frames only, no crop) over videos k = 0, 1, ..., cycled."""
    read(0)
    start = time.perf_counter()
    for k in range(clips):
        read(k % count)
    return clips / (time.perf_counter() - start)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=45, help="frames per source video")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clips", type=int, default=192, help="clips timed per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (used by the tests)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.videos, args.frames, args.rounds, args.clips = 2, 20, 1, 8
    torch.set_num_threads(args.threads)
    results: dict[str, object] = {"args": vars(args), "tube commit": TUBE_COMMIT}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old_datasets, old_prepare = import_tube_package(tmp)
        old_sampling = importlib.import_module(f"{OLD}.data.sampling")
        sources = make_sources(tmp, args.videos, args.frames, 240, 320)
        entries = [old_prepare.VideoEntry(p.stem, str(p), 0) for p in sources]
        loaders = {}
        for codec in ("jpeg", "raw"):
            opts = old_prepare.PrepOptions(frames=[16], sampling="segment", short_side=224, train_views=2,
                                           codec=codec, shard_size=1000)
            old_prepare.prepare_store(tmp / f"tube_{codec}", ["a"], [old_prepare.SplitSpec("train", entries, "train")],
                                      opts, "bench", flip=False, progress=False)
            loaders[f"tube, {codec}"] = old_datasets.TubeTrainDataset(str(tmp / f"tube_{codec}"), "train", 16, 224,
                                                                      scale=(0.5, 1.0))
            prepare(sources, tmp / f"store_{codec}", codec, short_side=224)
            loaders[f"store, {codec}"] = TrainClips(StoreSource(tmp / f"store_{codec}", "train"), protocol_view("tube"))
        measures = {f"{name}, loader": partial(clips_per_second, ds, args.clips, batch=8) for name, ds in loaders.items()}
        for name, ds in loaders.items():
            measures[f"{name}, read"] = partial(reads_per_second, clip_reader(ds, old_sampling), len(ds), args.clips)
        rates: dict[str, list[float]] = {name: [] for name in measures}
        names = list(measures)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                rates[name].append(measures[name]())
            print(f"round {r + 1}: " + ", ".join(f"{n} {rates[n][-1]:.0f}" for n in names), flush=True)
    for codec in ("jpeg", "raw"):
        for what in ("loader", "read"):
            tube, store = rates[f"tube, {codec}, {what}"], rates[f"store, {codec}, {what}"]
            ratios = [s / t for s, t in zip(store, tube)]
            results[f"{codec}, {what}"] = {"tube clips/s": tube, "store clips/s": store,
                                           "tube median": statistics.median(tube),
                                           "store median": statistics.median(store), "ratio per round": ratios,
                                           "ratio median": statistics.median(ratios)}
            print(f"{codec}, {what}: tube {statistics.median(tube):.0f} clips/s, store {statistics.median(store):.0f} "
                  f"clips/s, store / tube {statistics.median(ratios):.2f} (per round {min(ratios):.2f}-"
                  f"{max(ratios):.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
