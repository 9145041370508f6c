"""Training-loader throughput: the frame store (JPEG or raw) against decoding the same clips from the video files.

Both sides are the library's own training datasets under the same rules: `TrainClips` over a `StoreSource` or
over a `FileSource` (the video files, decord in the DataLoader workers, as `data.source: videos` trains), so a
difference is the source's and nothing else's. A clip protocol is the `TrainView` a training run resolves for
it (`recipes.apply_data_protocol` + `DataProtocol.train_view`), so the benchmark measures what training does:

- `adaptformer`: S-TSN r = 4, multi-scale crop, 8 x 224, one copy;
- `videomae`: SSv2 S-SEG (other datasets S-LIN r = 4), RandAugment at the decoded size, random-resized crop,
  one erasing box, 16 x 224, two copies per video;
- `tube`: the clip of the removed tube-store benchmark (S-SEG 16 x 224, random-resized crop of area 0.5-1, one
  copy), kept only to compare with its figures.

A rate counts clips as the model receives them: a `videomae` video gives two. The first batch is not timed (it
pays for the workers' start-up).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from video_adapt.data.datasets import FileSource, StoreSource, TrainClips, TrainView, collate_encoded, decode_batch
from video_adapt.data.decode import BACKENDS, open_video
from video_adapt.data.prepare import PrepOptions, PrepReport, SplitSpec, VideoEntry, prepare_store
from video_adapt.data.sampling import train_indices
from video_adapt.errors import VideoAdaptError

CLIP_FRAMES = {"adaptformer": 8, "videomae": 16, "tube": 16}  # AF:main_video.py num_frames 8; VM SSv2 scripts 16
PROTOCOLS = tuple(CLIP_FRAMES)
CODECS = ("jpeg", "raw")


def protocol_view(name: str, img_size: int = 224, dataset: str = "ssv2", num_frames: int | None = None) -> TrainView:
    """The training view of a clip protocol, resolved as a training run resolves `data.protocol` for `dataset`."""
    if name not in CLIP_FRAMES:
        raise ValueError(f"unknown clip protocol {name!r}; use one of {', '.join(PROTOCOLS)}")
    frames = num_frames or CLIP_FRAMES[name]
    if name == "tube":  # the removed TubeTrainDataset benchmark: segment sampling, RRC scale (0.5, 1), no flip
        return TrainView(frames, img_size, sampling="seg", stride=1, crop="rrc", crop_scale=(0.5, 1.0))
    from video_adapt.config import DataConfig
    from video_adapt.data.protocol import DataProtocol
    from video_adapt.recipes import apply_data_protocol
    data = apply_data_protocol(DataConfig(protocol=name, num_frames=frames, img_size=img_size), dataset,
                               flip_allowed=dataset != "ssv2")
    return DataProtocol.from_config(data).train_view()


def prepare(sources: Sequence[Path], out: Path, codec: str, short_side: int = 0, labels: Sequence[int] | None = None,
            dataset: str = "ssv2") -> PrepReport:
    """A one-split ("train") frame store of `sources`, one worker, every frame at the decoded size (or resized to
    `short_side`); a source that fails to prepare stops the benchmark."""
    labels = list(labels) if labels is not None else [0] * len(sources)
    entries = [VideoEntry(Path(p).stem, str(p), label) for p, label in zip(sources, labels)]
    report = prepare_store(out, [str(c) for c in range(max(labels) + 1)], [SplitSpec("train", entries)],
                           PrepOptions(short_side=short_side, codec=codec), source="bench", flip=dataset != "ssv2",
                           progress=False, dataset=dataset)
    if report.failed:
        raise VideoAdaptError(f"could not prepare {report.failures[0][2]}: {report.failures[0][3]}")
    return report


def videos_source(paths: Sequence[Path], labels: Sequence[int] | None = None, dataset: str = "ssv2") -> FileSource:
    """The video files as a training source (`data.source: videos`): decoded on the fly, decord first."""
    labels = list(labels) if labels is not None else [0] * len(paths)
    return FileSource([str(p) for p in paths], labels, [str(c) for c in range(max(labels) + 1)],
                      flip_allowed=dataset != "ssv2", dataset=dataset)


@dataclass
class LoaderTiming:
    """Clips out of a DataLoader after its first batch, and the seconds they took."""

    clips: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.clips / self.seconds


def time_loader(dataset: TrainClips, workers: int, batch: int, min_clips: int,
                device: torch.device | str = "cpu") -> LoaderTiming:
    """Time at least `min_clips` clips (num_sample copies each) through a shuffled DataLoader in one pass.

    decode="batch" datasets yield JPEG bytes; each batch is then decoded by one `decode_batch` call on `device`
    (nvJPEG on CUDA) and timed until its uint8 clips are there.
    """
    copies = 1 if dataset.decode == "batch" else dataset.view.num_sample
    videos = -(-min_clips // copies) + batch  # the first batch is not timed
    sampler = RandomSampler(dataset, num_samples=videos)  # several permutations when videos > len(dataset)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                        collate_fn=collate_encoded if dataset.decode == "batch" else None)
    clips, start = 0, None
    for item in loader:
        if dataset.decode == "batch":
            frames, _ = decode_batch(item[0], device)
            if frames.is_cuda:
                torch.cuda.synchronize()
        else:
            frames = item[0]
        if start is None:
            start = time.perf_counter()
            continue
        clips += frames.shape[0] * frames.shape[1]  # (B, copies, 3, T, H, W)
    if start is None or clips == 0:
        raise VideoAdaptError(f"time_loader: {videos} videos at batch {batch} give fewer than 2 batches")
    return LoaderTiming(clips, time.perf_counter() - start)


def mean_ms(fn: Callable[[], object], repeats: int) -> float:
    """Mean milliseconds of `fn()` over `repeats` calls after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - start) / repeats


def decode_ms(source, view: TrainView, repeats: int, seed: int = 0) -> float:
    """Milliseconds to open a video of `source` and decode one clip of `view`'s rule (no augmentation), over the
    first `repeats` videos (cycled): what a loader worker pays before augmenting."""
    rng = np.random.default_rng(seed)
    counter = itertools.count()

    def one() -> np.ndarray:
        video = source.video(next(counter) % len(source))
        return video.read(train_indices(view.sampling, video.num_frames, view.num_frames, view.stride, rng))
    return mean_ms(one, repeats)


@dataclass
class DataBench:
    """What `run_data_bench` measures: sources, stores, protocols, loader settings."""

    videos: int = 24
    frames: int = 45
    height: int = 240
    width: int = 427
    protocols: list[str] = field(default_factory=lambda: ["adaptformer", "videomae"])
    codecs: list[str] = field(default_factory=lambda: list(CODECS))
    short_side: int = 0
    img_size: int = 224
    clip_frames: int | None = None  # None: each protocol's own (8 or 16)
    dataset: str = "ssv2"
    batch: int = 8
    min_clips: int = 64
    workers: list[int] = field(default_factory=lambda: [0, 2])
    device: str = "cpu"
    decode_repeats: int = 20
    threads: int = 1  # torch threads of the timing process; DataLoader workers always run 1
    rounds: int = 3  # loader measurements per setting, interleaved; the median is reported


def run_data_bench(bench: DataBench, sources: Sequence[Path], workdir: Path,
                   log: Callable[[str], None] = lambda s: None) -> dict:
    """Prepare a store per codec from `sources`, then time every protocol's loader on each store and on the
    files (the median of `bench.rounds` interleaved rounds); returns nested figures (see tools/bench_data.py).

    The timing process runs `bench.threads` torch threads (default 1, as each DataLoader worker does), so a
    0-worker rate is one core's: on a shared host, 2 intra-op threads wait for each other whenever a neighbour
    holds a core (a 1.2 MB uint8 copy took 15 ms with 2 threads and 2 ms with 1 under load).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(bench.threads)
    try:
        return _run_data_bench(bench, sources, workdir, log)
    finally:
        torch.set_num_threads(threads)


def _run_data_bench(bench: DataBench, sources: Sequence[Path], workdir: Path, log: Callable[[str], None]) -> dict:
    backend = "decord" if "decord" in BACKENDS else next(iter(BACKENDS))
    source_bytes = sum(Path(p).stat().st_size for p in sources)
    first = open_video(sources[0])
    out: dict = {"backend": backend, "torch threads": torch.get_num_threads(),
                 "sources": {"videos": len(sources), "KB per video": source_bytes / len(sources) / 1e3,
                             "frames": first.num_frames, "decoded size": list(first.read([0]).shape[1:3])},
                 "stores": {}, "decode ms/clip": {}, "loader clips/s": {}, "store / videos": {},
                 "loader clips/s, every round": {}}
    stores = {}
    for codec in bench.codecs:
        log(f"preparing the {codec} store")
        report = prepare(sources, workdir / codec, codec, bench.short_side, dataset=bench.dataset)
        stores[f"{codec} store"] = StoreSource(workdir / codec, "train")
        out["stores"][codec] = {"bytes per source byte": report.bytes / source_bytes, "MB": report.bytes / 2 ** 20,
                                "prep videos/s (1 worker, wall)": report.videos / report.seconds}
    files = videos_source(sources, dataset=bench.dataset)
    for name in bench.protocols:
        view = protocol_view(name, bench.img_size, bench.dataset, bench.clip_frames)
        out["decode ms/clip"][name] = {key: decode_ms(src, view, bench.decode_repeats)
                                      for key, src in [*stores.items(), ("videos", files)]}
        datasets = {}
        for key, src in [*stores.items(), ("videos", files)]:
            datasets[key] = TrainClips(src, view)
            if src.codec == "jpeg" and not view.randaugment and view.num_sample == 1:
                datasets[f"{key}, batched decode on {bench.device}"] = TrainClips(src, view, decode="batch")
        samples: dict[str, dict[str, list[float]]] = {f"{w} workers": {} for w in bench.workers}
        for r in range(bench.rounds):  # interleaved, so that the host's drift reaches every source alike
            for workers in bench.workers:
                for label, dataset in datasets.items():
                    log(f"{name}, round {r + 1}, {workers} workers: {label}")
                    timing = time_loader(dataset, workers, bench.batch, bench.min_clips, bench.device)
                    samples[f"{workers} workers"].setdefault(label, []).append(timing.rate)
        rates = {w: {k: float(np.median(v)) for k, v in row.items()} for w, row in samples.items()}
        out["loader clips/s, every round"][name] = samples
        out["loader clips/s"][name] = rates
        out["store / videos"][name] = {w: {k: v / row["videos"] for k, v in row.items() if k != "videos"}
                                       for w, row in rates.items()}
    return out


def data_table(results: dict) -> str:
    """Markdown: per protocol, the loader clips/s of every source and the store / videos ratios."""
    lines = []
    for name, rates in results["loader clips/s"].items():
        keys = list(next(iter(rates.values())))
        lines += ["", f"{name}: loader clips/s (store / videos)", "| workers | " + " | ".join(keys) + " |",
                  "|---" * (len(keys) + 1) + "|"]
        for workers, row in rates.items():
            ratio = results["store / videos"][name][workers]
            cells = [f"{row[k]:.1f}" + (f" ({ratio[k]:.2f}x)" if k in ratio else "") for k in keys]
            lines.append(f"| {workers.split()[0]} | " + " | ".join(cells) + " |")
        decode = results["decode ms/clip"][name]
        lines.append("decode ms/clip: " + ", ".join(f"{k} {v:.2f}" for k, v in decode.items()))
    stores = results["stores"]
    lines += ["", "store: " + "; ".join(f"{c} {s['bytes per source byte']:.1f} bytes per source byte "
                                       f"({s['MB']:.1f} MB)" for c, s in stores.items())]
    return "\n".join(lines)
