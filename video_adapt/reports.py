"""Files people read after a run: per-class accuracy, confusion matrix (CSV and PNG), predictions; for a multi-label
task mAP, per-class average precision and each video's label set against the classes predicted."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from video_adapt.files import atomic_path, write_csv_atomic, write_json_atomic


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (no display on servers and in CI)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    fig.clf()
    pyplot().close(fig)
    return path


def plot_confusion(confusion: np.ndarray, class_names: list[str], path: Path) -> Path:
    plt = pyplot()
    n = len(class_names)
    norm = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    size = min(4 + 0.35 * n, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 60:
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if confusion[i, j]:
                        ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    return save_figure(fig, path)


def write_test_reports(result, class_names: list[str], video_ids: list[str] | None, out_dir: Path,
                       extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """metrics.json, per_class.csv, confusion.csv/.png and predictions.csv for one evaluation (multi-label: no
    confusion matrix; `write_multilabel_reports`)."""
    if result.multilabel:
        return write_multilabel_reports(result, class_names, video_ids, out_dir, extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    metrics = {"top1": result.top1, "top5": result.top5, "nll": result.loss, "videos": result.num_videos,
               **(extra or {})}
    paths["metrics"] = write_json_atomic(out_dir / "metrics.json", metrics)
    counts = result.confusion.sum(1) if result.confusion is not None else np.zeros(len(class_names))
    paths["per_class"] = write_csv_atomic(out_dir / "per_class.csv", ["class", "videos", "top1"],
                                   [[c, int(n), f"{a:.2f}"] for c, n, a in zip(class_names, counts, result.per_class)])
    if result.confusion is not None:
        paths["confusion_csv"] = write_csv_atomic(out_dir / "confusion.csv", ["true \\ predicted", *class_names],
                                           [[c, *row.tolist()] for c, row in zip(class_names, result.confusion)])
        paths["confusion_png"] = plot_confusion(result.confusion, class_names, out_dir / "confusion.png")
    rows = []
    for p in result.predictions:
        vid = video_ids[p["index"]] if video_ids is not None else p["index"]
        rows.append([vid, class_names[p["label"]], class_names[p["pred"]], f"{p['score']:.4f}",
                     int(p["label"] == p["pred"])])
    paths["predictions"] = write_csv_atomic(out_dir / "predictions.csv", ["video", "label", "prediction", "score", "correct"],
                                     rows)
    return paths


def write_multilabel_reports(result, class_names: list[str], video_ids: list[str] | None, out_dir: Path,
                             extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """metrics.json (mAP, mean binary cross-entropy), per_class.csv (positives and AP per class) and predictions.csv
    (each video's classes, those predicted at probability >= 0.5, the top class and its probability)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {"mAP": result.mean_ap, "bce": result.loss, "videos": result.num_videos, **(extra or {})}
    paths = {"metrics": write_json_atomic(out_dir / "metrics.json", metrics)}
    positives = np.zeros(len(class_names), dtype=np.int64)
    for p in result.predictions:
        positives[p["labels"]] += 1
    paths["per_class"] = write_csv_atomic(out_dir / "per_class.csv", ["class", "positives", "ap"],
                                          [[c, int(n), f"{ap:.2f}"] for c, n, ap in
                                           zip(class_names, positives, result.per_class)])

    def names(indices: list[int]) -> str:
        return ";".join(class_names[i] for i in indices)

    rows = [[video_ids[p["index"]] if video_ids is not None else p["index"], names(p["labels"]), names(p["pred"]),
             class_names[p["top"]], f"{p['score']:.4f}", int(sorted(p["labels"]) == sorted(p["pred"]))]
            for p in result.predictions]
    paths["predictions"] = write_csv_atomic(out_dir / "predictions.csv",
                                            ["video", "labels", "predicted", "top", "score", "exact"], rows)
    return paths
