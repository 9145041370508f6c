"""Linear probing from cached features (`train.feature_cache: K`).

A linear probe trains `fc_norm`, `head_bn` and `head` on a frozen backbone, so every epoch's backbone forward only
recomputes the pooled feature of a freshly drawn clip. With `train.feature_cache: K` the run computes the
backbone's pooled features once, for K augmented views of every training video and for the monitoring view of every
validation video, and then trains on them: an epoch is a pass of `fc_norm -> head_bn -> head` (`PooledHead`) over
D-wide vectors. What is cached is `VisionTransformer.forward_pooled` (the mean token *before* `fc_norm`, which
trains), kept in the dtype the backbone produced it under the run's AMP (bf16/fp16 on a GPU, fp32 on CPU), so
`fc_norm` gets exactly the input the uncached forward gives it.

Views: epoch e trains on view e % K. View k of video i is the clip the uncached run draws in epoch k (`TrainClips`
seeds every draw by (seed, epoch, index)), so with K >= train.epochs the cached run sees exactly the uncached run's
clips (only train.epochs views are computed), and with fewer it cycles through the first K. The backbone runs in
training mode for the training views, as in the uncached run (a drop path draw is frozen into each view), and in
eval mode for the monitoring views. The final multi-view test is not cached: it runs once, on clips, through the
whole model, as for every method.

Not the official protocol where the recipe re-augments every epoch (AdaptFormer draws S-TSN + multi-scale crop anew
in each of 90 epochs): K fixed views instead of 90 fresh draws, `head_bn` statistics over those views; the test
views are the same. Off by default. The features live on the run's device and are saved once to
`<out_dir>/feature_cache/features.pt`, so a resumed run (or another run of the same backbone, data, seed and K)
loads them instead of recomputing: videos x K x copies x D x 2 bytes under bf16 (copies = data.num_sample: 1 in
AdaptFormer's protocol, 2 in VideoMAE's; SSv2 ViT-B, 1 copy: 168,913 x 768 x 2 = 259 MB per view, so K = 8 holds
2.1 GB, 4.2 GB in fp32).
"""
from __future__ import annotations

import math
import pickle
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import BatchSampler
from tqdm import tqdm

from video_adapt.checkpoint import backbone_fingerprint
from video_adapt.config import Config
from video_adapt.data.datasets import labels_tensor
from video_adapt.distributed import DistState, any_rank
from video_adapt.engine.data import TrainData, batch_to_device, eval_sampler, make_loader, to_model_input
from video_adapt.engine.precision import autocast_context
from video_adapt.errors import ConfigError, TrainingError
from video_adapt.files import torch_save_atomic

CACHE_FILE = Path("feature_cache") / "features.pt"


def check_feature_cache(cfg: Config) -> None:
    """Refuse the cache where it would change what trains: only a frozen backbone's features can be cached, and
    mixup/cutmix mix clips, not features."""
    if cfg.train.feature_cache is None:
        return
    if cfg.model.tuning != "linear":
        raise ConfigError(f"train.feature_cache is for linear probing: model.tuning={cfg.model.tuning} changes the "
                          "backbone's features while it trains; set train.feature_cache=null")
    if cfg.train.mixup > 0 or cfg.train.cutmix > 0:
        raise ConfigError("train.feature_cache: mixup/cutmix mix clips, and a mix of features is not the feature of "
                          "a mix; set train.mixup=0 train.cutmix=0")


class PooledHead(nn.Module):
    """`model` after `forward_pooled`: fc_norm -> (head_bn) -> head on pooled backbone features. Its parameters are
    the model's, so what trains here is the model's head, and `model(clip)` equals `PooledHead(model)(pooled)`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.norm_pooled(pooled))


def features_to_device(features: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`evaluate`'s `inputs` for cached monitoring views: they are model input already."""
    return features.to(device, non_blocking=True)


class CachedTrainSet:
    """The training videos as cached features (K, N, S, D) with S augmented copies per view; `set_epoch(e)` picks
    view e % K, in place of a fresh draw."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels
        self.view = 0

    @property
    def views(self) -> int:
        return self.features.shape[0]

    def set_epoch(self, epoch: int) -> None:
        self.view = epoch % self.views

    def __len__(self) -> int:
        return self.features.shape[1]


class FeatureBatches:
    """The training loader of a cached run: the run's sampler (the same shuffle and rank share as the uncached run)
    cut into batches, each (features (B*S, D), labels (B*S,)) on the device, the S copies of a video adjacent as
    `batch_to_device` lays out clips."""

    def __init__(self, dataset: CachedTrainSet, sampler: Any, batch_size: int):
        self.dataset = dataset
        self.batches = BatchSampler(sampler, batch_size, drop_last=True)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        d = self.dataset
        for indices in self.batches:
            idx = torch.as_tensor(indices, device=d.features.device)
            x = d.features[d.view, idx]
            yield x.flatten(0, 1), d.labels[idx].repeat_interleave(x.shape[1], dim=0)


class FeatureViews:
    """The monitoring loader of a cached run: (features (B, V, D), labels (B,), indices (B,)) over this rank's share,
    what `evaluate` takes with `inputs=features_to_device`."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, indices: list[int], batch_size: int):
        self.features, self.labels, self.indices, self.batch_size = features, labels.cpu(), indices, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.indices), self.batch_size):
            idx = torch.as_tensor(self.indices[start:start + self.batch_size])
            yield self.features[idx.to(self.features.device)], self.labels[idx], idx


@dataclass
class CacheReport:
    """What summary.json records about a run's cache."""

    views: int  # K
    videos: int
    monitored: int  # monitoring views (one per video of the monitored split)
    dtype: str
    bytes: int
    seconds: float  # computing (or loading) them
    reused: bool  # loaded from an earlier run's feature_cache/features.pt

    def line(self) -> str:
        how = "loaded" if self.reused else "computed"
        return (f"feature cache: {self.views} views of {self.videos} training videos and {self.monitored} monitoring "
                f"views, {self.bytes / 2**20:.1f} MiB ({self.dtype}), {how} in {self.seconds:.1f} s")


def _share(n: int, dist: DistState) -> list[int]:
    """This rank's videos (every world_size-th), padded to ceil(n / world) so every rank gathers one size."""
    mine = list(range(dist.rank, n, dist.world_size))
    length = math.ceil(n / dist.world_size)
    return mine + [mine[-1] if mine else 0] * (length - len(mine))


def _gather(part: torch.Tensor, n: int, dist: DistState) -> torch.Tensor:
    """Every rank's share of features back in video order, on every rank (byte views: any backend, any dtype)."""
    if not dist.enabled:
        return part
    import torch.distributed as tdist
    raw = part.contiguous().view(torch.uint8)
    parts = [torch.empty_like(raw) for _ in range(dist.world_size)]
    tdist.all_gather(parts, raw)
    out = torch.empty((n, *part.shape[1:]), dtype=part.dtype, device=part.device)
    for rank, got in enumerate(parts):
        rows = list(range(rank, n, dist.world_size))
        out[rows] = got.view(part.dtype)[:len(rows)]
    return out


@torch.no_grad()
def _pooled(model: nn.Module, loader: Any, device: torch.device, amp: torch.dtype | None, *, train_views: bool,
            desc: str, show: bool) -> torch.Tensor:
    """Pooled features (n, copies, D) of the loader's videos in its order: training batches (clips, labels, boxes)
    or encoded clips, or monitoring batches (views, label, index)."""
    model.train(train_views)
    out = []
    for batch in tqdm(loader, desc=desc, disable=not show, leave=False):
        if train_views:
            x, _ = batch_to_device(batch, device)
            videos = len(batch[1])
        else:
            views = batch[0]
            videos = views.shape[0]
            x = to_model_input(views.flatten(0, 1), device)
        with autocast_context(device, amp):
            pooled = model.forward_pooled(x)
        out.append(pooled.view(videos, -1, pooled.shape[-1]))
    return torch.cat(out)


def _compute(model: nn.Module, data: TrainData, cfg: Config, dist: DistState,
             amp: torch.dtype | None) -> dict[str, torch.Tensor | None]:
    """Every rank computes its share of the videos, then all ranks gather all of them. The caching draws from a
    forked RNG, so training continues from the same RNG state whether the cache was computed or loaded."""
    device, d = dist.device, cfg.data
    k = min(cfg.train.feature_cache, cfg.train.epochs)  # views past the last epoch would never train
    train_set = data.train_set
    n = len(train_set)
    share = _share(n, dist)
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        views = []
        for view in range(k):
            train_set.set_epoch(view)  # view k is the clip the uncached run draws in epoch k
            loader = make_loader(train_set, d.batch_size, share, d.num_workers, device, drop_last=False)
            views.append(_gather(_pooled(model, loader, device, amp, train_views=True, desc=f"caching view {view}",
                                         show=dist.is_main), n,
                                 dist))
        train_set.set_epoch(0)
        monitor = None
        if data.val_loader is not None:
            val_set = data.val_loader.dataset
            loader = make_loader(val_set, d.batch_size, _share(len(val_set), dist), d.num_workers, device,
                                 drop_last=False)
            monitor = _gather(_pooled(model, loader, device, amp, train_views=False, desc="caching monitoring views",
                                     show=dist.is_main),
                              len(val_set), dist)
    return {"train": torch.stack(views), "monitor": monitor}


def cache_key(model: nn.Module, cfg: Config, amp: torch.dtype | None, videos: list[int]) -> dict[str, Any]:
    """What the cached features depend on: the frozen backbone, the model and data settings, the seed, K, the
    dtype and the video counts. A saved cache is used only under the same key."""
    data = {key: value for key, value in asdict(cfg.data).items() if key not in ("batch_size", "num_workers")}
    model_cfg = {key: value for key, value in asdict(cfg.model).items() if key != "pretrained"}
    return {"backbone": backbone_fingerprint(model), "model": model_cfg, "data": data, "seed": cfg.train.seed,
            "views": cfg.train.feature_cache, "dtype": str(amp), "videos": videos}


def _load(path: Path, key: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor | None] | None:
    """The saved features if they were made under `key`, else None (then they are computed again)."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError):  # unreadable: recomputed, not trusted
        return None
    if not isinstance(saved, dict) or saved.get("key") != key:
        return None
    return {name: saved[name].to(device) if saved.get(name) is not None else None for name in ("train", "monitor")}


def cache_features(model: nn.Module, data: TrainData, cfg: Config, dist: DistState, amp: torch.dtype | None,
                   out_dir: Path) -> tuple[TrainData, CacheReport]:
    """The run's training and monitoring data as cached features, with the same sampler and shares as `data`:
    loaded from `<out_dir>/feature_cache/features.pt` when made under the same key, else computed on the device
    with the run's AMP and saved by rank 0."""
    start = time.perf_counter()
    path = out_dir / CACHE_FILE
    counts = [len(data.train_set), len(data.val_loader.dataset) if data.val_loader is not None else 0]
    key = cache_key(model, cfg, amp, counts)
    features = _load(path, key, dist.device)
    reused = not any_rank(features is None, dist)
    if not reused:
        features = _compute(model, data, cfg, dist, amp)
        if dist.is_main:
            torch_save_atomic({"key": key, **{name: t.cpu() if t is not None else None
                                              for name, t in features.items()}}, path)
    train, monitor = features["train"], features["monitor"]
    if not torch.isfinite(train).all():
        raise TrainingError(f"non-finite backbone features in the cache ({path}); check model.pretrained")
    labels = labels_tensor(data.train_set.labels).to(dist.device)
    train_set = CachedTrainSet(train, labels)
    loader = FeatureBatches(train_set, data.sampler, cfg.data.batch_size)
    val_loader = None
    if monitor is not None:
        val_set = data.val_loader.dataset
        indices = list(eval_sampler(val_set, dist) or range(len(val_set)))
        val_loader = FeatureViews(monitor, labels_tensor(val_set.labels), indices, cfg.data.batch_size)
    size = sum(t.numel() * t.element_size() for t in (train, monitor) if t is not None)
    report = CacheReport(views=train.shape[0], videos=counts[0], monitored=counts[1],
                         dtype=str(train.dtype).removeprefix("torch."), bytes=size,
                         seconds=time.perf_counter() - start, reused=reused)
    return replace(data, train_set=train_set, loader=loader, val_loader=val_loader), report
