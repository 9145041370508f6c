"""Feature analysis: pooled clip features of trained runs, t-SNE maps and separability numbers.

The article shows t-SNE pictures of AdaptFormer, VPT and linear-probing features; beside the picture we report the
silhouette score and k-NN accuracy (5 neighbours, cross-validated) so the comparison is a number too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from video_adapt.errors import ConfigError


@torch.inference_mode()
def view_averaged_features(model: nn.Module, loader: Iterable, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Pooled, normed features (what the head sees) averaged over each video's views; and the labels."""
    from video_adapt.data.transforms import normalize_clips
    model.eval()
    feats, labels = [], []
    for views, label, _ in loader:
        b, v = views.shape[:2]
        x = normalize_clips(views.flatten(0, 1).to(device))
        feats.append(model.forward_features(x).float().view(b, v, -1).mean(1).cpu())
        labels.append(torch.as_tensor(label))
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def separability(features: np.ndarray, labels: np.ndarray, neighbours: int = 5) -> dict[str, float]:
    """Silhouette score (cosine) and cross-validated k-NN accuracy of the features."""
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    folds = int(min(5, np.bincount(labels).min()))
    knn = KNeighborsClassifier(n_neighbors=neighbours, metric="cosine")
    accuracy = cross_val_score(knn, features, labels, cv=folds).mean() if folds >= 2 else float("nan")
    return {"silhouette": float(silhouette_score(features, labels, metric="cosine")), "knn_accuracy": float(100 * accuracy)}


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE
    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def plot_tsne(maps: dict[str, tuple[np.ndarray, np.ndarray, dict[str, float]]], class_names: list[str],
              path: Path) -> Path:
    """One panel per run: its 2-D map coloured by class, with the separability numbers in the title."""
    from video_adapt.reports import pyplot, save_figure
    plt = pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4.4), squeeze=False)
    cmap = plt.get_cmap("tab20", max(len(class_names), 2))
    for ax, (name, (points, labels, scores)) in zip(axes[0], maps.items()):
        ax.scatter(points[:, 0], points[:, 1], c=labels, cmap=cmap, vmin=0, vmax=max(len(class_names) - 1, 1), s=6)
        ax.set_title(f"{name}\nsilhouette {scores['silhouette']:.2f}, k-NN {scores['knn_accuracy']:.1f}%", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=n) for i, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(class_names), 6), fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, path)


def tsne_runs(runs: dict[str, str | Path], out: Path, *, split: str | None = None, crops: int = 1,
              device: torch.device | None = None) -> dict[str, dict[str, float]]:
    """Pooled features of each run's test videos (its protocol's clips, `crops` crops), their separability and a
    t-SNE panel per run in one PNG at `out`, the numbers beside it as JSON; returns the numbers per run name."""
    from video_adapt.engine.data import eval_loader
    from video_adapt.engine.runs import load_run
    from video_adapt.files import write_json_atomic
    device = device or torch.device("cpu")
    maps, numbers, classes = {}, {}, []
    for name, run in runs.items():
        model, cfg, info = load_run(run)
        if cfg.data.multilabel:
            raise ConfigError(f"{run}: a multi-label run; t-SNE maps colour each video by its one class")
        loader = eval_loader(cfg, split or cfg.data.test_split or cfg.data.val_split, device, crops=crops,
                             batch_size=32, workers=0)
        feats, labels = view_averaged_features(model.to(device), loader, device)
        scores = separability(feats, labels)
        maps[name] = (tsne_2d(feats), labels, scores)
        numbers[name] = {**scores, "videos": len(labels)}
        classes = info["class_names"]
    plot_tsne(maps, classes, out)
    write_json_atomic(out.with_suffix(".json"), numbers)
    return numbers
