"""Multi-view evaluation: every test view of a video through the model, combined into class probabilities as the
protocol says (`combine_views`), then top-1/top-5, per-class accuracy, confusion matrix and NLL; for a multi-label
task mean average precision (mAP, Charades' metric), per-class AP and binary cross-entropy. The multi-view test of a
model (`multi_view_test`) is the loop's final test and `runs.evaluate_run`'s, one function for both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from video_adapt.config import Config
from video_adapt.data.protocol import DataProtocol, combine_views
from video_adapt.distributed import DistState, all_gather_objects
from video_adapt.engine.data import to_model_input
from video_adapt.engine.precision import autocast_context


@dataclass
class EvalResult:
    top1: float
    top5: float
    loss: float  # mean NLL of the true class; multi-label: mean binary cross-entropy over videos and classes
    num_videos: int
    per_class: list[float] = field(default_factory=list)  # accuracy (%); multi-label: average precision (%)
    confusion: np.ndarray | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    mean_ap: float | None = None  # multi-label tasks: mAP (%), top-1/top-5 are nan

    @property
    def multilabel(self) -> bool:
        return self.mean_ap is not None

    @property
    def score(self) -> float:
        """The number a run reports and keeps its best checkpoint by: top-1, or mAP for a multi-label task."""
        return self.mean_ap if self.mean_ap is not None else self.top1

    @property
    def metric(self) -> str:
        return "mAP" if self.multilabel else "top-1"


def average_precisions(targets: np.ndarray, scores: np.ndarray) -> tuple[float, list[float]]:
    """Mean average precision (%) over the classes that have a positive among the videos, and each class's AP (%)
    (nan for a class without positives: its AP is undefined). targets: multi-hot (N, C); scores: (N, C).
    AP is scikit-learn's `average_precision_score` (precision summed at each positive's recall step, no
    interpolation)."""
    from sklearn.metrics import average_precision_score
    per_class = [float(average_precision_score(targets[:, c], scores[:, c]) * 100) if targets[:, c].any()
                 else float("nan") for c in range(targets.shape[1])]
    present = [ap for ap in per_class if not np.isnan(ap)]
    return (float(np.mean(present)) if present else float("nan")), per_class


Inputs = Callable[[torch.Tensor, torch.device], torch.Tensor]


@torch.inference_mode()
def predict_views(model: nn.Module, loader: Iterable, device: torch.device, amp: torch.dtype | None, *,
                  average: str, multilabel: bool = False, progress: bool = False,
                  inputs: Inputs = to_model_input) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per video: (video indices, labels (N,) or multi-hot targets (N, C), class probabilities (N, C)), its views
    combined as the protocol says (`average`, `multilabel`: video_adapt.data.protocol.combine_views). `inputs` turns a batch's views (B*V, ...) into what
    `model` takes: uint8 clips into normalised floats, or cached features (engine.feature_cache) onto the device.
    `model` may also be any callable from those inputs to logits (an exported model's runtime session,
    video_adapt.export.runtime)."""
    if isinstance(model, nn.Module):
        model.eval()
    indices, labels, scores = [], [], []
    for views, label, index in tqdm(loader, desc="eval", disable=not progress, leave=False):
        b, v = views.shape[:2]
        x = inputs(views.flatten(0, 1), device)
        with autocast_context(device, amp):
            logits = model(x).float().view(b, v, -1)
        scores.append(combine_views(logits, average, multilabel).cpu())
        labels.append(torch.as_tensor(label))
        indices.append(torch.as_tensor(index))
    if not scores:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return torch.cat(indices).numpy(), torch.cat(labels).numpy(), torch.cat(scores).numpy()


def summarize(indices: np.ndarray, labels: np.ndarray, probs: np.ndarray, num_classes: int) -> EvalResult:
    """Top-1/top-5, per-class accuracy, confusion matrix and mean NLL from per-video class probabilities."""
    if len(labels) == 0:
        return EvalResult(0.0, 0.0, float("nan"), 0)
    order = np.argsort(-probs, axis=1)
    pred = order[:, 0]
    top1 = float((pred == labels).mean() * 100)
    top5 = float((order[:, :5] == labels[:, None]).any(1).mean() * 100)
    loss = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = [float(confusion[c, c] / confusion[c].sum() * 100) if confusion[c].sum() else float("nan")
                 for c in range(num_classes)]
    predictions = [{"index": int(i), "label": int(l), "pred": int(p), "score": float(s[p])}
                   for i, l, p, s in zip(indices, labels, pred, probs)]
    return EvalResult(top1, top5, loss, len(labels), per_class, confusion, predictions)


def summarize_multilabel(indices: np.ndarray, targets: np.ndarray, probs: np.ndarray,
                         threshold: float = 0.5) -> EvalResult:
    """mAP and per-class AP (`average_precisions`), mean binary cross-entropy, and per video its classes, the classes
    at or above `threshold` and its top class."""
    if len(targets) == 0:
        return EvalResult(float("nan"), float("nan"), float("nan"), 0, mean_ap=float("nan"))
    mean_ap, per_class = average_precisions(targets, probs)
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    loss = float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
    predictions = [{"index": int(i), "labels": np.flatnonzero(t).tolist(), "pred": np.flatnonzero(s >= threshold).tolist(),
                    "top": int(s.argmax()), "score": float(s.max())} for i, t, s in zip(indices, targets, probs)]
    return EvalResult(float("nan"), float("nan"), loss, len(targets), per_class, None, predictions, mean_ap)


def evaluate(model: nn.Module, loader: Iterable, device: torch.device, amp: torch.dtype | None, num_classes: int, *,
             average: str, multilabel: bool = False, dist_state: DistState | None = None, progress: bool = False,
             inputs: Inputs = to_model_input) -> EvalResult:
    """Multi-view evaluation, gathered over ranks (padding duplicates removed by video index)."""
    indices, labels, scores = predict_views(model, loader, device, amp, average=average, multilabel=multilabel,
                                            progress=progress, inputs=inputs)
    if dist_state is not None and dist_state.enabled:
        parts = all_gather_objects((indices, labels, scores), dist_state)
        merged: dict[int, tuple[Any, np.ndarray]] = {}
        for idx, lab, sc in parts:
            for i, l, s in zip(idx, lab, sc):
                merged[int(i)] = (l, s)
        keys = sorted(merged)
        indices = np.array(keys, dtype=np.int64)
        labels = np.array([merged[k][0] for k in keys], dtype=np.float32 if multilabel else np.int64)
        scores = np.stack([merged[k][1] for k in keys]) if keys else scores
    if multilabel:
        return summarize_multilabel(indices, labels, scores)
    return summarize(indices, labels, scores, num_classes)


def multi_view_test(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], cfg: Config, split: str, device: torch.device, amp: torch.dtype | None, *,
                    dist_state: DistState | None = None, crops: int | None = None, average: str | None = None,
                    batch_size: int | None = None, workers: int | None = None,
                    progress: bool = False) -> tuple[EvalResult, Dataset]:
    """The multi-view test of `model` on `split` with the views and averaging of the run's resolved protocol
    (`crops` and `average` replace the protocol's); returns the result and the dataset it ran on (video ids, views
    per video)."""
    from video_adapt.engine.data import eval_loader
    loader = eval_loader(cfg, split, device, dist_state, crops=crops, batch_size=batch_size, workers=workers)
    protocol = DataProtocol.from_config(cfg.data)
    classes = len(loader.dataset.source.classes)
    result = evaluate(model, loader, device, amp, classes, average=average or protocol.view_average,
                      multilabel=protocol.multilabel, dist_state=dist_state, progress=progress)
    return result, loader.dataset
