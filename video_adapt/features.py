"""Clip features of video files for other tools: one frozen backbone (optionally with a tuned method's weights on
it), sliding windows over each video, one array per video, the layout temporal action localization tools read.

    from video_adapt.features import extract_features
    report = extract_features(["videos/"], "features/", backbone="videomae_b.pth", window="32f", stride="16f")

Per video, windows of W frames every S frames (`data.sampling.window_starts`: window i spans frames [i*S, i*S + W),
the tail after the last whole window is not covered, a video shorter than W has one window). From each window the
model's T frames are taken by the test rule of its data protocol with one temporal clip: T-DENSE at frame stride r,
so a window of T*r frames gives frames s, s+r, ..., s+(T-1)*r (the rule timelines in `video-adapt infer` use),
resized and centre-cropped as at test time (`datasets.views_of_windows`; `crops` > 1 averages the protocol's
spatial crops). The clip runs through the model up to block `layer` (`VisionTransformer.forward_layer`) and is
pooled: `fc_norm` (mean token through the feature norm: at the last block exactly `forward_features`, what the head
sees), `mean` (the plain mean token) or `tokens` (no pooling: T' x H' x W' x D per window).

Output in `out`: `<video_id>.npy`, float32 (or float16) of shape (windows, D) or (windows, T', H', W', D), each
written under a hidden temporary name and renamed when complete (`files.NpyWriter`); `index.json` and `index.csv`
with the settings, the feature shape and per video its path, fps, frame count, window length and stride and every
window's start (frames and seconds), or the reason it failed. A rerun with the same settings skips every video whose
array exists and whose index row says so, and retries the failed ones; the index is rewritten every 30 s or so and
when the job stops, so an interrupted job loses the batch in flight (a killed one at most 30 s of work).
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from video_adapt.data.datasets import EvalView, views_of_windows
from video_adapt.data.decode import VideoDecodeError, open_video
from video_adapt.data.protocol import DataProtocol
from video_adapt.data.sampling import parse_span, span_frames, window_starts
from video_adapt.data.transforms import normalize_clips
from video_adapt.errors import CheckpointError, ConfigError
from video_adapt.files import NpyWriter, write_csv_atomic, write_text_atomic

FORMAT = "video_adapt.features"
VERSION = 1
POOLS = ("fc_norm", "mean", "tokens")
DTYPES = ("float32", "float16")
DEFAULT_FPS = 25.0  # a container that states no frame rate: what timelines assume too
READ_FRAMES = 256  # frames decoded per read at most: bounded memory for high-resolution sources
INDEX_EVERY_S = 30.0
INDEX_COLUMNS = ("id", "path", "status", "file", "fps", "frames", "windows", "window_frames", "stride_frames",
                 "window_start_frames", "window_start_s", "error")


# ----------------------------------------------------------------------------------------------- settings
def _span(text: str | int | float, what: str) -> float | str:
    """A --window / --stride value (`data.sampling.parse_span`: seconds '2' / '1.5s', or frames '32f')."""
    try:
        return parse_span(str(text))
    except ValueError as err:
        raise ConfigError(f"{what} {err}") from None


def _span_key(span: float | str) -> str:
    """How index.json records a span: '32f' or '1.5s'."""
    return span if isinstance(span, str) else f"{span:g}s"


@dataclass(frozen=True)
class FeatureSettings:
    """Everything the arrays depend on; index.json records it and a rerun into the same folder must agree."""

    model: dict[str, Any]  # how the model is built (create_model's arguments)
    backbone: str | None
    adapters: str | None
    layer: int
    pool: str
    window: str
    stride: str
    num_frames: int
    img_size: int
    sampling: str  # the test rule taking T frames from a window (dense | ssv2)
    frame_stride: int  # r of the dense rule
    short_side: int
    crops: int
    dtype: str
    feature_shape: list[int]  # one window's feature: [D] or [T', H', W', D]


def _weights_path(path: str | os.PathLike | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def load_feature_model(backbone: str | os.PathLike | None = None, adapters: str | os.PathLike | None = None, *,
                       force: bool = False) -> tuple[nn.Module, DataProtocol | None]:
    """The model features come from, and the data protocol it was trained with (None for a bare backbone).

    With `adapters` (an adapter directory or a training run directory, and the backbone the adapters were trained
    on) the tuned model is rebuilt exactly as `video-adapt infer` rebuilds it (`inference.Predictor.load`: the
    backbone fingerprint checked, LoRA merged). A bare backbone file is rebuilt from its tensor shapes
    (`checkpoint.architecture_of`) without a head."""
    if adapters:
        from video_adapt.inference import Predictor
        predictor = Predictor.load(str(adapters), str(backbone) if backbone else None, device="cpu", force=force)
        if not isinstance(predictor.model, nn.Module):
            raise CheckpointError(f"{adapters}: an export directory; features need the torch model (a run directory "
                                  "or adapter directory)")
        return predictor.model, predictor.protocol
    if not backbone:
        raise CheckpointError("give a backbone file (and, for a tuned model, its adapters)")
    from video_adapt.checkpoint import architecture_of, load_pretrained
    from video_adapt.models.factory import create_model
    name, arch = architecture_of(backbone)
    model = create_model(name, num_classes=0, **arch)
    load_pretrained(model, backbone)
    return model, None


# ----------------------------------------------------------------------------------------------- the model
class FeatureExtractor:
    """A model cut after block `layer` and pooled as `pool` says: uint8 views (N x crops, 3, T, S, S) -> float32
    features (N, *shape), the crops of a window averaged."""

    def __init__(self, model: nn.Module, view: EvalView, *, layer: int = -1, pool: str | None = None,
                 device: str = "auto", amp: str = "auto", batch_size: int = 16):
        from video_adapt.distributed import resolve_device
        from video_adapt.engine.precision import autocast_dtype
        depth = len(model.blocks)
        if not -depth <= layer < depth:
            raise ConfigError(f"--layer {layer}: the model has {depth} blocks (0..{depth - 1}, or -1..-{depth})")
        self.layer = layer % depth
        self.pool = pool or ("fc_norm" if self.layer == depth - 1 else "mean")
        if self.pool not in POOLS:
            raise ConfigError(f"--pool {self.pool}: one of {', '.join(POOLS)}")
        self.device = resolve_device(device)
        self.amp = autocast_dtype(self.device, amp)
        self.model = model.to(self.device).eval()
        self.view, self.batch_size = view, batch_size
        tubelet, patch = model.patch_embed.tubelet_size, model.patch_embed.patch_size
        if view.num_frames % tubelet or view.img_size % patch:
            raise ConfigError(f"{view.num_frames} frames at {view.img_size} px do not divide into the model's tubelets "
                              f"of {tubelet} frames x {patch} px")
        self.grid = model.patch_embed.grid(view.num_frames, view.img_size, view.img_size)
        dim = model.embed_dim
        self.shape = (*self.grid, dim) if self.pool == "tokens" else (dim,)

    @torch.inference_mode()
    def __call__(self, views: torch.Tensor) -> np.ndarray:
        from video_adapt.engine.precision import autocast_context
        out = []
        for part in views.split(self.batch_size * self.view.crops):
            x = normalize_clips(part.to(self.device))
            with autocast_context(self.device, self.amp):
                tokens = self.model.forward_layer(x, self.layer)
            tokens = tokens.float()
            if self.pool == "tokens":
                feats = tokens.reshape(len(tokens), *self.shape)
            elif self.pool == "mean":
                feats = tokens.mean(1)
            else:
                feats = self.model.norm_pooled(self.model.pool_tokens(tokens))
            out.append(feats.view(-1, self.view.crops, *self.shape).mean(1).cpu())
        return torch.cat(out).numpy()


# ----------------------------------------------------------------------------------------------- decoding
@dataclass
class VideoWindows:
    """One video's windows, known once it is opened."""

    fps: float
    frames: int
    window_frames: int
    stride_frames: int
    starts: np.ndarray  # first frame of every window

    def row(self) -> dict[str, Any]:
        return {"fps": round(self.fps, 6), "frames": self.frames, "windows": len(self.starts),
                "window_frames": self.window_frames, "stride_frames": self.stride_frames,
                "window_start_frames": self.starts.tolist(),
                "window_start_s": [round(int(s) / self.fps, 6) for s in self.starts]}


@dataclass
class _Item:
    """What the decoding side hands over for video `video`: its windows (first), a chunk of views, or an error."""

    video: int
    windows: VideoWindows | None = None
    first: int = 0
    views: torch.Tensor | None = None
    error: str | None = None


class WindowViews(IterableDataset):
    """The test views of every window of the given videos, in chunks; DataLoader workers share the videos out (each
    video's items stay in order within its worker). A file that cannot be read yields its error, never raises."""

    def __init__(self, paths: Sequence[str], todo: Sequence[int], view: EvalView, window: float | str, stride: float | str,
                 windows_per_item: int):
        self.paths, self.todo, self.view = list(paths), list(todo), view
        self.window, self.stride = window, stride
        self.chunk = max(1, min(windows_per_item, READ_FRAMES // max(view.num_frames * view.clips, 1)))

    def __iter__(self) -> Iterator[_Item]:
        info = get_worker_info()
        mine = self.todo if info is None else self.todo[info.id::info.num_workers]
        for i in mine:
            yield from self._video(i)

    def _video(self, i: int) -> Iterator[_Item]:
        path = self.paths[i]
        try:
            reader = open_video(path)
            fps = reader.fps if reader.fps > 0 else DEFAULT_FPS
            win, step = span_frames(self.window, fps), span_frames(self.stride, fps)
            windows = VideoWindows(fps, reader.num_frames, win, step, window_starts(reader.num_frames, win, step))
            yield _Item(i, windows=windows)
            for at in range(0, len(windows.starts), self.chunk):
                spans = [(int(s), min(int(s) + win, reader.num_frames)) for s in windows.starts[at:at + self.chunk]]
                yield _Item(i, first=at, views=torch.cat(views_of_windows(reader, self.view, self.view.stride, spans)))
        except VideoDecodeError as err:
            yield _Item(i, error=str(err))
        except Exception as err:  # anything else in one file must not stop a long job either
            yield _Item(i, error=f"{path}: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")


def _as_is(item: _Item) -> _Item:
    return item


# ----------------------------------------------------------------------------------------------- the index
class FeatureIndex:
    """index.json + index.csv of an output folder: the settings and one row per video (done or failed)."""

    def __init__(self, out: Path, settings: FeatureSettings):
        self.out, self.settings = out, settings
        self.rows: dict[str, dict[str, Any]] = {}
        self.written, self.cost = 0.0, 0.0
        path = out / "index.json"
        if path.exists():
            self._read(path)
        elif out.exists() and any(out.iterdir()):
            raise ConfigError(f"{out}: not empty and holds no index.json; choose another output folder")

    def _read(self, path: Path) -> None:
        try:
            saved = json.loads(path.read_text())
            if saved.get("format") != FORMAT:
                raise ValueError(f"format {saved.get('format')!r}")
            previous, rows = saved["settings"], saved["videos"]
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(f"{path}: not a feature index ({err}); choose another output folder") from None
        ours = json.loads(json.dumps(asdict(self.settings)))  # as JSON reads it back (tuples become lists)
        differ = [k for k in ours if k not in ("backbone", "adapters") and previous.get(k) != ours[k]]
        if differ:
            k = differ[0]
            raise ConfigError(f"{self.out}: holds features made with other settings ({k} {previous.get(k)!r}, now "
                              f"{ours[k]!r}); choose another output folder or delete it")
        self.rows = {row["id"]: row for row in rows}

    def done(self, video_id: str) -> bool:
        row = self.rows.get(video_id)
        return row is not None and row["status"] == "ok" and (self.out / row["file"]).exists()

    def set(self, row: dict[str, Any]) -> None:
        self.rows[row["id"]] = row

    def write(self, order: Sequence[str] = ()) -> None:
        """Rows of `order` first (the inputs' order), then rows of earlier runs' other inputs. index.json holds one
        video per line: a large folder's index stays readable and quick to rewrite."""
        begun = time.monotonic()
        ids = [i for i in order if i in self.rows] + [i for i in self.rows if i not in set(order)]
        rows = [self.rows[i] for i in ids]
        head = json.dumps({"format": FORMAT, "version": VERSION, "settings": asdict(self.settings),
                           "layout": "one <id>.npy per video: (windows, " + ", ".join(_shape_names(self.settings)) + ")"},
                          indent=2)
        videos = ",\n".join(f"    {json.dumps(r)}" for r in rows)
        write_text_atomic(self.out / "index.json", head[:-2] + f',\n  "videos": [\n{videos}\n  ]\n}}\n')  # head[:-2]: "\n}"
        write_csv_atomic(self.out / "index.csv", INDEX_COLUMNS, [[_cell(r.get(c)) for c in INDEX_COLUMNS] for r in rows])
        self.written = time.monotonic()
        self.cost = self.written - begun

    def write_now_and_then(self, order: Sequence[str]) -> None:
        """Every 30 s, or less often where rewriting a large index would take more than a tenth of the time."""
        if time.monotonic() - self.written >= max(INDEX_EVERY_S, 10 * self.cost):
            self.write(order)


def _shape_names(settings: FeatureSettings) -> list[str]:
    names = ["T'", "H'", "W'", "D"] if settings.pool == "tokens" else ["D"]
    return [f"{n}={v}" for n, v in zip(names, settings.feature_shape)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def _remove_stale_temporaries(out: Path) -> None:
    """Hidden temporaries of killed jobs (`files.NpyWriter`): a token feature file can be large."""
    for path in out.glob(".*.tmp*.npy"):
        match = re.search(r"\.tmp(\d+)\.npy$", path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


# ----------------------------------------------------------------------------------------------- the job
@dataclass
class FeatureReport:
    out: Path
    videos: int  # inputs
    written: int  # arrays written by this call
    skipped: int  # done by an earlier call
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    windows: int = 0
    seconds: float = 0.0
    paths: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        rate = self.windows / self.seconds if self.seconds > 0 else 0.0
        return (f"features of {self.written} videos written, {self.skipped} already done, {len(self.failures)} failed "
                f"({self.windows} windows in {self.seconds:.1f} s, {rate:.1f} windows/s) -> {self.out}")


@dataclass
class _Job:
    index: int
    windows: VideoWindows
    writer: NpyWriter
    filled: int = 0


def video_ids(paths: Sequence[str]) -> list[str]:
    """Each file's name without its extension (what temporal localization annotations call a video); two inputs
    with the same name would overwrite each other's array, so that stops the job before it starts."""
    ids = [Path(p).stem for p in paths]
    seen: dict[str, str] = {}
    for vid, path in zip(ids, paths):
        if vid in seen:
            raise ConfigError(f"{path}: has the same name as {seen[vid]}; the features of both would be {vid}.npy")
        seen[vid] = path
    return ids


def extract_features(inputs: Sequence[str | os.PathLike] | str, out: str | os.PathLike, *,
                     backbone: str | os.PathLike | None = None, adapters: str | os.PathLike | None = None,
                     layer: int = -1, pool: str | None = None, window: str | int | None = None,
                     stride: str | int | None = None, num_frames: int | None = None, img_size: int | None = None,
                     frame_stride: int | None = None, crops: int = 1, dtype: str = "float32", batch_size: int = 16,
                     workers: int = 2, device: str = "auto", amp: str = "auto", force: bool = False,
                     progress: bool = True) -> FeatureReport:
    """Write the window features of video files (or folders of them) to `out` (see the module docstring).

    `window` / `stride`: seconds (`2`, `"1.5s"`) or frames (`"32f"`), as everywhere; default window T x r frames (one clip's
    span), default stride the window. `num_frames`, `img_size`, `frame_stride` (r) default to the model's data
    protocol (a bare backbone: its preset's frames and size, r = 4). `pool`: fc_norm | mean | tokens (default fc_norm
    at the last block, mean before it). `batch_size`: windows per forward pass, across videos. `workers`: decoding
    processes."""
    from video_adapt.inference import expand_inputs
    start = time.perf_counter()
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r}: one of {', '.join(DTYPES)}")
    if crops < 1 or batch_size < 1 or workers < 0:
        raise ConfigError("crops and the batch size must be at least 1, workers at least 0")
    paths = expand_inputs([str(inputs)] if isinstance(inputs, (str, os.PathLike)) else [str(p) for p in inputs])
    if not paths:
        raise ConfigError("no video files found in the inputs")
    ids = video_ids(paths)
    model, protocol = load_feature_model(backbone, adapters, force=force)
    base = protocol or DataProtocol(num_frames=model.cfg.num_frames, img_size=model.cfg.img_size)
    view = EvalView(num_frames=num_frames or base.num_frames, img_size=img_size or base.img_size,
                    sampling=base.test_sampling, stride=frame_stride or base.stride, clips=1, crops=crops,
                    short_side=img_size or base.test_short_side)
    extractor = FeatureExtractor(model, view, layer=layer, pool=pool, device=device, amp=amp, batch_size=batch_size)
    window_span = _span(window if window is not None else f"{view.num_frames * view.stride}f", "--window")
    stride_span = _span(stride, "--stride") if stride is not None else window_span
    settings = FeatureSettings(model=dict(getattr(model, "build_args", None) or {}), backbone=_weights_path(backbone),
                               adapters=_weights_path(adapters), layer=extractor.layer, pool=extractor.pool,
                               window=_span_key(window_span), stride=_span_key(stride_span), num_frames=view.num_frames,
                               img_size=view.img_size, sampling=view.sampling, frame_stride=view.stride,
                               short_side=view.short_side, crops=crops, dtype=dtype,
                               feature_shape=list(extractor.shape))
    out = Path(out)
    index = FeatureIndex(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    todo = [i for i, vid in enumerate(ids) if not index.done(vid)]
    report = FeatureReport(out, len(paths), 0, len(paths) - len(todo))
    index.write(ids)  # from the first moment the folder says what it holds

    dataset = WindowViews(paths, todo, view, window_span, stride_span, batch_size)
    items: Any = dataset if workers == 0 or len(todo) < 2 else DataLoader(
        dataset, batch_size=None, num_workers=min(workers, len(todo)), collate_fn=_as_is)
    jobs: dict[int, _Job] = {}
    pending: list[tuple[_Job, int, torch.Tensor]] = []
    bar = tqdm(total=len(todo), desc="features", unit="video", disable=not progress, file=sys.stderr)

    def fail(i: int, reason: str) -> None:
        job = jobs.pop(i, None)
        if job is not None:
            job.writer.discard()
        index.set({"id": ids[i], "path": paths[i], "status": "failed", "error": reason})
        report.failures.append((paths[i], reason))
        tqdm.write(f"error: {reason}", file=sys.stderr)
        bar.update(1)

    def flush() -> None:
        if not pending:
            return
        feats = extractor(torch.cat([v for _, _, v in pending]))
        at = 0
        for job, first, views in pending:
            n = len(views) // view.crops
            if jobs.get(job.index) is job:  # not failed meanwhile
                job.writer.array[first:first + n] = feats[at:at + n]
                job.filled += n
                if job.filled == len(job.windows.starts):
                    job.writer.commit()
                    del jobs[job.index]
                    index.set({"id": ids[job.index], "path": paths[job.index], "status": "ok",
                               "file": job.writer.path.name, **job.windows.row()})
                    report.written += 1
                    report.windows += len(job.windows.starts)
                    bar.update(1)
            at += n
        pending.clear()
        index.write_now_and_then(ids)

    try:
        for item in items:
            if item.error is not None:
                fail(item.video, item.error)
            elif item.windows is not None:
                shape = (len(item.windows.starts), *extractor.shape)
                jobs[item.video] = _Job(item.video, item.windows, NpyWriter(out / f"{ids[item.video]}.npy", shape,
                                                                             dtype))
            else:
                pending.append((jobs[item.video], item.first, item.views))
                if sum(len(v) for *_, v in pending) >= batch_size * view.crops:
                    flush()
        flush()
    finally:
        bar.close()
        for job in jobs.values():  # unfinished when the job stopped
            job.writer.discard()
        index.write(ids)
    report.seconds = time.perf_counter() - start
    report.paths = {"index": out / "index.json", "index_csv": out / "index.csv"}
    return report


def read_features(out: str | os.PathLike, video_id: str) -> tuple[np.ndarray, dict[str, Any]]:
    """One video's features and its index row (fps, window starts ...), from a folder `extract_features` wrote."""
    out = Path(out)
    path = out / "index.json"
    if not path.exists():
        raise ConfigError(f"{out}: no index.json; not a feature folder")
    rows = {r["id"]: r for r in json.loads(path.read_text())["videos"]}
    row = rows.get(video_id)
    if row is None or row["status"] != "ok":
        raise ConfigError(f"{out}: no features of {video_id!r}" + (f" ({row['error']})" if row else ""))
    return np.load(out / row["file"]), row

