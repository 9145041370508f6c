"""Learning-rate schedules exactly as the official training loops compute them.

Both warm up linearly from 0 and follow a half cosine to `min_lr`, but at different granularities, and the
difference changes the numbers a recipe reaches:

- `epoch` (AdaptFormer, AF:util/lr_sched.py:9-21, called at AF:engine_finetune.py:48-50): before each optimizer
  step the lr is a function of the fractional epoch e = epoch + it / len(loader), with `it` the micro-batch that
  starts the step; warmup lr = peak * e / W; after it min + (peak - min) * (1 + cos(pi (e - W) / (E - W))) / 2.
- `step` (VideoMAE, VM:utils.py:385-402 `cosine_scheduler`, indexed at VM:engine_for_finetuning.py:44-54): a table
  of E * S values with S = floor(N_train / global batch); warmup = linspace(0, peak, W * S); then
  min + (peak - min) * (1 + cos(pi i / (E*S - W*S))) / 2 for i = 0 .. E*S - W*S - 1.

Every parameter group gets lr x its `lr_scale` (layer decay). Schedules are pure functions of the position, so a
resumed run needs no scheduler state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LRSchedule:
    kind: str  # "epoch" | "step"
    peak: float
    min_lr: float
    epochs: int
    warmup_epochs: float
    steps_per_epoch: int  # S: optimizer steps per epoch (the official count for "step")

    def __post_init__(self) -> None:
        if self.kind not in ("epoch", "step"):
            raise ValueError(f"unknown lr schedule {self.kind!r}; use epoch or step")
        if self.epochs < 1 or self.steps_per_epoch < 1:
            raise ValueError("a schedule needs at least one epoch and one step per epoch")

    def at_epoch(self, e: float) -> float:
        """AdaptFormer's rule at fractional epoch e."""
        w, total = self.warmup_epochs, self.epochs
        if e < w:
            return self.peak * e / w
        return self.min_lr + (self.peak - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * (e - w) / (total - w)))

    def at_step(self, step: int) -> float:
        """VideoMAE's table at global optimizer step `step` (past its end: the last value)."""
        s = self.steps_per_epoch
        warmup = int(self.warmup_epochs * s)
        total = self.epochs * s
        step = min(max(step, 0), total - 1)
        if step < warmup:  # np.linspace(0, peak, warmup)[step]
            return self.peak * step / (warmup - 1) if warmup > 1 else 0.0
        i = step - warmup
        return self.min_lr + 0.5 * (self.peak - self.min_lr) * (1 + math.cos(math.pi * i / (total - warmup)))

    def lr(self, epoch: int, micro_batch: int, micro_batches_per_epoch: int, step: int) -> float:
        """The lr for the optimizer step that starts at `micro_batch` of `epoch`, the `step`-th overall."""
        if self.kind == "epoch":
            return self.at_epoch(epoch + micro_batch / micro_batches_per_epoch)
        return self.at_step(step)


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr, scaled by its `lr_scale` (timm's layer-decay groups carry one)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
