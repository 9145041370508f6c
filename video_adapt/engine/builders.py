"""What a fine-tuning `Config` builds: the model with its pretrained backbone, the optimizer and LR schedule, the
loss (with mixup/cutmix when asked)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from video_adapt.checkpoint import LoadReport, load_pretrained
from video_adapt.config import Config
from video_adapt.engine.optim import create_optimizer
from video_adapt.errors import ConfigError
from video_adapt.models.factory import create_model
from video_adapt.models.memory import counted_step_bytes
from video_adapt.models.methods import TUNING_OPTIONS, method_spec
from video_adapt.schedules import LRSchedule


RANDOM_BACKBONE = "none"  # model.pretrained=none: a random backbone on purpose (a control run)


def check_backbone(cfg: Config) -> None:
    """A frozen-backbone method needs its pretrained weights: without them it silently trains adapters on noise,
    which is what the reference code does when a checkpoint's keys do not match."""
    pretrained = cfg.model.pretrained
    if pretrained is None and method_spec(cfg.model.tuning).frozen_backbone:
        raise ConfigError(f"model.pretrained is not set: {cfg.model.tuning} keeps the backbone frozen, so it needs "
                          "pretrained weights; give a checkpoint, or model.pretrained=none for a random-backbone control")


def build_model(cfg: Config, num_classes: int) -> tuple[nn.Module, LoadReport | None]:
    """The configured model with its pretrained backbone loaded (None report for a random backbone)."""
    m = cfg.model
    # a fixed seed for the initialisation: a random-backbone control can be rebuilt exactly for testing
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        try:
            options = {key: getattr(m, key) for key in TUNING_OPTIONS}  # every tuning option has a model config field
            model = create_model(
                m.name, num_classes=num_classes, num_frames=cfg.data.num_frames, img_size=cfg.data.img_size,
                tuning=m.tuning, **options, head_bn=m.head_bn, head_init_std=m.head_init_std,
                init_scale=m.head_init_scale, drop_path_rate=m.drop_path_rate, head_dropout=m.head_dropout,
                use_checkpoint=m.use_checkpoint,
                **m.arch,
            )
        except ValueError as err:  # an option the model code refuses (e.g. model.arch, model.adapter_layers)
            raise ConfigError(f"config section 'model' does not build: {err}") from None
    report = load_pretrained(model, m.pretrained) if m.pretrained and m.pretrained != RANDOM_BACKBONE else None
    return model, report


def counted_step_memory(model: nn.Module, cfg: Config, amp: torch.dtype | None) -> int:
    """What one training micro-batch of this run holds at the start of its backward: weights and buffers, a gradient
    and two optimizer moments per trained tensor, the input and every tensor autograd saves
    (`models.memory.counted_step_bytes`). Counted by sizes, not by an allocator, so it is the same number on any
    machine and any kernels, and methods compare where a process's peak RSS is mostly the framework itself. One
    forward of the run's own model on random clips; its random streams and buffers (BatchNorm statistics) are
    put back as they were, so the run trains exactly as without it."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        with torch.random.fork_rng(devices=[]):
            d = cfg.data
            device = next(model.parameters()).device
            clips = torch.randn(d.batch_size * (d.num_sample or 1), 3, d.num_frames, d.img_size, d.img_size,
                                device=device)
            return counted_step_bytes(model, clips, amp)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])


def learning_rate(cfg: Config, global_batch: int) -> float:
    """The peak lr: `train.lr` as given, else base_lr x global batch / 256 (AF:main_video.py:358-361;
    VM:run_class_finetuning.py:404-406). The global batch counts videos, not their augmented copies."""
    return cfg.train.lr if cfg.train.lr is not None else cfg.train.base_lr * global_batch / 256


def build_optimizer(model: nn.Module, cfg: Config, lr: float) -> torch.optim.Optimizer:
    t = cfg.train
    return create_optimizer(model, t.optimizer, lr, t.weight_decay, momentum=t.momentum, layer_decay=t.layer_decay,
                            betas=tuple(t.betas) if t.optimizer == "adamw" else None)


def build_schedule(cfg: Config, peak: float, global_batch: int, steps_per_epoch: int) -> LRSchedule:
    """The recipe's schedule over the epoch's updates (`engine.epochs.updates_per_epoch`, what the loader runs).
    VideoMAE's step table has floor(N_train / global batch) steps per epoch (VM:run_class_finetuning.py:404-405),
    which is its recipe's epoch, and scales min_lr like the peak (VM:run_class_finetuning.py:407); AdaptFormer's
    depends only on the fractional epoch."""
    t = cfg.train
    min_lr = t.min_lr * global_batch / 256 if t.scale_min_lr else t.min_lr
    return LRSchedule(t.schedule, peak, min_lr, t.epochs, t.warmup_epochs, steps_per_epoch)


class VideoMixup:
    """timm's Mixup/CutMix on clips: frames are folded into channels so the CutMix box spans all frames.

    Multi-label targets (B, C) are mixed with the weights the clips were mixed with: timm is handed the batch's own
    positions as labels, and its mixed one-hot targets of them, (B, B), are exactly those weights. Label smoothing
    there is per class, toward 1/2 (the binary analogue of timm's smoothing toward 1/C)."""

    def __init__(self, mixup: float, cutmix: float, label_smoothing: float, num_classes: int, multilabel: bool = False):
        from timm.data import Mixup
        self.multilabel, self.label_smoothing = multilabel, label_smoothing
        self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.0 if multilabel else label_smoothing,
                           num_classes=num_classes)

    def __call__(self, clips: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, t, h, w = clips.shape
        if not self.multilabel:
            mixed, targets = self.mixup(clips.reshape(b, c * t, h, w), labels)
            return mixed.reshape(b, c, t, h, w), targets
        self.mixup.num_classes = b
        mixed, weights = self.mixup(clips.reshape(b, c * t, h, w), torch.arange(b, device=clips.device))
        return mixed.reshape(b, c, t, h, w), smooth_multilabel(weights @ labels.float(), self.label_smoothing)


def smooth_multilabel(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Multi-hot targets smoothed per class toward 1/2: 1 -> 1 - s/2, 0 -> s/2."""
    return targets * (1 - smoothing) + smoothing / 2 if smoothing else targets


class MultiLabelLoss(nn.Module):
    """Binary cross-entropy of each class's sigmoid (BCEWithLogits, mean over videos and classes), label smoothing as
    `smooth_multilabel`. Targets already smoothed by mixup pass through (`smoothed=True`)."""

    def __init__(self, label_smoothing: float = 0.0, smoothed: bool = False):
        super().__init__()
        self.label_smoothing = 0.0 if smoothed else label_smoothing
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, smooth_multilabel(targets.to(logits.dtype), self.label_smoothing))


def build_loss(cfg: Config, num_classes: int) -> tuple[VideoMixup | None, Any]:
    """(mixup or None, loss function): soft-target cross-entropy behind mixup/cutmix, else plain cross-entropy; for a
    multi-label task (`data.multilabel`, resolved from the data) binary cross-entropy per class, mixup mixing the
    multi-hot targets."""
    t, multilabel = cfg.train, bool(cfg.data.multilabel)
    mixup = VideoMixup(t.mixup, t.cutmix, t.label_smoothing, num_classes, multilabel) \
        if t.mixup > 0 or t.cutmix > 0 else None
    if multilabel:
        return mixup, MultiLabelLoss(t.label_smoothing, smoothed=mixup is not None)
    if mixup is not None:
        from timm.loss import SoftTargetCrossEntropy
        return mixup, SoftTargetCrossEntropy()
    return None, nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
