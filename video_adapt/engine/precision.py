"""Mixed precision: which autocast dtype a run uses, its context, and the gradient scaler fp16 needs.

fp16 has too few exponent bits for small gradients, so wherever fp16 autocast runs a `GradScaler` scales the loss
(bf16 has fp32's range and needs none). `Precision` keeps the two together, so no loop can use one without the other.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn


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


@dataclass
class Precision:
    """The autocast dtype of a run and, for fp16, its gradient scaler."""

    device: torch.device
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def create(cls, device: torch.device, amp: str) -> "Precision":
        dtype = autocast_dtype(device, amp)
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        return cls(device, dtype, scaler)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context(self.device, self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter],
             clip_grad: float | None = None) -> None:
        """Unscale (fp16), clip the gradient norm of `params` (if asked), and step the optimizer."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if clip_grad:
            nn.utils.clip_grad_norm_(params, clip_grad)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
