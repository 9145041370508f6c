"""The frame store's training loader against the removed tube loader, in one process, on the same sources.

The tube loader (`TubeTrainDataset`, removed in b2afcfc) is taken from the git history (`git archive b2afcfc^`, so
this needs a clone, not a source archive) and imported under another package name, so both loaders run in the same
process, on the same source videos, at the same moment: on a shared host the load drifts by ~20% between runs,
which makes figures from separate runs hard to compare. Both load the tube benchmark's clip: 16 frames by segment
sampling, a random resized crop of area 0.5-1 to 224, no flip, batch 8, 0 workers (the old harness's settings),
from stores at short side 224 (JPEG q90 and raw). Each round times every measurement once, in a rotated order; the
median over rounds is reported, with the per-round ratio store / tube. "read" times only what the store does,
reading and decoding a clip's 16 frames, without the crop: the tube reads one of its two stored 16-frame clips; the
store draws 16 of the video's 45 frames afresh.

The crops differ by design: the tube loader resized with antialiasing, the `tube` view resizes as VideoMAE's
random-resized crop does (plain bilinear, the official kernel), which on a CPU is sometimes faster and sometimes
slower for the same box.
"""
from __future__ import annotations

import importlib
import itertools
import re
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
from torch.utils.data import DataLoader, Dataset, RandomSampler

from video_adapt.benchmarks.data_loader import mean_ms, prepare, protocol_view
from video_adapt.benchmarks.sources import make_sources
from video_adapt.data.datasets import StoreSource, TrainClips
from video_adapt.data.sampling import train_indices
from video_adapt.errors import ConfigError
from video_adapt.resources import repository_root

TUBE_COMMIT = "b2afcfc^"  # the last commit with the tube store
OLD = "video_adapt_tube"
CLIP_FRAMES = 16


def import_tube_package(folder: Path) -> ModuleType:
    """The tube-era `video_adapt` package from git, renamed so it imports beside today's."""
    repo = repository_root("the tube-loader comparison")
    got = subprocess.run(["git", "-C", str(repo), "archive", TUBE_COMMIT, "video_adapt"], capture_output=True)
    if got.returncode:
        raise ConfigError(f"{repo}: git cannot give {TUBE_COMMIT}, the tube loader's commit (a shallow clone or a "
                          f"source archive?): {got.stderr.decode(errors='replace').strip()[:200]}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=got.stdout, check=True)
    (folder / "video_adapt").rename(folder / OLD)
    for path in (folder / OLD).rglob("*.py"):
        path.write_text(re.sub(r"\bvideo_adapt\b", OLD, path.read_text()))
    sys.path.insert(0, str(folder))
    for name in ("prepare", "datasets", "sampling"):  # the parts used here, as attributes of the package
        importlib.import_module(f"{OLD}.data.{name}")
    return importlib.import_module(OLD)


def clip_reader(dataset: Dataset, old: ModuleType) -> Callable[[int], np.ndarray]:
    """Read and decode the frames of one training clip of video k, as the dataset's own __getitem__ does."""
    rng = np.random.default_rng(0)
    if isinstance(dataset, TrainClips):
        def read(k: int) -> np.ndarray:
            video = dataset.source.video(k)
            return video.read(train_indices("seg", video.num_frames, CLIP_FRAMES, 1, rng))
        return read

    def read_tube(k: int) -> np.ndarray:
        tube = int(dataset._views[k][rng.integers(0, len(dataset._views[k]))])
        positions = old.data.sampling.subsample_positions(dataset._stored_frames, CLIP_FRAMES, dataset.rule,
                                                          train=True, rng=rng)
        return dataset.store.frames(dataset.split, tube, positions)
    return read_tube


def clips_per_second(dataset: Dataset, clips: int, batch: int) -> float:
    """Clips/s out of a 0-worker DataLoader, the first batch untimed (either loader's items: clip first)."""
    loader = DataLoader(dataset, batch_size=batch, sampler=RandomSampler(dataset, num_samples=clips + batch))
    seen, start = 0, None
    for item in loader:
        if start is None:
            start = time.perf_counter()
            continue
        seen += item[0].shape[0]
    return seen / (time.perf_counter() - start)


def reads_per_second(read: Callable[[int], np.ndarray], count: int, clips: int) -> float:
    """Clips/s of `read(k)` (frames only, no crop) over videos k = 0, 1, ..., cycled."""
    counter = itertools.count()
    return 1000 / mean_ms(lambda: read(next(counter) % count), clips)


def build_loaders(workdir: Path, old: ModuleType, videos: int, frames: int) -> dict[str, Dataset]:
    """The tube loader and today's over stores of the same sources, JPEG and raw, at short side 224."""
    old_prepare, old_datasets = old.data.prepare, old.data.datasets
    sources = make_sources(workdir, videos, frames, 240, 320)
    entries = [old_prepare.VideoEntry(p.stem, str(p), 0) for p in sources]
    loaders: dict[str, Dataset] = {}
    for codec in ("jpeg", "raw"):
        opts = old_prepare.PrepOptions(frames=[CLIP_FRAMES], sampling="segment", short_side=224, train_views=2,
                                       codec=codec, shard_size=1000)
        old_prepare.prepare_store(workdir / f"tube_{codec}", ["a"], [old_prepare.SplitSpec("train", entries, "train")],
                                  opts, "bench", flip=False, progress=False)
        loaders[f"tube, {codec}"] = old_datasets.TubeTrainDataset(str(workdir / f"tube_{codec}"), "train",
                                                                  CLIP_FRAMES, 224, scale=(0.5, 1.0))
        prepare(sources, workdir / f"store_{codec}", codec, short_side=224)
        loaders[f"store, {codec}"] = TrainClips(StoreSource(workdir / f"store_{codec}", "train"),
                                                protocol_view("tube"))
    return loaders


def run_tube_compare(workdir: Path, videos: int, frames: int, rounds: int, clips: int,
                     progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every loader and read measurement, interleaved over `rounds`; per codec and kind the clips/s of each round,
    the medians and the ratio store / tube."""
    old = import_tube_package(workdir)
    loaders = build_loaders(workdir, old, videos, frames)
    measures = {f"{name}, loader": partial(clips_per_second, ds, clips, batch=8) for name, ds in loaders.items()}
    for name, ds in loaders.items():
        measures[f"{name}, read"] = partial(reads_per_second, clip_reader(ds, old), len(ds), clips)
    rates: dict[str, list[float]] = {name: [] for name in measures}
    names = list(measures)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rates[name].append(measures[name]())
        progress(f"round {r + 1}: " + ", ".join(f"{n} {rates[n][-1]:.0f}" for n in names))
    results: dict[str, Any] = {"tube commit": TUBE_COMMIT}
    for codec in ("jpeg", "raw"):
        for what in ("loader", "read"):
            tube, store = rates[f"tube, {codec}, {what}"], rates[f"store, {codec}, {what}"]
            ratios = [s / t for s, t in zip(store, tube)]
            results[f"{codec}, {what}"] = {"tube clips/s": tube, "store clips/s": store,
                                           "tube median": statistics.median(tube),
                                           "store median": statistics.median(store), "ratio per round": ratios,
                                           "ratio median": statistics.median(ratios)}
    return results


def tube_compare_lines(results: dict[str, Any]) -> list[str]:
    """One line per codec and kind: the medians and the ratio with its per-round range."""
    lines = []
    for key, row in results.items():
        if isinstance(row, dict) and "ratio median" in row:
            ratios = row["ratio per round"]
            lines.append(f"{key}: tube {row['tube median']:.0f} clips/s, store {row['store median']:.0f} clips/s, "
                         f"store / tube {row['ratio median']:.2f} (per round {min(ratios):.2f}-{max(ratios):.2f})")
    return lines
