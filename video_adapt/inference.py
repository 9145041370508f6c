"""Classify video files with a trained model: the multi-view protocol of testing, on files instead of a frame store.

    from video_adapt import predict
    results = predict(["clip.mp4"], checkpoint="runs/ssv2_adaptformer_8f")

Frames are sampled by the test views of the data protocol stored with the trained model (T-DENSE or T-SSV2 clips x
3 crops at the protocol's short side), and the views' scores are combined as that protocol does (mean logits for
AdaptFormer's, mean probabilities for VideoMAE's); a multi-label model gives each class its own sigmoid probability
and `labels` lists the classes at or above `Predictor.threshold`.
A file that cannot be read gives a one-line error in its result; the other files still run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from video_adapt.checkpoint import CheckpointError, load_adapters, load_pretrained, read_adapter_config
from video_adapt.data.decode import VIDEO_EXTENSIONS, VideoDecodeError, open_video
from video_adapt.data.datasets import views_of
from video_adapt.data.protocol import DataProtocol, combine_views
from video_adapt.data.sampling import span_frames, window_starts
from video_adapt.data.transforms import normalize_clips
from video_adapt.models.factory import model_from_build_args
from video_adapt.models.methods import method_spec
from video_adapt.models.tuning import merge_tuning


@dataclass
class WindowPrediction:
    start_s: float
    end_s: float
    label: str
    prob: float


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    windows: list[WindowPrediction] | None = None
    labels: list[tuple[str, float]] | None = None  # multi-label models: the classes at or above the threshold

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "error": self.error,
                               "top": [{"label": l, "prob": round(p, 6)} for l, p in self.top]}
        if self.labels is not None:
            out["labels"] = [{"label": l, "prob": round(p, 6)} for l, p in self.labels]
        if self.windows is not None:
            out["windows"] = [w.__dict__ for w in self.windows]
            out["segments"] = [s.__dict__ for s in segments(self.windows)]
        return out


def segments(windows: Sequence[WindowPrediction]) -> list[WindowPrediction]:
    """Merge consecutive windows with the same top-1 class: where the action changes."""
    merged: list[WindowPrediction] = []
    for w in windows:
        if merged and merged[-1].label == w.label:
            last = merged[-1]
            merged[-1] = WindowPrediction(last.start_s, w.end_s, w.label, max(last.prob, w.prob))
        else:
            merged.append(WindowPrediction(w.start_s, w.end_s, w.label, w.prob))
    return merged


Logits = Callable[[torch.Tensor], torch.Tensor]


class Predictor:
    """A model, its class names and its data protocol; `predict` runs files in batches.

    `model` maps normalised float clips (B, 3, T, H, W) to logits: a torch module, or an exported model's runtime
    session (`video_adapt.export.runtime`); decoding, views and averaging are the same for both."""

    def __init__(self, model: nn.Module | Logits, class_names: list[str], protocol: DataProtocol,
                 device: str = "auto"):
        from video_adapt.distributed import resolve_device
        from video_adapt.engine.precision import autocast_dtype
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval() if isinstance(model, nn.Module) else model
        self.runtime = getattr(model, "description", "torch eager")
        self.info: dict[str, Any] = {}  # the adapter config it was loaded from (what `video-adapt export` records)
        self.class_names = class_names
        self.protocol = protocol
        self.view = protocol.eval_view()
        self.amp = autocast_dtype(self.device, "auto")  # bf16 on GPUs that have it, fp32 on CPU
        self.threshold = 0.5  # multi-label models: a class is predicted at or above this probability

    @classmethod
    def load(cls, checkpoint: str | None = None, backbone: str | None = None, adapters: str | None = None,
             device: str = "auto", crops: int | None = None, force: bool = False, runtime: str = "torch",
             precision: str = "fp32") -> "Predictor":
        """From a training run directory, an adapter directory (+ backbone unless fully fine-tuned), or an export
        directory (`video-adapt export`) run by `runtime` (torch, onnx, openvino) at `precision`."""
        from video_adapt.export.manifest import is_export_dir
        if checkpoint and is_export_dir(checkpoint):
            from video_adapt.export.runtime import load_runtime
            session = load_runtime(checkpoint, runtime, precision)
            return cls(session, session.class_names, DataProtocol.from_record(session.data).with_crops(crops), "cpu")
        if runtime != "torch" or precision != "fp32":
            raise CheckpointError(f"{checkpoint or adapters}: --runtime {runtime} --precision {precision} runs an "
                                  "export directory; write one with video-adapt export RUN --format onnx --out DIR")
        adapters, backbone, info = locate_model(checkpoint, backbone, adapters)
        model = model_from_build_args(info["build_args"])
        if model.tuning.spec.frozen_backbone:
            if backbone:
                load_pretrained(model, backbone)
            elif info.get("backbone_fingerprint"):
                raise CheckpointError(f"{adapters}: adapters need their backbone; pass --backbone FILE")
        load_adapters(model, adapters, force=force)
        merge_tuning(model)  # LoRA: the same logits at the backbone's speed (plain Linear layers, fused attention)
        predictor = cls(model, info["class_names"] or [str(i) for i in range(model.num_classes)],
                        DataProtocol.from_record(info.get("data")).with_crops(crops), device)
        predictor.info = info
        return predictor

    def _views_of(self, reader, start: int = 0, end: int | None = None) -> torch.Tensor:
        """uint8 (V, 3, T, S, S): the protocol's test clips of frames [start, end) x spatial crops."""
        return views_of(reader, self.view, self.view.stride, start, end)

    @torch.inference_mode()
    def _probs(self, views: torch.Tensor, counts: list[int]) -> list[np.ndarray]:
        """Per video: the class probabilities of its views, combined as the protocol does (`_combine`)."""
        from video_adapt.engine.precision import autocast_context
        x = normalize_clips(views.to(self.device))
        with autocast_context(self.device, self.amp):
            logits = self.model(x).float()
        return self._combine(logits, counts)

    def _combine(self, logits: torch.Tensor, counts: list[int]) -> list[np.ndarray]:
        """The logits of consecutive videos' views (`counts` views each) -> each video's class probabilities: the one
        place a score is made from logits, also for the tasks of a `video_adapt.serving.MultiTaskPredictor`."""
        out, at = [], 0
        for n in counts:
            out.append(combine_views(logits[at:at + n].unsqueeze(0), self.protocol.view_average,
                                     self.protocol.multilabel)[0].cpu().numpy())
            at += n
        return out

    def _top(self, probs: np.ndarray, k: int) -> list[tuple[str, float]]:
        order = np.argsort(-probs)[:k]
        return [(self.class_names[i], float(probs[i])) for i in order]

    def _above(self, probs: np.ndarray) -> list[tuple[str, float]] | None:
        """A multi-label model's classes at or above the threshold, most probable first (None: single-label)."""
        if not self.protocol.multilabel:
            return None
        return self._top(probs, len(probs))[:int((probs >= self.threshold).sum())]

    def prediction(self, path: str, probs: np.ndarray | None, topk: int, error: str | None = None) -> Prediction:
        """A file's result from its combined class probabilities: the top-k and, for a multi-label model, the
        classes at or above the threshold (the one place a Prediction is made from scores)."""
        if error is not None:
            return Prediction(str(path), error=error)
        return Prediction(str(path), self._top(probs, topk), labels=self._above(probs))

    def predict(self, paths: Iterable[str], topk: int = 5, batch_videos: int = 8) -> list[Prediction]:
        return [self.prediction(path, scores, topk, error) for path, scores, error in
                score_files(paths, self._views_of, self._probs, batch_videos)]

    def predict_views(self, path: str, topk: int = 5) -> tuple[Prediction, torch.Tensor | None]:
        """One file's prediction and the uint8 views (V, 3, T, S, S) it averaged over: exactly what the model saw."""
        pred = Prediction(str(path))
        try:
            views = self._views_of(open_video(path))
        except VideoDecodeError as err:
            pred.error = str(err)
            return pred, None
        return self.prediction(path, self._probs(views, [len(views)])[0], topk), views

    def timeline(self, path: str, window_s: float | str, stride_s: float | str, topk: int = 5) -> Prediction:
        """Top-1 per window of `window_s` every `stride_s` (seconds, or frames as '16f'), plus the whole-video top-k."""
        pred = self.predict([path], topk)[0]
        if pred.error:
            return pred
        pred.windows = [WindowPrediction(start, end, *self._top(probs, 1)[0]) for start, end, probs in
                        sliding_windows(open_video(path), window_s, stride_s, self._views_of, self._probs)]
        return pred


def score_files(paths: Iterable[str], views_of: Callable[[Any], torch.Tensor],
                probs: Callable[[torch.Tensor, list[int]], list[Any]], batch_videos: int) -> list[tuple[str, Any, str | None]]:
    """(path, scores, error) of every file in order: each file's test views by `views_of(reader)`, scored
    `batch_videos` files at a time by `probs(views, counts)` (a Predictor's or a MultiTaskPredictor's); a file that
    cannot be decoded gets its one-line error and no scores, and the others still run."""
    results: list[tuple[str, Any, str | None]] = []
    pending: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        if pending:
            scores = probs(torch.cat([v for _, v in pending]), [len(v) for _, v in pending])
            for (at, _), score in zip(pending, scores):
                results[at] = (results[at][0], score, None)
            pending.clear()

    for path in paths:
        results.append((str(path), None, None))
        try:
            pending.append((len(results) - 1, views_of(open_video(path))))
        except VideoDecodeError as err:
            results[-1] = (str(path), None, str(err))
            continue
        if len(pending) >= batch_videos:
            flush()
    flush()
    return results


def sliding_windows(reader: Any, window: float | str, stride: float | str,
                    views_of: Callable[[Any, int, int], torch.Tensor],
                    probs: Callable[[torch.Tensor, list[int]], list[Any]], batch: int = 16):
    """(start s, end s, scores) of every window of an opened video: its test views by `views_of(reader, start, end)`,
    scored `batch` windows at a time by `probs(views, counts)` (a Predictor's or a MultiTaskPredictor's)."""
    fps = reader.fps if reader.fps > 0 else 25.0
    win = span_frames(window, fps)
    starts = window_starts(reader.num_frames, win, span_frames(stride, fps)).tolist()
    for chunk in range(0, len(starts), batch):
        part = starts[chunk:chunk + batch]
        views = [views_of(reader, s, min(s + win, reader.num_frames)) for s in part]
        for s, scores in zip(part, probs(torch.cat(views), [len(v) for v in views])):
            yield round(s / fps, 3), round(min(s + win, reader.num_frames) / fps, 3), scores


def locate_model(checkpoint: str | None, backbone: str | None, adapters: str | None) -> tuple[str, str | None, dict]:
    """(adapter directory, backbone file, adapter config) of a training run directory or an adapter directory; the
    backbone is the one given, else the run's configured one when its method keeps the backbone frozen."""
    run = Path(checkpoint) if checkpoint and (Path(checkpoint) / "config.yaml").exists() else None
    adapters = str(run / "adapters") if run else (checkpoint or adapters)
    if not adapters:
        raise CheckpointError("give --checkpoint (a run directory or adapter directory) or --backbone and --adapters")
    info = read_adapter_config(adapters)
    if not info.get("build_args"):
        raise CheckpointError(f"{adapters}: adapter config lacks build_args; cannot rebuild the model")
    if run and backbone is None and method_spec(info.get("method", "full")).frozen_backbone:
        from video_adapt.config import load_config
        backbone = load_config(run / "config.yaml").model.pretrained
    return adapters, backbone, info


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files as given; folders become their video files (recursively, sorted)."""
    paths: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += [str(f) for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS]
        else:
            paths.append(str(p))
    return paths


def predict(inputs: Sequence[str] | str, *, checkpoint: str | None = None, backbone: str | None = None,
            adapters: str | None = None, topk: int = 5, device: str = "auto", crops: int | None = None,
            window: float | None = None, stride: float | None = None, runtime: str = "torch",
            precision: str = "fp32", threshold: float = 0.5) -> list[Prediction]:
    """Classify video files (or folders of them); see `Predictor` for the protocol and the runtimes. `threshold`:
    a multi-label model's `labels` are the classes at or above it."""
    predictor = Predictor.load(checkpoint, backbone, adapters, device=device, crops=crops, runtime=runtime,
                               precision=precision)
    predictor.threshold = threshold
    paths = expand_inputs([inputs] if isinstance(inputs, str) else inputs)
    if window:
        return [predictor.timeline(p, window, stride or window, topk) for p in paths]
    return predictor.predict(paths, topk)
