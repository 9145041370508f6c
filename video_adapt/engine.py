"""Fine-tuning and evaluation loops: AMP, DDP, gradient accumulation, exact resume, guards, logging.

`train(cfg)` runs a whole job from a `Config`; `evaluate(...)` is the multi-view test used both per
epoch and by tools/test.py. Clips travel as uint8 and become normalised floats on the device.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from video_adapt.checkpoint import (
    backbone_fingerprint,
    load_pretrained,
    save_adapters,
)
from video_adapt.config import Config, ConfigError, save_config
from video_adapt.distributed import DistState, all_gather_objects, any_rank, barrier, cleanup, init_distributed
from video_adapt.models.factory import create_model
from video_adapt.models.tuning import TUNING_OPTIONS, parameter_report, tuned_state_dict

CHECKPOINT_NAME = "last.pt"


class TrainingError(Exception):
    """Training cannot go on (non-finite loss with nonfinite=stop, NaN weights, bad resume)."""


# ----------------------------------------------------------------------------------------------- setup
def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16 (with a grad scaler); fp32 on CPU unless asked."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(_: int) -> None:
    # torch seeds each worker; numpy and random would otherwise repeat across forked workers
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_model(cfg: Config, num_classes: int) -> tuple[nn.Module, Any]:
    """The configured model with its pretrained backbone loaded (None report for a random backbone)."""
    m = cfg.model
    # a fixed seed for the initialisation: a random-backbone control can be rebuilt exactly for testing
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = _create(cfg, num_classes)
    report = load_pretrained(model, m.pretrained) if m.pretrained else None
    return model, report


def _create(cfg: Config, num_classes: int) -> nn.Module:
    m = cfg.model
    options = {key: getattr(m, key) for key in TUNING_OPTIONS}  # every tuning option has a model config field
    return create_model(
        m.name, num_classes=num_classes, num_frames=cfg.data.num_frames, img_size=cfg.data.img_size,
        tuning=m.tuning, **options, head_bn=m.head_bn, drop_path_rate=m.drop_path_rate,
        use_checkpoint=m.use_checkpoint, **m.arch,
    )


def learning_rate(cfg: Config, global_batch: int) -> float:
    return cfg.train.lr if cfg.train.lr is not None else cfg.train.base_lr * global_batch / 256


def build_optimizer(model: nn.Module, cfg: Config, lr: float) -> torch.optim.Optimizer:
    """timm's optimizer factory: frozen tensors are skipped, no weight decay on 1-D tensors; fused AdamW on CUDA."""
    from timm.optim import create_optimizer_v2
    t = cfg.train
    kwargs: dict[str, Any] = {}
    if t.optimizer == "sgd":
        kwargs["momentum"] = t.momentum
    elif all(p.is_cuda for p in model.parameters() if p.requires_grad):
        kwargs["fused"] = True  # one kernel for the whole AdamW update on the GPU
    return create_optimizer_v2(model, opt="momentum" if t.optimizer == "sgd" else "adamw", lr=lr,
                               weight_decay=t.weight_decay, layer_decay=t.layer_decay, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int):
    from timm.scheduler import CosineLRScheduler
    t = cfg.train
    total = max(1, t.epochs * steps_per_epoch)
    return CosineLRScheduler(optimizer, t_initial=total, lr_min=t.min_lr, warmup_t=int(t.warmup_epochs * steps_per_epoch),
                             warmup_lr_init=t.warmup_lr, warmup_prefix=True, t_in_epochs=False)


class VideoMixup:
    """timm's Mixup/CutMix on clips: frames are folded into channels so the CutMix box spans all frames."""

    def __init__(self, mixup: float, cutmix: float, label_smoothing: float, num_classes: int):
        from timm.data import Mixup
        self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing,
                           num_classes=num_classes)

    def __call__(self, clips: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, t, h, w = clips.shape
        mixed, targets = self.mixup(clips.reshape(b, c * t, h, w), labels)
        return mixed.reshape(b, c, t, h, w), targets


def build_loss(cfg: Config, num_classes: int) -> tuple[VideoMixup | None, nn.Module]:
    t = cfg.train
    if t.mixup > 0 or t.cutmix > 0:
        from timm.loss import SoftTargetCrossEntropy
        return VideoMixup(t.mixup, t.cutmix, t.label_smoothing, num_classes), SoftTargetCrossEntropy()
    return None, nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)


# ----------------------------------------------------------------------------------------------- data
def open_store_meta(root: str) -> dict[str, Any]:
    from video_adapt.data.tubes import TubeStore
    if not root:
        raise ConfigError("config key 'data.root' is empty: point it at a tube store made by data_prep")
    if not Path(root).is_dir():
        raise ConfigError(f"data.root={root}: no such directory (prepare data with python -m data_prep.<name>)")
    return TubeStore(root).meta


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset | None]:
    from video_adapt.data.datasets import TubeTestDataset, TubeTrainDataset
    d = cfg.data
    from video_adapt.data.tubes import TubeStore
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


def make_loader(dataset: Dataset, batch_size: int, sampler, workers: int, device: torch.device,
                drop_last: bool) -> DataLoader:
    from video_adapt.data.datasets import collate_encoded
    collate = collate_encoded if getattr(dataset, "decode", "worker") == "batch" else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=drop_last, worker_init_fn=_seed_worker,
                      persistent_workers=False, collate_fn=collate)


def to_model_input(clips: torch.Tensor | list, device: torch.device) -> torch.Tensor:
    """uint8 clips (or still-encoded ones, decoded here in one batch) -> normalised floats on the device."""
    from video_adapt.data.datasets import decode_batch
    from video_adapt.data.transforms import normalize_clips
    if isinstance(clips, list):
        return normalize_clips(decode_batch(clips, device))
    return normalize_clips(clips.to(device, non_blocking=True))


# ----------------------------------------------------------------------------------------------- eval
@dataclass
class EvalResult:
    top1: float
    top5: float
    loss: float
    num_videos: int
    per_class: list[float] = field(default_factory=list)
    confusion: np.ndarray | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)


@torch.inference_mode()
def predict_views(model: nn.Module, loader: Iterable, device: torch.device, amp: torch.dtype | None,
                  average: str = "prob", progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-video scores averaged over views: (video indices, labels, scores (N, C) as probabilities or logits)."""
    model.eval()
    indices, labels, scores = [], [], []
    for views, label, index in tqdm(loader, desc="eval", disable=not progress, leave=False):
        b, v = views.shape[:2]
        x = to_model_input(views.flatten(0, 1), device)
        with autocast_context(device, amp):
            logits = model(x).float().view(b, v, -1)
        per_view = logits.softmax(-1) if average == "prob" else logits
        scores.append(per_view.mean(1).cpu())
        labels.append(torch.as_tensor(label))
        indices.append(torch.as_tensor(index))
    if not scores:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return torch.cat(indices).numpy(), torch.cat(labels).numpy(), torch.cat(scores).numpy()


def summarize(indices: np.ndarray, labels: np.ndarray, scores: np.ndarray, num_classes: int,
              average: str = "prob") -> EvalResult:
    """Top-1/top-5, per-class accuracy, confusion matrix and mean NLL from per-video scores."""
    if len(labels) == 0:
        return EvalResult(0.0, 0.0, float("nan"), 0)
    order = np.argsort(-scores, axis=1)
    pred = order[:, 0]
    top1 = float((pred == labels).mean() * 100)
    top5 = float((order[:, :5] == labels[:, None]).any(1).mean() * 100)
    probs = scores if average == "prob" else torch.from_numpy(scores).softmax(-1).numpy()
    loss = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = [float(confusion[c, c] / confusion[c].sum() * 100) if confusion[c].sum() else float("nan")
                 for c in range(num_classes)]
    predictions = [{"index": int(i), "label": int(l), "pred": int(p), "score": float(s[p])}
                   for i, l, p, s in zip(indices, labels, pred, scores)]
    return EvalResult(top1, top5, loss, len(labels), per_class, confusion, predictions)


def evaluate(model: nn.Module, loader: Iterable, device: torch.device, amp: torch.dtype | None,
             num_classes: int, dist_state: DistState | None = None, average: str = "prob",
             progress: bool = False) -> EvalResult:
    """Multi-view evaluation, gathered over ranks (padding duplicates removed by video index)."""
    indices, labels, scores = predict_views(model, loader, device, amp, average, progress)
    if dist_state is not None and dist_state.enabled:
        parts = all_gather_objects((indices, labels, scores), dist_state)
        merged: dict[int, tuple[int, np.ndarray]] = {}
        for idx, lab, sc in parts:
            for i, l, s in zip(idx, lab, sc):
                merged[int(i)] = (int(l), s)
        keys = sorted(merged)
        indices = np.array(keys, dtype=np.int64)
        labels = np.array([merged[k][0] for k in keys], dtype=np.int64)
        scores = np.stack([merged[k][1] for k in keys]) if keys else scores
    return summarize(indices, labels, scores, num_classes, average)


# ----------------------------------------------------------------------------------------------- checkpoints
def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def check_finite_weights(model: nn.Module) -> None:
    bad = [n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
    if bad:
        raise TrainingError(f"non-finite values in {len(bad)} weights (e.g. {bad[0]}); not saving them. "
                            "Lower the learning rate or enable gradient clipping (train.clip_grad)")


def save_training_state(path: Path, model: nn.Module, optimizer, scheduler, scaler, epoch: int, step: int,
                        best: float, cfg: Config) -> None:
    """Everything needed to continue bit-exactly; the frozen backbone is referenced by fingerprint only."""
    check_finite_weights(model)
    full = model.tuning.method == "full"
    state = {
        "weights": {k: v.detach().cpu() for k, v in (model.state_dict() if full else tuned_state_dict(model)).items()},
        "backbone_fingerprint": None if full else backbone_fingerprint(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch, "step": step, "best_top1": best,
        "rng": rng_state(),
        "config": cfg.as_dict(),
    }
    _atomic_torch_save(state, path)


def load_training_state(path: Path, model: nn.Module) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = state.get("backbone_fingerprint")
    if expected and expected != backbone_fingerprint(model):
        raise TrainingError(f"{path}: checkpoint was trained on another backbone than model.pretrained; "
                            "resume with the same pretrained weights")
    missing, unexpected = model.load_state_dict(state["weights"], strict=False)
    if unexpected:
        raise TrainingError(f"{path}: checkpoint tensors do not fit the model (e.g. {unexpected[0]})")
    return state


def find_resume(cfg: Config) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        path = Path(cfg.out_dir) / "checkpoints" / CHECKPOINT_NAME
        return path if path.exists() else None
    path = Path(cfg.resume)
    if not path.exists():
        raise ConfigError(f"resume={cfg.resume}: no such checkpoint")
    return path


# ----------------------------------------------------------------------------------------------- logging
class RunLog:
    """CSV + TensorBoard scalars on rank 0; nothing on the other ranks."""

    def __init__(self, out_dir: Path, enabled: bool):
        self.enabled = enabled
        self.csv_path = out_dir / "metrics.csv"
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional at run time
                self.writer = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def epoch_row(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        new = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------------------------- training
def check_config(cfg: Config, meta: dict[str, Any]) -> int:
    """Fail before training on a config that cannot work; returns the class count."""
    num_classes = len(meta["classes"])
    if cfg.model.num_classes is not None and cfg.model.num_classes != num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the store {cfg.data.root} has "
                          f"{num_classes} classes")
    stored = meta.get("frames") or []
    if stored and cfg.data.num_frames > max(stored):
        raise ConfigError(f"data.num_frames={cfg.data.num_frames} but the store {cfg.data.root} holds at most "
                          f"{max(stored)} frames per tube")
    if cfg.model.pretrained and not Path(cfg.model.pretrained).exists():
        raise ConfigError(f"model.pretrained={cfg.model.pretrained}: no such file or directory")
    if (cfg.train.mixup > 0 or cfg.train.cutmix > 0) and cfg.data.batch_size % 2:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} must be even with mixup/cutmix")
    return num_classes


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer, scheduler, scaler, loss_fn, mixup,
                    cfg: Config, dist_state: DistState, amp: torch.dtype | None, epoch: int, step: int,
                    log: RunLog) -> tuple[int, dict[str, float]]:
    model.train()
    device = dist_state.device
    accum = cfg.train.accum_steps
    total_loss, counted, skipped, clips_seen = 0.0, 0, 0, 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not dist_state.is_main, leave=False)
    optimizer.zero_grad(set_to_none=True)
    for i, (clips, labels) in enumerate(bar):
        x = to_model_input(clips, device)
        y = labels.to(device, non_blocking=True)
        if mixup is not None:
            x, y = mixup(x, y)
        last_micro = (i + 1) % accum == 0
        sync = contextlib.nullcontext() if (last_micro or not isinstance(model, DistributedDataParallel)) \
            else model.no_sync()
        with sync:
            with autocast_context(device, amp):
                loss = loss_fn(model(x), y)
            if any_rank(not torch.isfinite(loss).item(), dist_state):
                if cfg.train.nonfinite == "stop":
                    raise TrainingError(f"non-finite loss at epoch {epoch}, step {step}; lower train.lr, set "
                                        "train.clip_grad, or set train.nonfinite=skip")
                skipped += 1
                optimizer.zero_grad(set_to_none=True)
                continue
            scaled = loss / accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if not last_micro:
            continue
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.train.clip_grad:
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.train.clip_grad)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        scheduler.step_update(step)
        total_loss += loss.item()
        counted += 1
        clips_seen += len(clips) * dist_state.world_size * accum
        if dist_state.is_main and step % cfg.train.log_every == 0:
            lr = optimizer.param_groups[-1]["lr"]
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
            log.scalars(step, {"train/loss": loss.item(), "train/lr": lr})
    elapsed = time.perf_counter() - start
    stats = {"train_loss": total_loss / max(counted, 1), "skipped_steps": skipped,
             "clips_per_s": clips_seen / elapsed if elapsed > 0 else 0.0, "epoch_time_s": elapsed}
    if device.type == "cuda":
        stats["gpu_peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return step, stats


def train(cfg: Config) -> dict[str, Any]:
    """Run a whole fine-tuning job; returns (and writes, on rank 0) the JSON summary."""
    dist_state = init_distributed(cfg.device)
    try:
        return _train(cfg, dist_state)
    finally:
        cleanup(dist_state)


def _train(cfg: Config, dist_state: DistState) -> dict[str, Any]:
    wall_start = time.perf_counter()
    meta = open_store_meta(cfg.data.root)
    num_classes = check_config(cfg, meta)
    out_dir = Path(cfg.out_dir)
    device = dist_state.device
    seed_everything(cfg.train.seed)
    model, load_report = build_model(cfg, num_classes)
    model.to(device)
    train_set, val_set = build_datasets(cfg)
    sampler = train_sampler(train_set, cfg, dist_state)
    loader = make_loader(train_set, cfg.data.batch_size, sampler, cfg.data.num_workers, device, drop_last=True)
    if len(loader) < cfg.train.accum_steps:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} x {dist_state.world_size} process(es) leaves "
                          f"{len(loader)} batches per epoch from {len(train_set)} training clips")
    val_loader = None
    if val_set is not None and len(val_set):
        val_sampler = DistributedSampler(val_set, num_replicas=dist_state.world_size, rank=dist_state.rank,
                                         shuffle=False) if dist_state.enabled else None
        val_loader = make_loader(val_set, cfg.data.batch_size, val_sampler, cfg.data.num_workers, device, False)
    steps_per_epoch = len(loader) // cfg.train.accum_steps
    global_batch = cfg.data.batch_size * cfg.train.accum_steps * dist_state.world_size
    lr = learning_rate(cfg, global_batch)
    optimizer = build_optimizer(model, cfg, lr)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    amp = autocast_dtype(device, cfg.train.amp)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    mixup, loss_fn = build_loss(cfg, num_classes)
    params = parameter_report(model)

    start_epoch, step, best = 0, 0, -1.0
    resume_path = find_resume(cfg)
    if resume_path is not None:
        state = load_training_state(resume_path, model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, step, best = state["epoch"] + 1, state["step"], state["best_top1"]
        set_rng_state(state["rng"])
        scheduler.step_update(step)
    train_model: nn.Module = model
    if dist_state.enabled:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=False)
    if cfg.train.compile:
        train_model = torch.compile(train_model)

    if dist_state.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        print(f"[video_adapt] {cfg.model.name} / {cfg.model.tuning}: {params['trainable']:,} of "
              f"{params['total']:,} parameters train ({100 * params['trainable_ratio']:.2f}%); lr {lr:.3g}; "
              f"{len(train_set)} training clips, {steps_per_epoch} steps/epoch on {dist_state.world_size} process(es)")
        if load_report is not None:
            print(f"[video_adapt] {load_report.summary()}")
        if resume_path is not None:
            print(f"[video_adapt] resumed from {resume_path} at epoch {start_epoch}")
    if dist_state.is_main and resume_path is None:
        (out_dir / "metrics.csv").unlink(missing_ok=True)  # a fresh run does not append to an old run's rows
    log = RunLog(out_dir, dist_state.is_main)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)
    class_names = list(meta["classes"])
    result = None
    data_info = {"num_frames": cfg.data.num_frames, "img_size": cfg.data.img_size,
                 "sampling": meta.get("sampling"), "stride": meta.get("stride"), "test_clips": meta.get("test_clips"),
                 "short_side": meta.get("short_side"), "test_crops": cfg.data.test_crops}
    for epoch in range(start_epoch, cfg.train.epochs):
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        step, stats = train_one_epoch(train_model, loader, optimizer, scheduler, scaler, loss_fn, mixup, cfg,
                                      dist_state, amp, epoch, step, log)
        row: dict[str, Any] = {"epoch": epoch, "step": step, **stats, "lr": optimizer.param_groups[-1]["lr"]}
        last = epoch == cfg.train.epochs - 1
        if val_loader is not None and ((epoch + 1) % cfg.train.eval_every == 0 or last):
            result = evaluate(model, val_loader, device, amp, num_classes, dist_state)
            row.update(val_top1=result.top1, val_top5=result.top5, val_loss=result.loss)
            if dist_state.is_main and result.top1 > best:
                best = result.top1
                save_adapters(model, out_dir / "best", class_names, extra={"data": data_info, "epoch": epoch})
        if dist_state.is_main:
            log.epoch_row(row)
            log.scalars(step, {f"epoch/{k}": float(v) for k, v in row.items() if isinstance(v, (int, float))})
            save_training_state(out_dir / "checkpoints" / CHECKPOINT_NAME, model, optimizer, scheduler, scaler,
                                epoch, step, best, cfg)
            print(f"[video_adapt] epoch {epoch}: " + ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "epoch"))
        barrier(dist_state)

    summary: dict[str, Any] = {}
    if dist_state.is_main:
        check_finite_weights(model)
        final_dir = save_adapters(model, out_dir / "adapters", class_names, extra={"data": data_info})
        summary = {
            "model": cfg.model.name, "tuning": cfg.model.tuning, "pretrained": cfg.model.pretrained,
            "num_frames": cfg.data.num_frames, "epochs": cfg.train.epochs, "seed": cfg.train.seed,
            "final_top1": result.top1 if result else None, "final_top5": result.top5 if result else None,
            "best_top1": best if best >= 0 else None,
            "trainable_params": params["trainable"], "total_params": params["total"],
            "trainable_ratio": params["trainable_ratio"],
            "wall_time_s": time.perf_counter() - wall_start,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss(),
            "world_size": dist_state.world_size, "device": str(device),
            "outputs": {"adapters": str(final_dir), "best": str(out_dir / "best"),
                        "metrics": str(out_dir / "metrics.csv"), "checkpoint": str(out_dir / "checkpoints" / CHECKPOINT_NAME)},
        }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"[video_adapt] done: final top-1 {summary['final_top1']}, best {summary['best_top1']}, "
              f"{summary['wall_time_s']:.1f} s")
        for name, path in summary["outputs"].items():
            print(f"[video_adapt] {name}: {path}")
        print(f"[video_adapt] summary: {out_dir / 'summary.json'}")
    log.close()
    return summary


def _peak_rss() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ----------------------------------------------------------------------------------------------- after training
def load_run(run_dir: str | Path, which: str = "adapters", overrides: list[str] | None = None,
             force: bool = False) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild a trained model from a run directory: its config.yaml, backbone, and `which` adapters."""
    from video_adapt.checkpoint import load_adapters
    from video_adapt.config import load_config
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"{run_dir}: not a training run (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml", overrides)
    adapter_dir = run_dir / which
    from video_adapt.checkpoint import read_adapter_config
    info = read_adapter_config(adapter_dir)
    model, _ = build_model(cfg, len(info["class_names"]))
    load_adapters(model, adapter_dir, force=force)
    return model, cfg, info
