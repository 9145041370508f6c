"""Open a video and read chosen frames, whatever decoder is installed.

Backends are tried in order: decord (fast random access), PyAV, OpenCV. A backend that is missing or fails on a
file hands over to the next; when all fail, `VideoDecodeError` says, in one line, which file and why.
PyAV is imported before decord on purpose: decord bundles its own FFmpeg, and once it is loaded PyAV can fail
to open some codecs in the same process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from video_adapt.console import native_stderr_silenced
from video_adapt.errors import VideoAdaptError

try:  # import order matters, see the module docstring
    import av
except ImportError:  # pragma: no cover - av is in requirements
    av = None
try:
    import decord
except ImportError:
    decord = None

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")


class VideoDecodeError(VideoAdaptError):
    """A video that cannot be read; the message is one line naming the file and the problem."""


@dataclass
class VideoReader:
    """An opened video: frame count, fps, size and `read(indices) -> uint8 (T, H, W, 3) RGB`."""

    path: str
    num_frames: int
    fps: float
    height: int
    width: int
    backend: str
    _read: Callable[[np.ndarray], np.ndarray]

    def read(self, indices: Sequence[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_frames):
            raise VideoDecodeError(f"{self.path}: frame index out of range 0..{self.num_frames - 1}")
        try:
            with native_stderr_silenced():  # decoders log what we report in one line
                frames = self._read(idx)
        except VideoDecodeError:
            raise
        except Exception as err:  # decoders raise many types; the user needs the file and the reason
            raise VideoDecodeError(f"{self.path}: decoding failed ({_first_line(err)})") from None
        if frames.shape[0] != len(idx):
            raise VideoDecodeError(f"{self.path}: got {frames.shape[0]} of {len(idx)} requested frames")
        return frames


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    elif frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    elif frame.shape[2] == 4:
        frame = frame[:, :, :3]
    return np.ascontiguousarray(frame)


def _open_decord(path: str) -> VideoReader:
    vr = decord.VideoReader(path, num_threads=1)
    n = len(vr)
    if n < 1:
        raise VideoDecodeError(f"{path}: no decodable frames")
    # get_batch, the call every read makes, not vr[0]: for some frame sizes (36 x 48, 18 x 24) decord 0.6 returns a
    # 4-channel frame alone but fails on any batch, and a file it cannot read must go to the next backend here
    first = vr.get_batch([0]).asnumpy()[0]

    def read(idx: np.ndarray) -> np.ndarray:
        return np.stack([_to_rgb(f) for f in vr.get_batch(idx.tolist()).asnumpy()]) if len(idx) else \
            np.zeros((0, first.shape[0], first.shape[1], 3), np.uint8)

    return VideoReader(path, n, float(vr.get_avg_fps() or 0.0), first.shape[0], first.shape[1], "decord", read)


def _av_frames(path: str):
    """Yield decoded frames of the first video stream; a damaged tail ends the stream instead of failing it."""
    with av.open(path) as container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            yield from container.decode(stream)
        except av.error.FFmpegError:  # truncated files keep the frames decoded before the damage
            return


def _sequential_reader(path: str, backend: str, fps: float, frames: Callable[[], Iterator[Any]],
                       size_of: Callable[[Any], tuple[int, int]], to_rgb: Callable[[Any], np.ndarray]) -> VideoReader:
    """A reader for decoders without reliable seeking: count frames by decoding once, then decode sequentially up
    to the last requested frame on each read, converting only the requested ones."""
    count, h, w = 0, 0, 0
    for frame in frames():
        if count == 0:
            h, w = size_of(frame)
        count += 1
    if count == 0:
        raise VideoDecodeError(f"{path}: no decodable frames")

    def read(idx: np.ndarray) -> np.ndarray:
        wanted = set(idx.tolist())
        last = max(wanted, default=-1)
        got: dict[int, np.ndarray] = {}
        for i, frame in enumerate(frames()):
            if i in wanted:
                got[i] = to_rgb(frame)
            if i >= last:
                break
        return np.stack([got[i] for i in idx]) if len(idx) else np.zeros((0, h, w, 3), np.uint8)

    return VideoReader(path, count, fps, h, w, backend, read)


def _open_av(path: str) -> VideoReader:
    # PyAV seeks by timestamp, which is unreliable across containers: read sequentially instead
    with av.open(path) as container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
    return _sequential_reader(path, "pyav", fps, lambda: _av_frames(path), lambda f: (f.height, f.width),
                              lambda f: f.to_ndarray(format="rgb24"))


def _open_cv2(path: str) -> VideoReader:
    import cv2

    def frames() -> Iterator[np.ndarray]:
        cap = cv2.VideoCapture(path)
        try:
            while cap.isOpened():
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame
        finally:
            cap.release()

    probe = cv2.VideoCapture(path)
    if not probe.isOpened():
        raise VideoDecodeError(f"{path}: OpenCV cannot open it")
    fps = float(probe.get(cv2.CAP_PROP_FPS) or 0.0)
    probe.release()
    return _sequential_reader(path, "opencv", fps, frames, lambda f: f.shape[:2],
                              lambda f: _to_rgb(cv2.cvtColor(f, cv2.COLOR_BGR2RGB) if f.ndim == 3 else f))


BACKENDS: dict[str, Callable[[str], VideoReader]] = {}
if decord is not None:
    BACKENDS["decord"] = _open_decord
if av is not None:
    BACKENDS["pyav"] = _open_av
BACKENDS["opencv"] = _open_cv2


def open_video(path: str | os.PathLike, backends: Sequence[str] | None = None) -> VideoReader:
    """Open `path` with the first backend that can read it (decord, then PyAV, then OpenCV)."""
    path = str(path)
    if not os.path.exists(path):
        raise VideoDecodeError(f"{path}: no such file")
    if os.path.isdir(path):
        raise VideoDecodeError(f"{path}: is a directory, not a video")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(f"{path}: empty file")
    errors = []
    for name in backends or list(BACKENDS):
        if name not in BACKENDS:
            raise ValueError(f"unknown or unavailable video backend {name!r}; have {', '.join(BACKENDS)}")
        try:
            with native_stderr_silenced():  # decord and FFmpeg log each file they cannot open; we raise one line
                reader = BACKENDS[name](path)
            if reader.num_frames > 0 and reader.height > 0 and reader.width > 0:
                return reader
            errors.append(f"{name}: no frames")
        except Exception as err:  # every backend has its own exception types
            errors.append(f"{name}: {_first_line(err)}")
    reasons = "; ".join(errors)
    kind = "not a readable video" if Path(path).suffix.lower() in VIDEO_EXTENSIONS else "not a video"
    raise VideoDecodeError(f"{path}: {kind} ({reasons[:300]})")
