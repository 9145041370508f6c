"""Training checkpoints: written atomically, read back with one-line errors, found again on resume.

A state is a dict of tensors and plain values (`torch.load(weights_only=True)` reads it): the `Updater`'s
optimizer, schedule, scaler, step and RNG state, plus what each loop adds (fine-tuning: the tuned weights and the
backbone's fingerprint; pretraining: the whole model and its data order).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from video_adapt.checkpoint import backbone_fingerprint
from video_adapt.engine.optim import Updater
from video_adapt.errors import ConfigError, TrainingError
from video_adapt.files import torch_save_atomic
from video_adapt.models.tuning import tuned_state_dict

CHECKPOINT_NAME = "last.pt"


def check_finite_weights(model: nn.Module) -> None:
    bad = [n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
    if bad:
        raise TrainingError(f"non-finite values in {len(bad)} weights (e.g. {bad[0]}); not saving them. "
                            "Lower the learning rate or enable gradient clipping (train.clip_grad)")


def find_resume(resume: str | None, latest: Path) -> Path | None:
    """The state to resume from: None (start fresh), "auto" (`latest` if it exists), or a path that must exist."""
    if not resume:
        return None
    if resume == "auto":
        return latest if latest.exists() else None
    path = Path(resume)
    if not path.exists():
        raise ConfigError(f"resume={resume}: no such checkpoint")
    return path


def save_state(state: dict[str, Any], path: Path) -> Path:
    return torch_save_atomic(state, path)


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise TrainingError(f"{path}: not a readable training state ({str(err).splitlines()[0][:160]})") from None


def restore(updater: Updater, state: dict[str, Any], path: Path) -> None:
    """Put the optimizer, schedule, scaler and RNG state of `state` back, or say why it does not fit."""
    try:
        updater.load_state_dict(state)
    except (KeyError, ValueError) as err:
        raise TrainingError(f"{path}: its optimizer state does not fit this run ({err}); start again without "
                            "resuming") from None


def save_training_state(path: Path, model: nn.Module, updater: Updater, **progress: Any) -> None:
    """Everything a fine-tuning run needs to continue bit-exactly; the frozen backbone is referenced by
    fingerprint only. `progress`: epoch, best_top1, config."""
    check_finite_weights(model)
    full = model.tuning.method == "full"
    state = {
        "weights": {k: v.detach().cpu() for k, v in (model.state_dict() if full else tuned_state_dict(model)).items()},
        "backbone_fingerprint": None if full else backbone_fingerprint(model),
        **updater.state_dict(),
        **progress,
    }
    save_state(state, path)


def load_training_state(path: Path, model: nn.Module, updater: Updater) -> dict[str, Any]:
    """Load a fine-tuning state into `model` and `updater`; returns it (epoch, best_top1 ...)."""
    state = load_state(path)
    expected = state.get("backbone_fingerprint")
    if expected and expected != backbone_fingerprint(model):
        raise TrainingError(f"{path}: checkpoint was trained on another backbone than model.pretrained; "
                            "resume with the same pretrained weights")
    missing, unexpected = model.load_state_dict(state["weights"], strict=False)
    if unexpected:
        raise TrainingError(f"{path}: checkpoint tensors do not fit the model (e.g. {unexpected[0]})")
    restore(updater, state, path)
    return state
