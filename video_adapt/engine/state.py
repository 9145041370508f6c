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


def check_finite_weights(model: nn.Module, weights: dict[str, torch.Tensor] | None = None) -> None:
    """Refuse to save non-finite trained weights (`weights`: a gathered state dict, when the model is sharded)."""
    if weights is not None:
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        bad = [n for n, t in weights.items() if n in trained and not torch.isfinite(t).all()]
    else:
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


def save_training_state(path: Path, model: nn.Module, updater: Updater, *, gathered: dict[str, Any] | None = None,
                        **progress: Any) -> None:
    """Everything a fine-tuning run needs to continue bit-exactly; the frozen backbone is referenced by
    fingerprint only. `progress`: epoch, best_top1, config. `gathered`: the full weights and optimizer state of a
    sharded model (`sharding.full_state_dict` / `full_optimizer_state`), saved in the one-process layout."""
    full = model.tuning.spec.saves_backbone
    if gathered is not None:
        check_finite_weights(model, gathered["weights"])
        weights = gathered["weights"]
    else:
        check_finite_weights(model)
        weights = model.state_dict() if full else tuned_state_dict(model)
    state = {
        "weights": {k: v.detach().cpu() for k, v in weights.items()},
        "backbone_fingerprint": None if full else backbone_fingerprint(model),
        **updater.state_dict(),
        **progress,
    }
    if gathered is not None:
        state["optimizer"] = gathered["optimizer"]
    save_state(state, path)


def load_training_state(path: Path, model: nn.Module, updater: Updater, sharded: bool = False) -> dict[str, Any]:
    """Load a fine-tuning state into `model` and `updater`; returns it (epoch, best_top1 ...). A sharded model
    (FSDP) takes the one-process file: rank 0 reads it and broadcasts every shard."""
    if sharded:
        return _load_sharded(path, model, updater)
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


def _load_sharded(path: Path, model: nn.Module, updater: Updater) -> dict[str, Any]:
    import torch.distributed as dist

    from video_adapt.sharding import load_full_optimizer_state, load_full_state_dict
    state = load_state(path) if dist.get_rank() == 0 else {}
    load_full_state_dict(model, state.get("weights", {}))
    try:
        load_full_optimizer_state(model, updater.optimizer, state.get("optimizer", {}))
    except ValueError as err:
        raise TrainingError(f"{path}: its optimizer state does not fit this run ({err})") from None
    progress = [{k: v for k, v in state.items() if k not in ("weights", "optimizer")}]
    dist.broadcast_object_list(progress, src=0)
    progress = progress[0]
    updater.precision.load_state_dict(progress.get("scaler"))
    from video_adapt.engine.seeding import set_rng_state
    set_rng_state(progress["rng"])
    updater.step = progress["step"]
    return progress
