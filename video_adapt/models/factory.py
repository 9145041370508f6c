"""`create_model`: a preset, architecture overrides and a tuning method in one call."""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from video_adapt.models.tuning import apply_tuning
from video_adapt.models.methods import TUNING_OPTIONS, TuningConfig
from video_adapt.models.vit import VisionTransformer, vit_config

TUNING_KEYS = set(TUNING_OPTIONS)


def create_model(name: str, num_classes: int = 400, num_frames: int | None = None, img_size: int | None = None,
                 tuning: str = "full", **kwargs: Any) -> VisionTransformer:
    """Build a VideoMAE ViT preset with a tuning method attached.

    Keyword arguments are architecture overrides (`embed_dim`, `depth`, `head_bn`, ...) or tuning options
    (`bottleneck`, `adapter_scale`, `vpt_tokens`, `lora_rank`, `st_kernel`, ...: the fields of `TuningConfig`).
    `model.build_args` records the call, so a checkpoint can rebuild the same model.
    """
    return _build(name, num_classes, num_frames, img_size, tuning, kwargs, backbone_device=None)


def _build(name: str, num_classes: int, num_frames: int | None, img_size: int | None, tuning: str,
           kwargs: dict[str, Any], backbone_device: str | None) -> VisionTransformer:
    tuning_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in TUNING_KEYS}
    arch = dict(kwargs, num_classes=num_classes)
    if num_frames is not None:
        arch["num_frames"] = num_frames
    if img_size is not None:
        arch["img_size"] = img_size
    with torch.device(backbone_device) if backbone_device else contextlib.nullcontext():
        model = VisionTransformer(vit_config(name, **arch))
    apply_tuning(model, TuningConfig(method=tuning, **tuning_kwargs))
    model.build_args = dict(name=name, tuning=tuning, **arch, **tuning_kwargs)
    return model


def model_from_build_args(build_args: dict[str, Any], backbone_device: str | None = None) -> VisionTransformer:
    """Rebuild a model from the `build_args` stored in a checkpoint or adapter file.

    `backbone_device="meta"` builds the ViT (backbone and head) without memory and the method's modules on the CPU:
    for a model whose backbone tensors are assigned afterwards (video_adapt.models.multitask shares one backbone)."""
    args = dict(build_args)
    name = args.pop("name")
    return _build(name, args.pop("num_classes", 400), args.pop("num_frames", None), args.pop("img_size", None),
                  args.pop("tuning", "full"), args, backbone_device=backbone_device)
