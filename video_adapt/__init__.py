"""video_adapt: parameter-efficient fine-tuning of VideoMAE video transformers.

    from video_adapt import create_model, load_pretrained
    model = create_model("vit_base_patch16_224", num_classes=174, num_frames=8, tuning="adaptformer")
    load_pretrained(model, "videomae_pretrain.pth")

The names below load on first use (PEP 562), so `import video_adapt` and every command's `--help` start without
importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "video_adapt.models.factory",
    "load_pretrained": "video_adapt.checkpoint",
    "save_adapters": "video_adapt.checkpoint",
    "load_adapters": "video_adapt.checkpoint",
    "save_model": "video_adapt.checkpoint",
    "load_model": "video_adapt.checkpoint",
    "CheckpointError": "video_adapt.errors",
    "ConfigError": "video_adapt.errors",
    "VideoAdaptError": "video_adapt.errors",
    "predict": "video_adapt.inference",
    "merge_lora": "video_adapt.models.tuning",
    "parameter_report": "video_adapt.models.tuning",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'video_adapt' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
