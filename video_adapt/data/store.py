"""The frame store: every decoded frame of every video (or every k-th), in a few large shard files, by random access.

The official loaders decode each video afresh every epoch and draw a new temporal sample from all of its frames.
The store keeps exactly what they decode (every frame, at the decoded resolution, optionally downscaled), so the
sampling rules of `sampling.py` run at load time on the stored frames: training, testing and inference share one
implementation of each rule, and nothing about a clip is fixed at preparation time.

Layout of a store directory (format `video_adapt.frames`, version 2):

    meta.json                 classes, keep_every, short side, codec, flip default, dataset kind, per-split counts,
                              `"multilabel": true` for label sets; written last: its presence means the preparation
                              finished
    prep.json                 the preparation options (a rerun with other options needs --overwrite)
    failed.csv                videos that could not be prepared: split, id, source, reason
    <split>/videos.csv        row, id, label, source, num_frames, stored_frames, fps, height, width
    <split>/shard-00000.bin   frame payloads back to back (JPEG files, or raw uint8 H x W x 3)
    <split>/shard-00000.npz   the shard's index (plain numpy arrays, no pickle), columns named in INDEX_COLUMNS

A label is a class index (-1: unlabelled); in a multi-label store (`multilabel` in meta.json) it is the video's set of
class indices separated by spaces (`label_text`, `label_indices`), empty for a video with none of the classes.
`num_frames` is the decoded length N of the source; `stored_frames` is ceil(N / keep_every); height and width are
the stored size. A shard is complete once its `.npz` exists: both files are written under temporary names and
renamed, payload first, so a killed job leaves no half shard and a rerun redoes only the missing shards. Video rows
are global positions in the split's video list, so shards written by different jobs can be merged by linking
(`video_adapt.data.merge`); a part of such a job has `"part": [i, n]` in its meta.json and is refused here.
"""
from __future__ import annotations

import csv
import json
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from video_adapt.errors import VideoAdaptError

FORMAT = "video_adapt.frames"
VERSION = 2
VIDEO_COLUMNS = ("video_rows", "video_first", "video_stored", "video_frames", "video_fps", "video_height",
                 "video_width")
INDEX_COLUMNS = VIDEO_COLUMNS + ("frame_offset", "frame_length", "failed_rows", "failed_reasons")


class StoreError(VideoAdaptError):
    """A missing or damaged frame store; one line naming the path."""


@dataclass(frozen=True)
class SplitCounts:
    """One split's counts in meta.json."""

    videos: int
    failed: int
    frames: int
    per_class: list[int]


@dataclass(frozen=True)
class StoreMeta:
    """meta.json, typed: what the store holds and how it was prepared. Written last by a preparation (its
    presence means complete); `part` marks one job's share of a sharded preparation (video_adapt.data.merge)."""

    classes: list[str]
    keep_every: int
    short_side: int
    codec: str
    quality: int
    flip: bool  # horizontal flips keep the labels
    source: str
    splits: dict[str, SplitCounts]
    dataset: str = "other"  # the dataset kind the data protocols look up (ssv2, hmdb51, ...)
    part: tuple[int, int] | None = None
    multilabel: bool = False  # each video has a set of classes (videos.csv: indices separated by spaces)
    format: str = FORMAT
    version: int = VERSION

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: Path) -> "StoreMeta":
        """From meta.json's mapping; a one-line StoreError naming the file for a missing or wrong key."""
        if values.get("format") != FORMAT:
            raise StoreError(f"{where}: not a {FORMAT} store (format {values.get('format')!r}); "
                             "prepare it again with video-adapt prep <name>")
        try:
            splits = {name: SplitCounts(int(c["videos"]), int(c["failed"]), int(c["frames"]),
                                        [int(v) for v in c["per_class"]]) for name, c in values["splits"].items()}
            part = values.get("part")
            return cls(classes=[str(c) for c in values["classes"]], keep_every=int(values["keep_every"]),
                       short_side=int(values["short_side"]), codec=str(values["codec"]),
                       quality=int(values["quality"]), flip=bool(values["flip"]), source=str(values["source"]),
                       splits=splits, dataset=str(values.get("dataset", "other")),
                       part=(int(part[0]), int(part[1])) if part is not None else None,
                       multilabel=bool(values.get("multilabel", False)), version=int(values.get("version", VERSION)))
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise StoreError(f"{where}: damaged meta.json ({type(err).__name__}: {err}); prepare the store "
                             "again") from None

    @classmethod
    def read(cls, path: Path) -> "StoreMeta":
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise StoreError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(values, dict):
            raise StoreError(f"{path}: not a mapping")
        return cls.from_dict(values, path)

    def as_dict(self) -> dict[str, Any]:
        """meta.json's mapping, in the order preparations have always written it."""
        out: dict[str, Any] = {"format": self.format, "version": self.version, "classes": self.classes,
                               "keep_every": self.keep_every, "short_side": self.short_side, "codec": self.codec,
                               "quality": self.quality, "flip": self.flip, "source": self.source,
                               "splits": {k: asdict(v) for k, v in self.splits.items()}, "dataset": self.dataset}
        if self.part is not None:
            out["part"] = list(self.part)
        if self.multilabel:  # single-label stores keep the file they always had
            out["multilabel"] = True
        return out


def label_text(label: int | Sequence[int]) -> str:
    """videos.csv's label cell: a class index, or a multi-label video's class indices separated by spaces."""
    return str(label) if isinstance(label, (int, np.integer)) else " ".join(str(int(c)) for c in label)


def label_indices(text: str) -> list[int]:
    """The class indices of a videos.csv label cell (`label_text` read back); a single label gives one."""
    return [int(c) for c in str(text).split()]


def class_counts(cells: Sequence[str], num_classes: int) -> list[int]:
    """Videos per class of a split's label cells (a multi-label video counts in each of its classes); unlabelled
    (-1) videos count nowhere."""
    indices = [c for cell in cells for c in label_indices(cell) if c >= 0]
    return np.bincount(np.asarray(indices, dtype=np.int64), minlength=num_classes).tolist()


def encode_frames(frames: np.ndarray, codec: str, quality: int = 90) -> list[bytes]:
    """uint8 (T, H, W, 3) RGB -> one payload per frame."""
    if codec == "raw":
        return [np.ascontiguousarray(f).tobytes() for f in frames]
    if codec != "jpeg":
        raise ValueError(f"unknown codec {codec!r}; use 'jpeg' or 'raw'")
    out = []
    for frame in frames:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        out.append(buf.tobytes())
    return out


def decode_jpegs(payloads: Sequence[Any]) -> np.ndarray:
    """JPEG payloads -> uint8 (T, H, W, 3) RGB (libjpeg-turbo through OpenCV)."""
    frames = []
    for p in payloads:
        img = cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise StoreError("corrupt JPEG frame in frame store")
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize (T, H, W, 3) so the shorter side is `short_side` (0 = keep); never upscales. Area interpolation:
    a store downscaled once should look like the source seen at that size."""
    h, w = frames.shape[1:3]
    if short_side <= 0 or min(h, w) <= short_side:
        return frames
    scale = short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


@dataclass
class PreparedVideo:
    """One prepared video as a worker hands it over: already encoded, so the writer only copies bytes."""

    num_frames: int  # decoded length N of the source
    fps: float
    height: int  # stored size
    width: int
    payloads: list[bytes]  # one per stored frame


class ShardWriter:
    """Collects the videos of one shard and publishes it atomically."""

    def __init__(self, directory: Path, index: int):
        self.directory, self.index = directory, index
        self.bin_path = directory / f"shard-{index:05d}.bin"
        self.idx_path = directory / f"shard-{index:05d}.npz"
        self._tmp_bin = self.bin_path.with_name(self.bin_path.name + ".tmp")
        self._file = open(self._tmp_bin, "wb")
        self._offset = 0
        self.videos: list[tuple[int, int, int, int, float, int, int]] = []
        self.frame_offset: list[int] = []
        self.frame_length: list[int] = []
        self.failed_rows: list[int] = []
        self.failed_reasons: list[str] = []

    def add_video(self, row: int, video: PreparedVideo) -> None:
        self.videos.append((row, len(self.frame_offset), len(video.payloads), video.num_frames, video.fps,
                            video.height, video.width))
        for payload in video.payloads:
            self._file.write(payload)
            self.frame_offset.append(self._offset)
            self.frame_length.append(len(payload))
            self._offset += len(payload)

    def add_failure(self, row: int, reason: str) -> None:
        self.failed_rows.append(row)
        self.failed_reasons.append(reason)

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp_bin, self.bin_path)
        table = np.asarray(self.videos, dtype=np.float64).reshape(-1, len(VIDEO_COLUMNS))
        columns = {name: table[:, k].astype(np.float64 if name == "video_fps" else np.int64)
                   for k, name in enumerate(VIDEO_COLUMNS)}
        # a dot name: a killed writer's temporary never matches the "shard-*.npz" that readers and resumes list
        tmp_idx = self.idx_path.with_name(f".{self.idx_path.stem}.tmp.npz")
        np.savez(tmp_idx, **columns, frame_offset=np.asarray(self.frame_offset, np.int64),
                 frame_length=np.asarray(self.frame_length, np.int64),
                 failed_rows=np.asarray(self.failed_rows, np.int64),
                 failed_reasons=np.asarray(self.failed_reasons, dtype=np.str_))
        os.replace(tmp_idx, self.idx_path)

    def abort(self) -> None:
        self._file.close()
        self._tmp_bin.unlink(missing_ok=True)


def shard_done(directory: Path, index: int) -> bool:
    return (directory / f"shard-{index:05d}.npz").exists() and (directory / f"shard-{index:05d}.bin").exists()


def read_shard_index(path: Path) -> dict[str, np.ndarray]:
    """The named columns of one shard index; a damaged file is a one-line StoreError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [c for c in INDEX_COLUMNS if c not in z.files]
            if missing:
                raise StoreError(f"{path}: shard index lacks {', '.join(missing)} (made by another version?)")
            return {c: z[c] for c in INDEX_COLUMNS}
    except StoreError:
        raise
    except Exception as err:
        raise StoreError(f"{path}: unreadable shard index ({str(err).splitlines()[0][:120]})") from None


class SplitIndex:
    """All shards of one split: per video its first frame, stored count, source length and size; per frame its
    shard, offset and length."""

    def __init__(self, directory: Path):
        self.directory = directory
        shards = sorted(directory.glob("shard-*.npz"))
        if not shards:
            raise StoreError(f"{directory}: no shards (is the preparation finished?)")
        videos, offsets, lengths, shard_of_frame = [], [], [], []
        self.shard_paths: list[Path] = []
        self.failed: list[tuple[int, str]] = []
        frame_base = 0
        for k, path in enumerate(shards):
            z = read_shard_index(path)
            table = {c: z[c] for c in VIDEO_COLUMNS}
            table["video_first"] = table["video_first"] + frame_base
            videos.append(table)
            offsets.append(z["frame_offset"])
            lengths.append(z["frame_length"])
            shard_of_frame.append(np.full(len(z["frame_offset"]), k, np.int32))
            self.failed += list(zip(z["failed_rows"].tolist(), z["failed_reasons"].tolist()))
            frame_base += len(z["frame_offset"])
            self.shard_paths.append(path.with_suffix(".bin"))
        self.columns = {c: np.concatenate([v[c] for v in videos]) for c in VIDEO_COLUMNS}
        order = np.argsort(self.columns["video_rows"], kind="stable")
        self.columns = {c: v[order] for c, v in self.columns.items()}
        self.frame_offset = np.concatenate(offsets)
        self.frame_length = np.concatenate(lengths)
        self.frame_shard = np.concatenate(shard_of_frame)
        self.video_rows = [int(r) for r in self.columns["video_rows"]]  # dataset index -> video row
        c = self.columns
        self.decoded_size = c["video_stored"] * c["video_height"] * c["video_width"] * 3  # bytes per video, decoded
        self.videos = self._read_videos()

    def _read_videos(self) -> dict[int, dict[str, str]]:
        path = self.directory / "videos.csv"
        if not path.exists():
            raise StoreError(f"{path}: missing (is the preparation finished?)")
        with path.open(newline="") as f:
            return {int(r["row"]): r for r in csv.DictReader(f)}

    def __len__(self) -> int:
        return len(self.video_rows)

    def stored_frames(self, i: int) -> int:
        return int(self.columns["video_stored"][i])

    def frame_ids(self, i: int, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """Global frame numbers of stored positions of video i (dataset order); out of range is an error."""
        pos = np.asarray(positions, dtype=np.int64)
        n = self.stored_frames(i)
        if pos.size and (pos.min() < 0 or pos.max() >= n):
            raise StoreError(f"{self.directory}: video row {self.video_rows[i]} has {n} stored frames, "
                             f"positions {pos.min()}..{pos.max()} were asked for")
        return int(self.columns["video_first"][i]) + pos


class FrameStore:
    """Read side of a store. Shard files are memory-mapped lazily per process (safe after fork).

    `cache_bytes` > 0 keeps decoded JPEG videos in memory, least recently used out first: a dataset whose decoded
    frames fit (small or low-resolution ones, such as the embedded benchmark's) is then decoded once, not every
    epoch. The pixels are the decoder's either way.
    """

    def __init__(self, root: str | os.PathLike, cache_bytes: int = 0):
        self.root = Path(root)
        self.cache_bytes = int(cache_bytes)
        self._decoded: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._decoded_bytes = 0
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            hint = " (a tube store of an earlier version: prepare it again)" if (self.root / "prep.json").exists() else ""
            raise StoreError(f"{self.root}: not a frame store (no meta.json){hint}; prepare one with "
                             "video-adapt prep <name>")
        self.meta = StoreMeta.read(meta_path)
        if self.meta.part is not None:  # one machine's share of a sharded preparation: serving it would drop videos
            i, n = self.meta.part
            raise StoreError(f"{self.root}: part {i} of {n} of a sharded preparation, not a whole store; join the "
                             f"parts with video-adapt prep merge")
        self._splits: dict[str, SplitIndex] = {}
        self._maps: dict[tuple[int, str, int], np.memmap] = {}

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def codec(self) -> str:
        return self.meta.codec

    def split(self, name: str) -> SplitIndex:
        if name not in self._splits:
            if name not in self.meta.splits:
                raise StoreError(f"{self.root}: no split {name!r} (has {', '.join(self.meta.splits)})")
            self._splits[name] = SplitIndex(self.root / name)
        return self._splits[name]

    def _shard(self, split: SplitIndex, k: int) -> np.memmap:
        key = (os.getpid(), str(split.directory), k)
        mm = self._maps.get(key)
        if mm is None:
            if len(self._maps) > 64:  # other processes' maps are stale after fork; keep the cache small
                self._maps = {kk: v for kk, v in self._maps.items() if kk[0] == os.getpid()}
            mm = np.memmap(split.shard_paths[k], dtype=np.uint8, mode="r")
            self._maps[key] = mm
        return mm

    def payloads(self, split: str, i: int, positions: Sequence[int] | np.ndarray) -> list[memoryview]:
        """Encoded frames at stored `positions` of the i-th video of `split`, without decoding."""
        s = self.split(split)
        out = []
        for f in s.frame_ids(i, positions):
            mm = self._shard(s, int(s.frame_shard[f]))
            o, n = int(s.frame_offset[f]), int(s.frame_length[f])
            out.append(mm[o:o + n])
        return out

    def frames(self, split: str, i: int, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decoded frames at stored `positions` of the i-th video of `split`: uint8 (T, H, W, 3) RGB."""
        if self.codec == "raw":
            return self._raw_frames(self.split(split), i, positions)
        s = self.split(split)
        if self.cache_bytes <= 0 or int(s.decoded_size[i]) > self.cache_bytes:  # uncachable: only what is asked
            return decode_jpegs(self.payloads(split, i, positions))
        ids = s.frame_ids(i, positions)  # checks the positions
        return self._decoded_video(split, i)[ids - int(s.columns["video_first"][i])]

    def _decoded_video(self, split: str, i: int) -> np.ndarray:
        """Every stored frame of a JPEG video that fits the cache, decoded once while it stays there."""
        key = (split, i)
        frames = self._decoded.get(key)
        if frames is not None:
            self._decoded.move_to_end(key)
            return frames
        frames = decode_jpegs(self.payloads(split, i, np.arange(self.split(split).stored_frames(i))))
        self._decoded[key] = frames
        self._decoded_bytes += frames.nbytes
        while self._decoded_bytes > self.cache_bytes:
            self._decoded_bytes -= self._decoded.popitem(last=False)[1].nbytes
        return frames

    def decoded_bytes(self, split: str) -> int:
        """What every stored frame of `split` takes decoded."""
        return int(self.split(split).decoded_size.sum())

    def preload(self, split: str) -> bool:
        """Decode a whole split into the cache now, if it fits: DataLoader workers forked afterwards start with it
        (each epoch's workers are new processes, so a cache they filled themselves would not last)."""
        if self.codec != "jpeg" or self.decoded_bytes(split) > self.cache_bytes:
            return False
        for i in range(len(self.split(split))):
            self._decoded_video(split, i)
        return True

    def _raw_frames(self, s: SplitIndex, i: int, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """A video's raw frames lie back to back in one shard: one view of them all, one gather of the wanted."""
        ids = s.frame_ids(i, positions)
        h, w = int(s.columns["video_height"][i]), int(s.columns["video_width"][i])
        first, n, size = int(s.columns["video_first"][i]), s.stored_frames(i), h * w * 3
        if n == 0 or ids.size == 0:
            return np.empty((0, h, w, 3), np.uint8)
        if int(s.frame_length[first]) != size:
            raise StoreError(f"{s.directory}: video row {s.video_rows[i]} has raw frames of "
                             f"{int(s.frame_length[first])} bytes, not {h} x {w} x 3")
        base = int(s.frame_offset[first])
        block = self._shard(s, int(s.frame_shard[first]))[base:base + n * size]
        if block.size != n * size:
            raise StoreError(f"{s.shard_paths[int(s.frame_shard[first])]}: truncated (video row {s.video_rows[i]})")
        return block.reshape(n, h, w, 3)[ids - first]
