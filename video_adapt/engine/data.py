"""From a `Config` to batches on the device: the store's metadata, datasets, samplers and loaders.

Clips travel as uint8 (or still-encoded JPEG, decoded in one batch on the device) and become normalised floats
on the device (`to_model_input`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from video_adapt.config import Config
from video_adapt.distributed import DistState
from video_adapt.errors import ConfigError


def open_store_meta(root: str) -> dict[str, Any]:
    from video_adapt.data.tubes import TubeStore
    if not root:
        raise ConfigError("config key 'data.root' is empty: point it at a tube store made by data_prep")
    if not Path(root).is_dir():
        raise ConfigError(f"data.root={root}: no such directory (prepare data with python -m data_prep.<name>)")
    return TubeStore(root).meta


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset | None]:
    from video_adapt.data.datasets import TubeTestDataset, TubeTrainDataset
    from video_adapt.data.tubes import TubeStore
    d = cfg.data
    batch_decode = (d.gpu_decode and torch.cuda.is_available() and cfg.device != "cpu"
                    and TubeStore(d.root).meta.get("codec") == "jpeg")
    train = TubeTrainDataset(d.root, split=d.train_split, num_frames=d.num_frames, img_size=d.img_size,
                             flip=d.flip, scale=tuple(d.crop_scale), randaugment=d.randaugment, seed=cfg.train.seed,
                             decode="batch" if batch_decode else "worker")
    val = None
    if d.val_split:
        val = TubeTestDataset(d.root, split=d.val_split, num_frames=d.num_frames, img_size=d.img_size,
                              num_crops=d.eval_crops)
    return train, val


def train_sampler(dataset: Dataset, cfg: Config, dist_state: DistState):
    if cfg.train.repeated_aug > 1:
        from timm.data.distributed_sampler import RepeatAugSampler
        return RepeatAugSampler(dataset, num_replicas=dist_state.world_size, rank=dist_state.rank, shuffle=True,
                                num_repeats=cfg.train.repeated_aug)
    # one sampler for 1 or N processes, so that N processes see exactly the single process's batches
    return DistributedSampler(dataset, num_replicas=dist_state.world_size, rank=dist_state.rank, shuffle=True,
                              seed=cfg.train.seed, drop_last=True)


def eval_sampler(dataset: Dataset, dist_state: DistState) -> DistributedSampler | None:
    """Each rank a share of the videos (padding duplicates are dropped by `evaluate`); None in one process."""
    if not dist_state.enabled:
        return None
    return DistributedSampler(dataset, num_replicas=dist_state.world_size, rank=dist_state.rank, shuffle=False)


def make_loader(dataset: Dataset, batch_size: int, sampler, workers: int, device: torch.device,
                drop_last: bool) -> DataLoader:
    """No worker_init_fn: every random draw of a clip comes from a generator seeded by (seed, epoch, index)
    (video_adapt/data/datasets.py), and DataLoader itself seeds `random`, numpy and torch in each worker."""
    from video_adapt.data.datasets import collate_encoded
    collate = collate_encoded if getattr(dataset, "decode", "worker") == "batch" else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=drop_last, persistent_workers=False,
                      collate_fn=collate)


@dataclass
class TrainData:
    """The training set with its sampler and loader, and the per-epoch validation loader (None without one)."""

    train_set: Dataset
    sampler: Any
    loader: DataLoader
    val_loader: DataLoader | None


def build_loaders(cfg: Config, dist_state: DistState) -> TrainData:
    """Datasets, samplers and loaders of a run; fails if an epoch would not fill one optimizer update."""
    device = dist_state.device
    train_set, val_set = build_datasets(cfg)
    sampler = train_sampler(train_set, cfg, dist_state)
    loader = make_loader(train_set, cfg.data.batch_size, sampler, cfg.data.num_workers, device, drop_last=True)
    if len(loader) < cfg.train.accum_steps:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} x {dist_state.world_size} process(es) leaves "
                          f"{len(loader)} batches per epoch from {len(train_set)} training clips")
    val_loader = None
    if val_set is not None and len(val_set):
        val_loader = make_loader(val_set, cfg.data.batch_size, eval_sampler(val_set, dist_state),
                                 cfg.data.num_workers, device, drop_last=False)
    return TrainData(train_set, sampler, loader, val_loader)


def to_model_input(clips: torch.Tensor | list, device: torch.device) -> torch.Tensor:
    """uint8 clips (or still-encoded ones, decoded here in one batch) -> normalised floats on the device."""
    from video_adapt.data.datasets import decode_batch
    from video_adapt.data.transforms import normalize_clips
    if isinstance(clips, list):
        return normalize_clips(decode_batch(clips, device))
    return normalize_clips(clips.to(device, non_blocking=True))
