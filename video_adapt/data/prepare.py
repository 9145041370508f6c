"""Turn lists of videos into a frame store: decode each video once, keep its frames, encode, shard. Resumable, robust.

Every data_prep command builds `VideoEntry` lists per split and calls `prepare_store`. Workers decode, resize and
encode (the expensive parts run in parallel); the main process only appends bytes to the shard file. One failing
video (missing, empty, corrupt, truncated, not a video) is recorded in `failed.csv` with its reason and the job
goes on; a killed job, rerun, keeps the finished shards and redoes only the rest.

Many machines: `shard=(i, n)` prepares only part i of n (a contiguous, count-balanced range of every split's rows,
`shard_plan`) into a store-like part directory; `video_adapt.data.merge` joins the parts by hard-linking their shard
files. Shard numbers are global, so the parts' files never collide and the merge copies no frame.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm import tqdm

from video_adapt.data.decode import VideoDecodeError, open_video
from video_adapt.data.store import (
    FORMAT,
    VERSION,
    PreparedVideo,
    ShardWriter,
    SplitCounts,
    StoreMeta,
    class_counts,
    encode_frames,
    label_text,
    read_shard_index,
    resize_short_side,
    shard_done,
)
from video_adapt.errors import VideoAdaptError
from video_adapt.files import write_csv_atomic, write_json_atomic

DECODE_CHUNK = 64  # frames decoded, resized and encoded at a time: bounded memory for long videos


class PrepError(VideoAdaptError):
    """The job cannot start (bad inputs or options); one line."""


@dataclass
class VideoEntry:
    id: str
    path: str
    label: int | tuple[int, ...]  # a class index (-1: unlabelled), or a multi-label video's class indices
    error: str | None = None  # a problem found while listing (e.g. a path escaping the root)


@dataclass
class PrepOptions:
    short_side: int = 0  # 0 keeps the decoded size, as the official loaders (keep_aspect_ratio) decode
    keep_every: int = 1  # keep every k-th frame (long sources such as Kinetics); 1 keeps every frame
    codec: str = "jpeg"
    quality: int = 90
    shard_size: int = 500

    def check(self) -> None:
        if self.codec not in ("jpeg", "raw"):
            raise PrepError(f"--codec must be jpeg or raw, not {self.codec!r}")
        if self.keep_every < 1 or self.shard_size < 1 or self.short_side < 0:
            raise PrepError("--keep-every and the shard size must be at least 1, --short-side at least 0")
        if not 1 <= self.quality <= 100:
            raise PrepError(f"--quality must be in 1..100, not {self.quality}")


@dataclass
class SplitSpec:
    name: str
    entries: list[VideoEntry]


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (I in 0..N-1, as a SLURM array index) -> (I, N); anything else is a one-line PrepError."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise PrepError(f"--shard {text!r}: expected I/N, e.g. 3/8") from None
    if not 0 <= i < n:
        raise PrepError(f"--shard {text!r}: I must be in 0..N-1")
    return i, n


def part_name(index: int, parts: int) -> str:
    """Directory of part `index` of `parts` inside the output directory."""
    return f"part-{index}-of-{parts}"


def shard_plan(rows: int, shard_size: int, part: int = 0, parts: int = 1) -> list[tuple[int, range]]:
    """The shard files that part `part` of `parts` writes for a split of `rows` videos: (shard number, rows).

    Part p owns rows [p * rows // parts, (p + 1) * rows // parts): contiguous, balanced to one video, and fixed by
    (rows, parts) alone, so a rerun or another worker count gives the same share. Each part cuts its range into
    shards of `shard_size`; shard numbers run on across the parts in row order, so the parts' files never share a
    name and the merged split is numbered like a whole job's. `parts=1` is the whole job. An empty split gets one
    empty shard (from part 0) so that the split still exists.
    """
    plan, number = [], 0
    for p in range(parts):
        start, end = p * rows // parts, (p + 1) * rows // parts
        for k in range(start, end, shard_size):
            if p == part:
                plan.append((number, range(k, min(k + shard_size, end))))
            number += 1
    if rows == 0 and part == 0:
        plan.append((0, range(0)))
    return plan


def entries_digest(splits: list[SplitSpec]) -> str:
    """sha256 of every split's entry list (id, path, label, listing error): parts of one job must agree on it."""
    h = hashlib.sha256()
    for spec in splits:
        h.update(json.dumps([spec.name, [[e.id, e.path, e.label, e.error] for e in spec.entries]]).encode())
    return h.hexdigest()


def prepare_video(path: str, opts: PrepOptions) -> PreparedVideo:
    """Decode one video and encode its kept frames (the work of one worker)."""
    reader = open_video(path)
    kept = np.arange(0, reader.num_frames, opts.keep_every)
    payloads: list[bytes] = []
    height = width = 0
    for at in range(0, len(kept), DECODE_CHUNK):
        frames = resize_short_side(reader.read(kept[at:at + DECODE_CHUNK]), opts.short_side)
        height, width = frames.shape[1:3]
        payloads += encode_frames(frames, opts.codec, opts.quality)
    return PreparedVideo(reader.num_frames, reader.fps, height, width, payloads)


def _work(job: tuple[int, VideoEntry, PrepOptions]) -> tuple[int, PreparedVideo | None, str | None]:
    row, entry, opts = job
    if entry.error:
        return row, None, entry.error
    try:
        return row, prepare_video(entry.path, opts), None
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


def job_options(classes: list[str], splits: list[SplitSpec], opts: PrepOptions, source: str) -> dict[str, Any]:
    """What prep.json records: a rerun (or another part of the same job) must agree on all of it."""
    return {"format": FORMAT, "version": VERSION, "classes": classes, "opts": asdict(opts), "source": source,
            "splits": {s.name: len(s.entries) for s in splits}, "entries": entries_digest(splits)}


def _prepare_out_dir(out: Path, options: dict[str, Any], overwrite: bool) -> None:
    prep_path = out / "prep.json"
    if out.exists() and any(out.iterdir()):
        looks_like_store = prep_path.exists() or (out / "meta.json").exists()
        if overwrite:
            if not looks_like_store:
                raise PrepError(f"{out}: not empty and not a frame store; refusing to overwrite it")
            shutil.rmtree(out)
        elif not looks_like_store:
            raise PrepError(f"{out}: not empty and not a frame store; choose another --out")
        elif not prep_path.exists() or json.loads(prep_path.read_text()) != options:
            raise PrepError(f"{out}: prepared earlier with other options or by another version; "
                            "pass --overwrite to start again")
    out.mkdir(parents=True, exist_ok=True)
    if not prep_path.exists():
        write_json_atomic(prep_path, options)


def prepare_store(out: str | Path, classes: list[str], splits: list[SplitSpec], opts: PrepOptions, *,
                  source: str, flip: bool, workers: int = 1, overwrite: bool = False, progress: bool = True,
                  dataset: str = "other", shard: tuple[int, int] | None = None, multilabel: bool = False) -> PrepReport:
    """Write (or finish) the store at `out`; returns counts and failures.

    `flip` records whether horizontal flips keep the labels (False for SSv2-like data); `dataset` (ssv2, hmdb51,
    synthetic, other) lets the data protocols pick their per-dataset settings; `multilabel`: the entries' labels are
    sets of class indices (tuples), and the store says so. With `shard=(i, n)`, `out`
    becomes part i of n: only its rows (`shard_plan`), with global row numbers, its own failed.csv and a meta.json
    that marks it as a part (a FrameStore refuses it until `merge_parts` has joined all n).
    """
    opts.check()
    out = Path(out)
    part, parts = shard or (0, 1)
    if not 0 <= part < parts:
        raise PrepError(f"shard {part}/{parts}: the index must be in 0..{parts - 1}")
    options = job_options(classes, splits, opts, source)
    if multilabel:
        bad = next((e for s in splits for e in s.entries if not isinstance(e.label, tuple)), None)
        if bad is not None:
            raise PrepError(f"{bad.path}: a multi-label store needs a set of labels per video, got {bad.label!r}")
        options["multilabel"] = True
    if shard is not None:
        options["shard"] = [part, parts]
    _prepare_out_dir(out, options, overwrite)
    start = time.perf_counter()
    todo = []
    owned: dict[str, list[int]] = {}
    for spec in splits:
        directory = out / spec.name
        directory.mkdir(exist_ok=True)
        plan = shard_plan(len(spec.entries), opts.shard_size, part, parts)
        owned[spec.name] = [r for _, rows in plan for r in rows]
        todo += [(spec, directory, index, rows) for index, rows in plan if not shard_done(directory, index)]
    total = sum(len(rows) for *_, rows in todo)
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 and total > 1 else None
    bar = tqdm(total=total, desc="preparing", unit="video", disable=not progress, file=sys.stderr)
    try:
        for spec, directory, index, rows in todo:
            writer = ShardWriter(directory, index)
            jobs = [(r, spec.entries[r], opts) for r in rows]
            results: Iterable = pool.imap(_work, jobs) if pool else map(_work, jobs)
            try:
                for row, video, reason in results:
                    if video is None:
                        writer.add_failure(row, str(reason))
                    else:
                        writer.add_video(row, video)
                    bar.update(1)
            except BaseException:
                writer.abort()
                raise
            writer.close()
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return _finish(out, classes, splits, owned, opts=opts, source=source, flip=flip, start=start, dataset=dataset,
                   part=(part, parts) if shard is not None else None, multilabel=multilabel)


def _finish(out: Path, classes: list[str], splits: list[SplitSpec], owned: dict[str, list[int]], *,
            opts: PrepOptions, source: str, flip: bool, start: float, dataset: str,
            part: tuple[int, int] | None, multilabel: bool = False) -> PrepReport:
    """Write videos.csv per split, failed.csv and, last, meta.json (its presence means: complete), for the rows
    this job owns (all of them, or a part's share)."""
    failures: list[tuple[str, str, str, str]] = []
    split_meta: dict[str, SplitCounts] = {}
    total_bytes = 0
    videos = 0
    for spec in splits:
        directory = out / spec.name
        info: dict[int, tuple] = {}
        failed: dict[int, str] = {}
        for path in sorted(directory.glob("shard-*.npz")):
            z = read_shard_index(path)
            for row, stored, n, fps, h, w in zip(z["video_rows"], z["video_stored"], z["video_frames"],
                                                 z["video_fps"], z["video_height"], z["video_width"]):
                info[int(row)] = (int(n), int(stored), float(fps), int(h), int(w))
            failed.update(zip(z["failed_rows"].tolist(), z["failed_reasons"].tolist()))
            total_bytes += int(z["frame_length"].sum())
        rows = []
        for r in owned[spec.name]:
            e = spec.entries[r]
            if r in info:
                n, stored, fps, h, w = info[r]
                rows.append([r, e.id, label_text(e.label), e.path, n, stored, f"{fps:.3f}", h, w])
            elif r in failed:
                failures.append((spec.name, e.id, e.path, failed[r]))
        columns = ["row", "id", "label", "source", "num_frames", "stored_frames", "fps", "height", "width"]
        write_csv_atomic(directory / "videos.csv", columns, rows)
        videos += len(owned[spec.name])
        split_meta[spec.name] = SplitCounts(videos=len(rows), failed=len(owned[spec.name]) - len(rows),
                                            frames=int(sum(int(r[5]) for r in rows)),
                                            per_class=class_counts([r[2] for r in rows], len(classes)))
    write_csv_atomic(out / "failed.csv", ["split", "id", "source", "reason"], failures)
    meta = StoreMeta(classes=list(classes), keep_every=opts.keep_every, short_side=opts.short_side, codec=opts.codec,
                     quality=opts.quality, flip=flip, source=source, splits=split_meta, dataset=dataset, part=part,
                     multilabel=multilabel)
    write_json_atomic(out / "meta.json", meta.as_dict())
    return PrepReport(out, videos, len(failures), time.perf_counter() - start, total_bytes, failures)
