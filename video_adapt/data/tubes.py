"""The tube store: decoded, sampled, resized frames in a few large shard files, read by random access.

Layout of a store directory (format `video_adapt.tubes`, version 1):

    meta.json                   classes, sampling rule, stored frame counts, short side, codec, split counts
    prep.json                   the preparation options (a rerun with other options needs --overwrite)
    failed.csv                  videos that could not be prepared, with the reason
    <split>/videos.csv          row, id, label, source, num_frames, fps, height, width
    <split>/shard-00000.bin     frame payloads back to back (JPEG files, or raw uint8 H x W x 3)
    <split>/shard-00000.npz     the shard's index (numpy arrays, no pickle):
                                  tube_video, tube_kind (0 train view, 1 test view), tube_view, tube_frames,
                                  tube_first, tube_height, tube_width    (one entry per tube)
                                  frame_offset, frame_length             (one entry per frame)
                                  video_rows, video_frames, video_fps, video_height, video_width (sources)
                                  failed_rows, failed_reasons            (videos of this shard that failed)

A shard is complete once its `.npz` exists: both files are written under temporary names and renamed,
payload first, so a killed job leaves no half shard and a rerun redoes only missing shards.
Training splits hold K training views of T_max frames per video (smaller T are derived from them, see
`sampling.subsample_positions`); evaluation splits hold the test views for every stored T, since test clips of
different T do not nest.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from video_adapt.errors import VideoAdaptError

FORMAT = "video_adapt.tubes"
VERSION = 1
TRAIN_VIEW, TEST_VIEW = 0, 1


class StoreError(VideoAdaptError):
    """A missing or damaged tube store; one line naming the path."""


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


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize (T, H, W, 3) so the shorter side is `short_side` (0 = keep); never upscales."""
    h, w = frames.shape[1:3]
    if short_side <= 0 or min(h, w) <= short_side:
        return frames
    scale = short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


@dataclass
class Tube:
    """One stored tube, as the writer hands it over."""

    kind: int
    view: int
    frames: np.ndarray  # uint8 (T, H, W, 3)


class ShardWriter:
    """Collects the tubes of one shard and publishes it atomically."""

    def __init__(self, directory: Path, index: int, codec: str, quality: int):
        self.directory = directory
        self.index = index
        self.codec = codec
        self.quality = quality
        self.bin_path = directory / f"shard-{index:05d}.bin"
        self.idx_path = directory / f"shard-{index:05d}.npz"
        self._tmp_bin = self.bin_path.with_name(self.bin_path.name + ".tmp")
        self._file = open(self._tmp_bin, "wb")
        self._offset = 0
        self.tubes: list[tuple[int, int, int, int, int, int, int]] = []
        self.frame_offset: list[int] = []
        self.frame_length: list[int] = []
        self.failed_rows: list[int] = []
        self.failed_reasons: list[str] = []
        self.videos: list[tuple[int, int, float, int, int]] = []  # row, frames, fps, height, width of the source

    def add_video(self, row: int, tubes: Sequence[Tube], info: tuple[int, float, int, int]) -> None:
        self.videos.append((row, *info))
        for tube in tubes:
            payloads = encode_frames(tube.frames, self.codec, self.quality)
            t, h, w = tube.frames.shape[:3]
            self.tubes.append((row, tube.kind, tube.view, t, len(self.frame_offset), h, w))
            for payload in payloads:
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
        tubes = np.asarray(self.tubes, dtype=np.int64).reshape(-1, 7)
        tmp_idx = self.idx_path.with_name(self.idx_path.name + ".tmp.npz")
        np.savez(tmp_idx, tube_video=tubes[:, 0], tube_kind=tubes[:, 1], tube_view=tubes[:, 2],
                 tube_frames=tubes[:, 3], tube_first=tubes[:, 4], tube_height=tubes[:, 5], tube_width=tubes[:, 6],
                 frame_offset=np.asarray(self.frame_offset, np.int64), frame_length=np.asarray(self.frame_length, np.int64),
                 video_rows=np.asarray([v[0] for v in self.videos], np.int64),
                 video_frames=np.asarray([v[1] for v in self.videos], np.int64),
                 video_fps=np.asarray([v[2] for v in self.videos], np.float64),
                 video_height=np.asarray([v[3] for v in self.videos], np.int64),
                 video_width=np.asarray([v[4] for v in self.videos], np.int64),
                 failed_rows=np.asarray(self.failed_rows, np.int64),
                 failed_reasons=np.asarray(self.failed_reasons, dtype=np.str_))
        os.replace(tmp_idx, self.idx_path)

    def abort(self) -> None:
        self._file.close()
        self._tmp_bin.unlink(missing_ok=True)


def shard_done(directory: Path, index: int) -> bool:
    return (directory / f"shard-{index:05d}.npz").exists() and (directory / f"shard-{index:05d}.bin").exists()


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def write_csv_atomic(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


class SplitIndex:
    """All shards of one split, merged: tube table, frame table, and per-video lookups."""

    def __init__(self, directory: Path):
        self.directory = directory
        shards = sorted(directory.glob("shard-*.npz"))
        if not shards:
            raise StoreError(f"{directory}: no shards (is the preparation finished?)")
        tubes, offsets, lengths, shard_of_frame = [], [], [], []
        self.shard_paths: list[Path] = []
        self.failed: list[tuple[int, str]] = []
        frame_base = 0
        for k, path in enumerate(shards):
            try:
                with np.load(path, allow_pickle=False) as z:
                    cols = [z[name] for name in ("tube_video", "tube_kind", "tube_view", "tube_frames", "tube_first",
                                                 "tube_height", "tube_width")]
                    off, length = z["frame_offset"], z["frame_length"]
                    self.failed += list(zip(z["failed_rows"].tolist(), z["failed_reasons"].tolist()))
            except Exception as err:
                raise StoreError(f"{path}: unreadable shard index ({str(err).splitlines()[0][:120]})") from None
            table = np.stack(cols, 1) if cols[0].size else np.zeros((0, 7), np.int64)
            table[:, 4] += frame_base
            tubes.append(table)
            offsets.append(off)
            lengths.append(length)
            shard_of_frame.append(np.full(len(off), k, np.int32))
            frame_base += len(off)
            self.shard_paths.append(path.with_suffix(".bin"))
        self.tubes = np.concatenate(tubes) if tubes else np.zeros((0, 7), np.int64)
        self.frame_offset = np.concatenate(offsets)
        self.frame_length = np.concatenate(lengths)
        self.frame_shard = np.concatenate(shard_of_frame)
        self.videos = self._read_videos()
        rows_with_tubes = np.unique(self.tubes[:, 0])
        self.video_rows = [int(r) for r in rows_with_tubes]  # dataset index -> video row
        order = np.lexsort((self.tubes[:, 2], self.tubes[:, 3], self.tubes[:, 1], self.tubes[:, 0]))
        self._by_video: dict[int, np.ndarray] = {}
        sorted_rows = self.tubes[order, 0]
        bounds = np.searchsorted(sorted_rows, rows_with_tubes, side="left"), \
            np.searchsorted(sorted_rows, rows_with_tubes, side="right")
        for row, lo, hi in zip(rows_with_tubes, *bounds):
            self._by_video[int(row)] = order[lo:hi]

    def _read_videos(self) -> dict[int, dict[str, str]]:
        path = self.directory / "videos.csv"
        if not path.exists():
            raise StoreError(f"{path}: missing (is the preparation finished?)")
        with path.open(newline="") as f:
            return {int(r["row"]): r for r in csv.DictReader(f)}

    def tubes_of(self, row: int, kind: int, frames: int | None = None) -> np.ndarray:
        ids = self._by_video.get(row, np.zeros(0, np.int64))
        sel = self.tubes[ids]
        mask = sel[:, 1] == kind
        if frames is not None:
            mask &= sel[:, 3] == frames
        return ids[mask]


class TubeStore:
    """Read side of a store. Shard files are memory-mapped lazily per process (safe after fork)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            raise StoreError(f"{self.root}: not a tube store (no meta.json); prepare one with python -m data_prep.<name>")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise StoreError(f"{meta_path}: not valid JSON ({err})") from None
        if self.meta.get("format") != FORMAT:
            raise StoreError(f"{meta_path}: not a {FORMAT} store")
        self._splits: dict[str, SplitIndex] = {}
        self._maps: dict[tuple[int, str, int], np.memmap] = {}

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def split(self, name: str) -> SplitIndex:
        if name not in self._splits:
            if name not in self.meta.get("splits", {}):
                raise StoreError(f"{self.root}: no split {name!r} (has {', '.join(self.meta.get('splits', {}))})")
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

    def payloads(self, split: str, tube: int, positions: Sequence[int] | None = None) -> list[memoryview]:
        """Encoded frames of one tube (optionally only `positions` within it), without decoding."""
        s = self.split(split)
        _, _, _, t, first, _, _ = s.tubes[tube]
        pos = range(t) if positions is None else positions
        out = []
        for p in pos:
            f = first + int(p)
            mm = self._shard(s, int(s.frame_shard[f]))
            o, n = int(s.frame_offset[f]), int(s.frame_length[f])
            out.append(mm[o:o + n])
        return out

    def frames(self, split: str, tube: int, positions: Sequence[int] | None = None) -> np.ndarray:
        """Decoded frames of one tube: uint8 (T, H, W, 3) RGB."""
        s = self.split(split)
        h, w = int(s.tubes[tube][5]), int(s.tubes[tube][6])
        payloads = self.payloads(split, tube, positions)
        if self.meta["codec"] == "raw":
            return np.stack([np.frombuffer(p, np.uint8).reshape(h, w, 3) for p in payloads])
        return decode_jpegs(payloads)


def decode_jpegs(payloads: Sequence[Any]) -> np.ndarray:
    """JPEG payloads -> uint8 (T, H, W, 3) RGB (libjpeg-turbo through OpenCV)."""
    frames = []
    for p in payloads:
        img = cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise StoreError("corrupt JPEG frame in tube store")
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return np.stack(frames)
