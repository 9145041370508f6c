"""The weight update both training loops share (fine-tuning in loop.py, VideoMAE pretraining in
video_adapt/pretraining.py): timm's optimizer factory, the official warmup + cosine schedules
(video_adapt/schedules.py), and `Updater`, which sets the lr, steps optimizer and precision together and saves and
restores them with the RNG state."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from video_adapt.engine.precision import Precision
from video_adapt.engine.seeding import rng_state, set_rng_state
from video_adapt.schedules import LRSchedule, apply_lr


def create_optimizer(model: nn.Module, kind: str, lr: float, weight_decay: float, *, momentum: float = 0.9,
                     layer_decay: float | None = None, betas: tuple[float, float] | None = None) -> torch.optim.Optimizer:
    """SGD with momentum (`kind="sgd"`) or AdamW, through timm's factory: frozen tensors are left out, and 1-D
    tensors, biases and the names in `model.no_weight_decay()` get no weight decay (as VideoMAE's
    optim_factory.py:49-61); optional layer-wise lr decay. AdamW is fused (one kernel) when the model is on CUDA."""
    from timm.optim import create_optimizer_v2
    kwargs: dict[str, Any] = {}
    if kind == "sgd":
        kwargs["momentum"] = momentum
    elif all(p.is_cuda for p in model.parameters() if p.requires_grad):
        kwargs["fused"] = True
    if betas is not None:
        kwargs["betas"] = betas
    return create_optimizer_v2(model, opt="momentum" if kind == "sgd" else "adamw", lr=lr, weight_decay=weight_decay,
                               layer_decay=layer_decay, **kwargs)


@dataclass
class Updater:
    """Optimizer, LR schedule and precision, stepped together; `step` counts optimizer updates.

    `begin` sets the lr of the update that starts at a micro-batch, as the official loops do before its forward;
    `update` then steps the optimizer. The schedule is a pure function of the position, so it has no state."""

    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    precision: Precision
    step: int = 0

    @property
    def lr(self) -> float:
        """The unscaled lr of the current update (groups carry it times their layer-decay `lr_scale`)."""
        group = self.optimizer.param_groups[-1]
        return group["lr"] / group.get("lr_scale", 1.0)

    def begin(self, epoch: int, micro_batch: int, micro_batches_per_epoch: int) -> None:
        apply_lr(self.optimizer, self.schedule.lr(epoch, micro_batch, micro_batches_per_epoch, self.step))

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        self.precision.backward(loss)

    def update(self, params: Iterable[nn.Parameter], clip_grad: float | None = None) -> None:
        """One optimizer step on the gradients gathered since the last one."""
        self.precision.step(self.optimizer, params, clip_grad)
        self.zero_grad()
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.precision.state_dict(), "step": self.step,
                "rng": rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.load_state_dict(state.get("scaler"))
        set_rng_state(state["rng"])
        self.step = state["step"]
