"""From a `Config` to batches on the device: the data's facts, the resolved protocol, datasets, samplers, loaders.

The data protocol (`recipes.DATA_PROTOCOLS`) is resolved once per run from the recipe, the dataset kind and what
the config sets explicitly; the resolved values are what the run's config.yaml records, so a test or an inference
later uses the views the model was trained for. Clips travel as uint8 (or still-encoded JPEG, decoded in one batch
on the device) and become normalised floats on the device, where random erasing fills its boxes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from video_adapt.config import Config, DataConfig
from video_adapt.data.protocol import DataProtocol
from video_adapt.distributed import DistState
from video_adapt.errors import ConfigError


@dataclass
class DataFacts:
    """What the data says about itself: class names, the dataset kind, whether flips keep the labels, whether a video
    has a set of labels."""

    classes: list[str]
    dataset: str
    flip_allowed: bool
    multilabel: bool = False


def _store_root(d: DataConfig) -> str:
    if not d.root:
        raise ConfigError("config key 'data.root' is empty: point it at a frame store made by data_prep "
                          "(or set data.source=videos and data.train_list)")
    if not Path(d.root).is_dir():
        raise ConfigError(f"data.root={d.root}: no such directory (prepare data with video-adapt prep <name>)")
    return d.root


def _video_list(d: DataConfig, which: str, classes: list[str] | None):
    """(classes, entries) of a list file or class-folder tree named by data.<which>_list."""
    from video_adapt.data.listing import read_list, scan_class_folders
    from video_adapt.data.prepare import PrepError
    path = getattr(d, f"{which}_list")
    if not path:
        raise ConfigError(f"data.source=videos needs data.{which}_list (a 'path label' list file or class folders)")
    try:
        if Path(path).is_dir():
            if d.multilabel:
                raise ConfigError(f"data.{which}_list={path}: class folders give each video one label; "
                                  "data.multilabel=true needs list files (path l1 l2 ...)")
            return scan_class_folders(Path(path), classes)
        return read_list(Path(path), Path(d.root or "."), classes, bool(d.multilabel))
    except PrepError as err:
        raise ConfigError(f"data.{which}_list: {err}") from None


def open_source(cfg: Config, split: str, which: str = "train"):
    """The `VideoSource` of a split: a frame store's split, or (data.source=videos) the list named by
    data.<which>_list, decoded on the fly."""
    from video_adapt.data.datasets import FileSource, StoreSource
    d = cfg.data
    if d.source == "store":
        return StoreSource(_store_root(d), split, cache_mb=d.cache_mb)
    classes, _ = _video_list(d, "train", None)
    _, entries = _video_list(d, which, classes)
    entries = [e for e in entries if not e.error]
    return FileSource([e.path for e in entries], [e.label for e in entries], classes, [e.id for e in entries],
                      flip_allowed=d.flip is not False, dataset=d.dataset or "other", multilabel=bool(d.multilabel))


def data_facts(cfg: Config) -> DataFacts:
    """Classes, dataset kind and flip permission of the configured data, read before anything is built."""
    from video_adapt.data.store import FrameStore
    d = cfg.data
    if d.source == "store":
        store = FrameStore(_store_root(d))
        if d.multilabel is not None and d.multilabel != store.meta.multilabel:
            kind = "holds a set of labels per video" if store.meta.multilabel else "holds one label per video"
            raise ConfigError(f"data.multilabel={str(d.multilabel).lower()} but the store {d.root} {kind}; leave "
                              "data.multilabel unset to take the store's")
        return DataFacts(store.classes, d.dataset or store.meta.dataset, store.meta.flip, store.meta.multilabel)
    classes, _ = _video_list(d, "train", None)
    return DataFacts(classes, d.dataset or "other", True, bool(d.multilabel))


def resolve_data(cfg: Config, facts: DataFacts) -> Config:
    """The config with every data-protocol field filled (recipes.apply_data_protocol); stops if the data's kind has
    recipe values the config did not pick (recipes.check_recipe_dataset)."""
    from video_adapt.recipes import apply_data_protocol, check_recipe_dataset
    check_recipe_dataset(cfg.train.recipe, cfg.data.dataset, facts.dataset)
    data = apply_data_protocol(cfg.data, facts.dataset, facts.flip_allowed)
    return replace(cfg, data=replace(data, multilabel=facts.multilabel))


def eval_dataset(cfg: Config, split: str, crops: int | None = None) -> Dataset:
    """Every test view of every video of `split`, by the run's (resolved) protocol (`crops` replaces its crops)."""
    from video_adapt.data.datasets import EvalClips
    protocol = DataProtocol.from_config(cfg.data).with_crops(crops)
    return EvalClips(open_source(cfg, split, "test" if split == cfg.data.test_split else "val"), protocol.eval_view())


def eval_loader(cfg: Config, split: str, device: torch.device, dist_state: DistState | None = None, *,
                crops: int | None = None, batch_size: int | None = None, workers: int | None = None) -> DataLoader:
    """The multi-view test's loader of `split`: every view of each video in one item, the videos shared over the
    ranks (`evaluate` drops the padding); `batch_size` in videos (default: the training batch's clips' worth)."""
    dataset = eval_dataset(cfg, split, crops)
    videos = batch_size or max(1, cfg.data.batch_size // dataset.views_per_video)
    sampler = eval_sampler(dataset, dist_state) if dist_state is not None else None
    return make_loader(dataset, videos, sampler, cfg.data.num_workers if workers is None else workers, device,
                       drop_last=False)


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset | None]:
    """The training set and the per-epoch monitoring set (one VAL-EPOCH view per video), from a resolved config."""
    from video_adapt.data.datasets import MonitorClips, TrainClips
    d = cfg.data
    train_source = open_source(cfg, d.train_split, "train")
    view = DataProtocol.from_config(d).train_view()
    batch_decode = (d.gpu_decode and torch.cuda.is_available() and cfg.device != "cpu"
                    and train_source.codec == "jpeg" and not view.randaugment and view.num_sample == 1)
    train = TrainClips(train_source, view, seed=cfg.train.seed, decode="batch" if batch_decode else "worker")
    monitor = None
    if d.val_split:
        monitor = MonitorClips(open_source(cfg, d.val_split, "val"), view, seed=cfg.train.seed)
    return train, monitor


def epoch_updates(cfg: Config, videos: int, world_size: int) -> int:
    """The optimizer updates of one epoch, as the recipe's official loop counts them (engine/epochs.py)."""
    from video_adapt.engine.epochs import epoch_sampler_world, updates_per_epoch
    t = cfg.train
    global_batch = cfg.data.batch_size * world_size * t.accum_steps
    return updates_per_epoch(videos, global_batch, epoch_sampler_world(t.sampler_world, t.global_batch, world_size))


def train_sampler(dataset: Dataset, cfg: Config, dist_state: DistState) -> DistributedSampler:
    """The epoch's videos: exactly its updates' worth (`epoch_updates` x global batch), padded or cut as the
    official sampler and loop do. One sampler for 1 or N processes, so that N processes see exactly the single
    process's batches; repeated augmentation is VideoMAE's num_sample copies inside each item, not a repeating
    sampler."""
    from video_adapt.engine.epochs import EpochSampler
    updates = epoch_updates(cfg, len(dataset), dist_state.world_size)
    global_batch = cfg.data.batch_size * dist_state.world_size * cfg.train.accum_steps
    return EpochSampler(dataset, num_replicas=dist_state.world_size, rank=dist_state.rank, seed=cfg.train.seed,
                        total=updates * global_batch)


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
    """The training set with its sampler and loader, and the per-epoch monitoring loader (None without one)."""

    train_set: Dataset
    sampler: Any
    loader: DataLoader
    val_loader: DataLoader | None


def build_loaders(cfg: Config, dist_state: DistState) -> TrainData:
    """Datasets, samplers and loaders of a run; fails if an epoch would not fill one optimizer update."""
    device = dist_state.device
    train_set, val_set = build_datasets(cfg)
    if epoch_updates(cfg, len(train_set), dist_state.world_size) < 1:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} x {dist_state.world_size} process(es) x "
                          f"{cfg.train.accum_steps} accumulation steps needs more than the {len(train_set)} "
                          "training videos for one update per epoch")
    sampler = train_sampler(train_set, cfg, dist_state)
    loader = make_loader(train_set, cfg.data.batch_size, sampler, cfg.data.num_workers, device, drop_last=True)
    val_loader = None
    if val_set is not None and len(val_set):
        val_loader = make_loader(val_set, cfg.data.batch_size, eval_sampler(val_set, dist_state),
                                 cfg.data.num_workers, device, drop_last=False)
    return TrainData(train_set, sampler, loader, val_loader)


def batch_to_device(batch: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch -> (normalised clips (B*S, 3, T, H, W) with random erasing applied, labels (B*S,) or
    multi-hot targets (B*S, C)).

    The S augmented copies of each video (repeated augmentation) become neighbours in the batch, as VideoMAE's
    collate flattens them (VM:run_class_finetuning.py:258-270)."""
    from video_adapt.data.datasets import decode_batch, normalize_and_erase
    if isinstance(batch[0], list):  # still-encoded clips: one batched decode on the device
        clips, boxes = decode_batch(batch[0], device)
        labels = batch[1]
    else:
        clips, labels, boxes = batch
    copies = clips.shape[1]
    x = normalize_and_erase(clips.flatten(0, 1), boxes.flatten(0, 1), device)
    y = labels.repeat_interleave(copies, dim=0).to(device, non_blocking=True)  # (B*S,) or multi-hot (B*S, C)
    return x, y


def to_model_input(clips: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 clips (B, 3, T, H, W) -> normalised floats on the device (test and monitoring views)."""
    from video_adapt.data.transforms import normalize_clips
    return normalize_clips(clips.to(device, non_blocking=True))
