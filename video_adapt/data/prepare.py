"""Turn lists of videos into a tube store: decode once, sample, resize, encode, shard. Resumable and robust.

Every data_prep command builds `VideoEntry` lists per split and calls `prepare_store`. One failing video (missing,
empty, corrupt, truncated, not a video) is recorded in `failed.csv` with its reason and the job goes on; a killed
job, rerun, keeps the finished shards and redoes only the rest.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm import tqdm

from video_adapt.data.decode import VideoDecodeError, open_video
from video_adapt.data.sampling import eval_clip_indices, train_clip_indices
from video_adapt.data.tubes import (
    FORMAT,
    TEST_VIEW,
    TRAIN_VIEW,
    VERSION,
    ShardWriter,
    Tube,
    resize_short_side,
    shard_done,
    write_csv_atomic,
    write_json_atomic,
)
from video_adapt.errors import VideoAdaptError


class PrepError(VideoAdaptError):
    """The job cannot start (bad inputs or options); one line."""


@dataclass
class VideoEntry:
    id: str
    path: str
    label: int
    error: str | None = None  # a problem found while listing (e.g. a path escaping the root)


@dataclass
class PrepOptions:
    frames: list[int] = field(default_factory=lambda: [2, 4, 8, 16])
    sampling: str = "segment"  # segment | dense
    stride: int = 4  # dense sampling stride
    short_side: int = 256  # 0 keeps the source size
    train_views: int = 2
    test_clips: int = 2
    codec: str = "jpeg"
    quality: int = 90
    shard_size: int = 500
    seed: int = 0

    def check(self) -> None:
        if self.sampling not in ("segment", "dense"):
            raise PrepError(f"--sampling must be segment or dense, not {self.sampling!r}")
        if self.codec not in ("jpeg", "raw"):
            raise PrepError(f"--codec must be jpeg or raw, not {self.codec!r}")
        if not self.frames or min(self.frames) < 1:
            raise PrepError("--frames needs positive frame counts")
        big = max(self.frames)
        if self.sampling == "segment" and any(big % t for t in self.frames):
            raise PrepError(f"--frames {self.frames}: with segment sampling every count must divide {big}, "
                            "since smaller clips are derived from the largest")
        if self.train_views < 1 or self.test_clips < 1 or self.shard_size < 1:
            raise PrepError("--train-views, --test-clips and the shard size must be at least 1")


@dataclass
class SplitSpec:
    name: str
    entries: list[VideoEntry]
    kind: str  # "train" (random training views) | "eval" (test views per frame count)


def video_tubes(path: str, kind: str, opts: PrepOptions, row: int) -> tuple[list[Tube], tuple[int, float, int, int]]:
    """Decode one video into its stored tubes (the work of one worker)."""
    reader = open_video(path)
    n = reader.num_frames
    plans: list[tuple[int, int, np.ndarray]] = []
    if kind == "train":
        rng = np.random.default_rng((opts.seed, row))
        for view in range(opts.train_views):
            plans.append((TRAIN_VIEW, view, train_clip_indices(opts.sampling, n, max(opts.frames), rng, opts.stride)))
    else:
        for t in sorted(set(opts.frames)):
            for clip, idx in enumerate(eval_clip_indices(opts.sampling, n, t, opts.test_clips, opts.stride)):
                plans.append((TEST_VIEW, clip, idx))
    wanted = np.unique(np.concatenate([p[2] for p in plans]))
    frames = resize_short_side(reader.read(wanted), opts.short_side)
    lookup = {int(f): i for i, f in enumerate(wanted)}
    tubes = [Tube(k, v, frames[[lookup[int(f)] for f in idx]]) for k, v, idx in plans]
    return tubes, (n, reader.fps, reader.height, reader.width)


def _work(job: tuple[int, VideoEntry, str, PrepOptions]) -> tuple[int, list[Tube] | None, Any]:
    row, entry, kind, opts = job
    if entry.error:
        return row, None, entry.error
    try:
        tubes, info = video_tubes(entry.path, kind, opts, row)
        return row, tubes, info
    except VideoDecodeError as err:
        return row, None, str(err)
    except Exception as err:  # anything else still must not stop a 200k-video job
        return row, None, f"{entry.path}: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"


@dataclass
class PrepReport:
    out: Path
    videos: int
    failed: int
    seconds: float
    bytes: int
    failures: list[tuple[str, str, str, str]]

    def summary(self) -> str:
        rate = self.videos / self.seconds if self.seconds > 0 else 0.0
        return (f"prepared {self.videos - self.failed} of {self.videos} videos ({self.failed} failed) in "
                f"{self.seconds:.1f} s ({rate:.1f} videos/s), {self.bytes / 2**20:.1f} MB -> {self.out}")


def _prepare_out_dir(out: Path, options: dict[str, Any], overwrite: bool) -> None:
    prep_path = out / "prep.json"
    if out.exists() and any(out.iterdir()):
        looks_like_store = prep_path.exists() or (out / "meta.json").exists()
        if overwrite:
            if not looks_like_store:
                raise PrepError(f"{out}: not empty and not a tube store; refusing to overwrite it")
            shutil.rmtree(out)
        elif not looks_like_store:
            raise PrepError(f"{out}: not empty and not a tube store; choose another --out")
        elif json.loads(prep_path.read_text()) != options:
            raise PrepError(f"{out}: prepared earlier with other options; pass --overwrite to start again")
    out.mkdir(parents=True, exist_ok=True)
    if not prep_path.exists():
        write_json_atomic(prep_path, options)


def prepare_store(out: str | os.PathLike, classes: list[str], splits: list[SplitSpec], opts: PrepOptions,
                  source: str, flip: bool, workers: int = 1, overwrite: bool = False, progress: bool = True,
                  extra_meta: dict[str, Any] | None = None) -> PrepReport:
    """Write (or finish) the store at `out`; returns counts and failures."""
    opts.check()
    out = Path(out)
    options = {"classes": classes, "opts": asdict(opts), "source": source,
               "splits": {s.name: [len(s.entries), s.kind] for s in splits}}
    _prepare_out_dir(out, options, overwrite)
    start = time.perf_counter()
    todo = []
    for spec in splits:
        directory = out / spec.name
        directory.mkdir(exist_ok=True)
        for k in range(0, max(len(spec.entries), 1), opts.shard_size):
            index = k // opts.shard_size
            if not shard_done(directory, index):
                todo.append((spec, directory, index, range(k, min(k + opts.shard_size, len(spec.entries)))))
    total = sum(len(rows) for *_, rows in todo)
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 and total > 1 else None
    bar = tqdm(total=total, desc="preparing", unit="video", disable=not progress, file=sys.stderr)
    try:
        for spec, directory, index, rows in todo:
            writer = ShardWriter(directory, index, opts.codec, opts.quality)
            jobs = [(r, spec.entries[r], spec.kind, opts) for r in rows]
            results: Iterable = pool.imap(_work, jobs) if pool else map(_work, jobs)
            try:
                for row, tubes, info in results:
                    if tubes is None:
                        writer.add_failure(row, str(info))
                    else:
                        writer.add_video(row, tubes, info)
                    bar.update(1)
            except BaseException:
                writer.abort()
                raise
            writer.close()
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return _finish(out, classes, splits, opts, source, flip, start, extra_meta or {})


def _finish(out: Path, classes: list[str], splits: list[SplitSpec], opts: PrepOptions, source: str, flip: bool,
            start: float, extra_meta: dict[str, Any]) -> PrepReport:
    """Write videos.csv per split, failed.csv and, last, meta.json (its presence means: complete)."""
    failures: list[tuple[str, str, str, str]] = []
    split_meta: dict[str, Any] = {}
    total_bytes = 0
    videos = 0
    for spec in splits:
        directory = out / spec.name
        info: dict[int, tuple] = {}
        failed: dict[int, str] = {}
        for path in sorted(directory.glob("shard-*.npz")):
            with np.load(path, allow_pickle=False) as z:
                for row, n, fps, h, w in zip(z["video_rows"], z["video_frames"], z["video_fps"], z["video_height"],
                                             z["video_width"]):
                    info[int(row)] = (int(n), float(fps), int(h), int(w))
                failed.update(zip(z["failed_rows"].tolist(), z["failed_reasons"].tolist()))
                total_bytes += int(z["frame_length"].sum())
        rows = []
        for r, e in enumerate(spec.entries):
            if r in info:
                n, fps, h, w = info[r]
                rows.append([r, e.id, e.label, e.path, n, f"{fps:.3f}", h, w])
            elif r in failed:
                failures.append((spec.name, e.id, e.path, failed[r]))
        write_csv_atomic(directory / "videos.csv", ["row", "id", "label", "source", "num_frames", "fps", "height", "width"],
                         rows)
        videos += len(spec.entries)
        counts = np.bincount([int(r[2]) for r in rows if int(r[2]) >= 0], minlength=len(classes))
        split_meta[spec.name] = {"kind": spec.kind, "videos": len(rows), "failed": len(spec.entries) - len(rows),
                                 "per_class": counts.tolist()}
    write_csv_atomic(out / "failed.csv", ["split", "id", "source", "reason"], failures)
    meta = {"format": FORMAT, "version": VERSION, "classes": classes, "sampling": opts.sampling, "stride": opts.stride,
            "frames": sorted(set(opts.frames)), "train_views": opts.train_views, "test_clips": opts.test_clips,
            "short_side": opts.short_side, "codec": opts.codec, "quality": opts.quality, "flip": flip,
            "source": source, "splits": split_meta, **extra_meta}
    write_json_atomic(out / "meta.json", meta)
    return PrepReport(out, videos, len(failures), time.perf_counter() - start, total_bytes, failures)
