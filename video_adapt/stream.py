"""Classify a live stream: a webcam, an RTSP/HTTP URL, a file that is still being written, or stdin.

    video-adapt infer --stream 0 --checkpoint runs/x                          # webcam 0 (OpenCV)
    video-adapt infer --stream rtsp://camera/live --checkpoint runs/x --window 2 --stride 0.5
    ffmpeg -i clip.mp4 -f matroska - | video-adapt infer --stream - --checkpoint runs/x --jsonl out.jsonl
    video-adapt infer --stream - --raw 320x240:rgb24 --fps 25 --checkpoint runs/x < frames.rgb

The last `window` of frames is kept in a ring buffer (`FrameRing`). Every `stride` frames it holds a full window,
the window gets the test views of the model's data protocol exactly as `Predictor.timeline` takes them from a file
(`views_of` over frames [start, end), so the protocol's rule samples num_frames from the window), and every task is
classified. Windows are numbered by frame: window k covers frames [k*stride, k*stride + window), timed at the
stream's frame rate, the same windows the offline timeline of the same video gives. A stream shorter than one
window gets one window over what arrived, as the offline timeline does.

Latency per window is decode-to-label: from the moment its last frame left the decoder to the moment every task's
label is known. If the model is slower than the stride, frames wait in the source (pipe, socket, camera driver);
that wait is not latency but lag, the time the labels fall behind the stream, reported as well.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np

from video_adapt.console import one_line
from video_adapt.data.sampling import span_frames
from video_adapt.errors import ConfigError
from video_adapt.serving import MultiTaskPredictor

RAW_FORMATS = {"rgb24": 3, "bgr24": 3, "gray": 1}
POLL_S = 0.02  # how often a followed file is checked for new bytes


class StreamError(ConfigError):
    """A source that cannot be opened or read; one line naming it."""


# ------------------------------------------------------------------------------------------------- byte sources
class _Unseekable(io.RawIOBase):
    """A byte stream read as it arrives: PyAV gets what is there now (no waiting for a full buffer), and cannot seek,
    so a demuxer never jumps to the end of a file that is still growing."""

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], None] = lambda: None):
        super().__init__()
        self._read = read
        self._close = close

    def close(self) -> None:
        self._close()
        super().close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer) -> int:
        data = self._read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def follow_file(path: str | Path, idle_timeout: float) -> _Unseekable:
    """A file read like `tail -f`: at its end, wait for more bytes; end after `idle_timeout` seconds without any."""
    handle = open(path, "rb")  # noqa: SIM115 - closed with the stream

    def read(n: int) -> bytes:
        waited = 0.0
        while True:
            data = handle.read(n)
            if data:
                return data
            if waited >= idle_timeout:
                return b""
            time.sleep(POLL_S)
            waited += POLL_S
    return _Unseekable(read, handle.close)


def stdin_bytes() -> _Unseekable:
    stdin = sys.stdin.buffer
    return _Unseekable(lambda n: stdin.read1(n))


# ------------------------------------------------------------------------------------------------ frame sources
@dataclass
class FrameSource:
    """Decoded RGB frames (H, W, 3) uint8 of one stream, as they come, and its frame rate (0: unknown)."""

    name: str
    fps: float
    frames: Iterator[np.ndarray]
    close: Callable[[], None] = lambda: None


def parse_raw(text: str) -> tuple[int, int, str]:
    """--raw WxH[:rgb24|bgr24|gray] -> (width, height, pixel format)."""
    size, _, fmt = text.partition(":")
    fmt = fmt or "rgb24"
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise StreamError(f"--raw {text}: expected WIDTHxHEIGHT[:{'|'.join(RAW_FORMATS)}], e.g. 320x240:rgb24") from None
    if width < 1 or height < 1 or fmt not in RAW_FORMATS:
        raise StreamError(f"--raw {text}: expected WIDTHxHEIGHT[:{'|'.join(RAW_FORMATS)}] with positive sizes")
    return width, height, fmt


def raw_frames(stream: IO[bytes] | _Unseekable, width: int, height: int, fmt: str) -> Iterator[np.ndarray]:
    """Frames of exactly width x height x channels bytes each; a partial frame at the end is dropped."""
    size = width * height * RAW_FORMATS[fmt]
    while True:
        chunks, got = [], 0
        while got < size:
            data = stream.read(size - got)
            if not data:
                return
            chunks.append(data)
            got += len(data)
        frame = np.frombuffer(b"".join(chunks), np.uint8).reshape(height, width, -1)
        if fmt == "bgr24":
            frame = frame[..., ::-1]
        elif fmt == "gray":
            frame = np.repeat(frame, 3, axis=2)
        yield np.ascontiguousarray(frame)


def _pyav_source(name: str, target: Any, fmt: str | None, options: dict[str, str], timeout: float | None) -> FrameSource:
    import av
    try:
        container = av.open(target, "r", format=fmt, options=options, timeout=timeout)
    except Exception as err:  # FFmpeg raises many types; the user needs the source and the reason
        raise StreamError(f"{name}: cannot open the stream ({one_line(err)[:200]})") from None
    if not container.streams.video:
        container.close()
        raise StreamError(f"{name}: no video stream")
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 0.0)

    def frames() -> Iterator[np.ndarray]:
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")  # as video_adapt.data.decode reads files
        except av.error.FFmpegError as err:  # a cut stream ends it; what was decoded counts
            print(f"warning: {name}: the stream ended with an error ({one_line(err)[:200]})", file=sys.stderr)
    return FrameSource(name, fps, frames(), container.close)


def _webcam_source(index: int) -> FrameSource:
    import cv2
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise StreamError(f"webcam {index}: OpenCV cannot open it (no camera with that index?)")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)

    def frames() -> Iterator[np.ndarray]:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return FrameSource(f"webcam {index}", fps, frames(), capture.release)


def open_stream(source: str, *, raw: str | None = None, fps: float | None = None, fmt: str | None = None,
                idle_timeout: float = 10.0) -> FrameSource:
    """A webcam index ('0'), a URL (rtsp://, http://, ...), '-' for stdin, or a file that may still be growing.

    Encoded input goes through PyAV (any container FFmpeg can read from a pipe: matroska, mpegts, nut, y4m, ...;
    `fmt` names it when probing cannot); `raw` ('WxH:rgb24') reads bare frames instead, at `fps`. `fps` also
    overrides the rate a container states."""
    if raw is not None:
        width, height, pixels = parse_raw(raw)
        if not fps:
            raise StreamError("--raw frames carry no frame rate: give --fps")
        if source.isdigit() or "://" in source:
            raise StreamError(f"--raw reads stdin or a file, not {source}")
        stream = stdin_bytes() if source == "-" else follow_file(_existing(source), idle_timeout)
        return FrameSource(source if source != "-" else "stdin", fps, raw_frames(stream, width, height, pixels),
                           stream.close)
    if source.isdigit():
        found = _webcam_source(int(source))
    elif "://" in source:
        options = {"rtsp_transport": "tcp"} if source.startswith("rtsp") else {}
        found = _pyav_source(source, source, fmt, options, idle_timeout)
    else:
        stream = stdin_bytes() if source == "-" else follow_file(_existing(source), idle_timeout)
        # a live source: decide the format from the first bytes, not after seconds of stream
        found = _pyav_source(source if source != "-" else "stdin", stream, fmt,
                             {"probesize": "32768", "analyzeduration": "100000"}, None)
        container_close = found.close
        found.close = lambda: (container_close(), stream.close())
    if fps:
        found.fps = float(fps)
    return found


def _existing(path: str) -> str:
    if not os.path.exists(path):
        raise StreamError(f"{path}: no such file")
    if os.path.isdir(path):
        raise StreamError(f"{path}: is a directory, not a stream")
    return path


# -------------------------------------------------------------------------------------------------- the windows
class FrameRing:
    """The last `capacity` frames of a stream, read like a video (`num_frames`, `read(indices)`) with frame indices
    counted from the stream's start, so `views_of` takes a window's views as it takes them from a file."""

    def __init__(self, capacity: int):
        self.frames: deque[np.ndarray] = deque(maxlen=capacity)
        self.arrived: deque[float] = deque(maxlen=capacity)
        self.num_frames = 0  # frames seen since the start

    def append(self, frame: np.ndarray, arrived: float) -> None:
        self.frames.append(frame)
        self.arrived.append(arrived)
        self.num_frames += 1

    def read(self, indices) -> np.ndarray:
        first = self.num_frames - len(self.frames)
        idx = np.asarray(indices, dtype=np.int64) - first
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.frames)):
            raise IndexError(f"frames {indices} are not in the ring (it holds {first}..{self.num_frames - 1})")
        return np.stack([self.frames[i] for i in idx])


@dataclass
class _Black:
    """`window` black frames, read like a video (for `StreamClassifier.warm_up`)."""

    num_frames: int
    height: int
    width: int

    def read(self, indices) -> np.ndarray:
        return np.zeros((len(indices), self.height, self.width, 3), np.uint8)


@dataclass
class StreamWindow:
    """One classified window: its frames, times, every task's top-k and its latency."""

    index: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    tasks: dict[str, list[tuple[str, float]]]
    latency_ms: float
    lag_s: float

    def line(self) -> str:
        """`t=12.0s  label (0.93)  latency 41 ms`, with `task: ` before each label when there are several."""
        labels = "  ".join(f"{name + ': ' if name else ''}{top[0][0]} ({top[0][1]:.2f})" for name, top in
                           self.tasks.items())
        return f"t={self.end_s:.1f}s  {labels}  latency {self.latency_ms:.0f} ms"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"window": self.index, "start_s": self.start_s, "end_s": self.end_s,
                               "start_frame": self.start_frame, "end_frame": self.end_frame}
        tops = {name: {"label": top[0][0], "prob": round(top[0][1], 6),
                       "top": [{"label": label, "prob": round(p, 6)} for label, p in top]}
                for name, top in self.tasks.items()}
        if list(tops) == [""]:
            out.update(tops[""])
        else:
            out["tasks"] = tops
        out.update(latency_ms=round(self.latency_ms, 2), lag_s=round(self.lag_s, 3))
        return out


@dataclass
class StreamSummary:
    source: str
    fps: float
    window_frames: int
    stride_frames: int
    frames: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    max_lag_s: float = 0.0
    interrupted: bool = False

    @property
    def windows(self) -> int:
        return len(self.latencies_ms)

    def as_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else None
        return {"source": self.source, "fps": self.fps, "window_frames": self.window_frames,
                "stride_frames": self.stride_frames, "frames": self.frames, "windows": self.windows,
                "latency_ms_mean": round(float(lat.mean()), 2) if lat is not None else None,
                "latency_ms_p95": round(float(np.percentile(lat, 95)), 2) if lat is not None else None,
                "max_lag_s": round(self.max_lag_s, 3), "interrupted": self.interrupted}

    def text(self) -> str:
        d = self.as_dict()
        latency = (f"latency mean {d['latency_ms_mean']:.0f} ms, p95 {d['latency_ms_p95']:.0f} ms"
                   if self.windows else "no latency (no window)")
        return (f"{self.windows} windows of {self.window_frames} frames every {self.stride_frames} from "
                f"{self.frames} frames ({self.frames / self.fps:.1f} s at {self.fps:g} fps); {latency}; "
                f"labels at most {self.max_lag_s:.2f} s behind the stream" + (" (interrupted)" if self.interrupted
                                                                               else ""))


class StreamClassifier:
    """Frames in, a classified window out every `stride` frames once a full `window` has arrived: the ring buffer
    and the per-window work that the command line and the web page's webcam tab share."""

    def __init__(self, predictor: MultiTaskPredictor, fps: float, window: float | str, stride: float | str,
                 topk: int = 5):
        self.predictor = predictor
        self.fps = fps if fps > 0 else 25.0  # as the offline timeline assumes for a file without a rate
        self.window = span_frames(window, self.fps)
        self.stride = span_frames(stride, self.fps)
        self.topk = topk
        self.ring = FrameRing(self.window)
        self.results: list[StreamWindow] = []
        self.first_arrival: float | None = None

    def warm_up(self, height: int = 240, width: int = 320) -> None:
        """One forward on a black window before the stream starts, so the first window's latency is not the
        framework's first-call set-up."""
        self.predictor._probs(self.predictor._views_of(_Black(self.window, height, width)), [self.predictor.view.views])

    def push(self, frame: np.ndarray, arrived: float | None = None) -> StreamWindow | None:
        """Add one frame (RGB uint8, any size); the window it completes, classified, or None."""
        arrived = time.perf_counter() if arrived is None else arrived
        if self.first_arrival is None:
            self.first_arrival = arrived
        self.ring.append(frame, arrived)
        seen = self.ring.num_frames
        if seen >= self.window and (seen - self.window) % self.stride == 0:
            return self._classify(seen - self.window, seen)
        return None

    def finish(self) -> StreamWindow | None:
        """At the end of the stream: a stream shorter than one window gets one window over all its frames."""
        if self.ring.num_frames and not self.results and self.ring.num_frames < self.window:
            return self._classify(0, self.ring.num_frames)
        return None

    def _classify(self, start: int, end: int) -> StreamWindow:
        views = self.predictor._views_of(self.ring, start, end)
        probs = self.predictor._probs(views, [len(views)])[0]
        done = time.perf_counter()
        last_arrival = self.ring.arrived[-1]
        tops = {name: self.predictor.tasks[name]._top(p, self.topk) for name, p in probs.items()}
        stream_time = (end - 1) / self.fps
        lag = max(0.0, (done - self.first_arrival) - stream_time)
        window = StreamWindow(len(self.results), start, end, round(start / self.fps, 3), round(end / self.fps, 3),
                              tops, (done - last_arrival) * 1000, lag)
        self.results.append(window)
        return window


def run_stream(predictor: MultiTaskPredictor, source: FrameSource, window: float | str, stride: float | str, *,
               topk: int = 5, on_window: Callable[[StreamWindow], None] | None = None,
               jsonl: str | Path | None = None) -> StreamSummary:
    """Classify `source` until it ends (or Ctrl-C), calling `on_window` and appending a JSON line (flushed) per
    window; returns the summary. Ctrl-C ends the stream, not the program: the summary says it was interrupted."""
    classifier = StreamClassifier(predictor, source.fps, window, stride, topk)
    classifier.warm_up()
    summary = StreamSummary(source.name, classifier.fps, classifier.window, classifier.stride)
    out = open(jsonl, "w", encoding="utf-8") if jsonl else None  # noqa: SIM115 - closed below

    def emit(result: StreamWindow | None) -> None:
        if result is None:
            return
        summary.latencies_ms.append(result.latency_ms)
        summary.max_lag_s = max(summary.max_lag_s, result.lag_s)
        if out is not None:
            out.write(json.dumps(result.as_dict()) + "\n")  # one write per line, flushed: a reader never sees half
            out.flush()
        if on_window is not None:
            on_window(result)
    try:
        for frame in source.frames:
            emit(classifier.push(frame))
        emit(classifier.finish())
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.frames = classifier.ring.num_frames
        source.close()
        if out is not None:
            out.close()
    return summary
