"""Architecture numbers of the VideoMAE ViTs: the `ViTConfig` dataclass and named presets. Kept apart from the
modules (vit.py) and free of torch, so commands can list and check model names without loading a framework.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ViTConfig:
    """Architecture numbers of a VideoMAE ViT. Presets below; every field can be overridden."""

    img_size: int = 224
    patch_size: int = 16
    tubelet_size: int = 2
    num_frames: int = 16
    in_chans: int = 3
    num_classes: int = 400
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    head_dropout: float = 0.0  # dropout before the head (VideoMAE's fc_drop_rate, V2's head_drop_rate)
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    init_values: float = 0.0  # layer scale; 0 disables it as in the released ViT-S/B/L/H
    use_mean_pooling: bool = True
    head_init_std: float = 0.02  # the fresh head's trunc-normal std (AdaptFormer re-draws it at 0.01) ...
    init_scale: float = 0.001  # ... times this (VideoMAE: VM:modeling_finetune.py:276-285; AdaptFormer: 1)
    norm_eps: float = 1e-6
    head_bn: bool = False  # BatchNorm1d(affine=False) before the head (MAE / AdaptFormer linear probing)
    use_checkpoint: bool = False  # activation checkpointing per block
    cos_attn: bool = False  # V2's CosAttention: cosine-similarity logits times a learned per-head scale

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # official VideoMAE sizes (patch 16, tubelet 2, 224 px, 16 frames); tiny = DeiT-Ti width
    "vit_tiny_patch16_224": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16_224": dict(embed_dim=1024, depth=24, num_heads=16),
    "vit_huge_patch16_224": dict(embed_dim=1280, depth=32, num_heads=16),
    # VideoMAE V2's giant (V2:models/modeling_finetune.py:517-529): 14 px patches, 16 x 16 tokens per frame at 224
    "vit_giant_patch14_224": dict(patch_size=14, embed_dim=1408, depth=40, num_heads=16, mlp_ratio=48 / 11),
    # small backbones for the embedded demo and the tests: 32 px, 8 px patches
    "vit_tiny_patch8_32": dict(img_size=32, patch_size=8, num_frames=8, embed_dim=64, depth=4, num_heads=4),
    "vit_nano_patch8_32": dict(img_size=32, patch_size=8, num_frames=4, embed_dim=32, depth=2, num_heads=2),
}


# short size names the benchmark commands take (--sizes base large), for the presets above
SIZE_NAMES = {"nano": "vit_nano_patch8_32", "tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224",
              "base": "vit_base_patch16_224", "large": "vit_large_patch16_224", "huge": "vit_huge_patch16_224",
              "giant": "vit_giant_patch14_224"}


def vit_config(name: str, **overrides: Any) -> ViTConfig:
    """Preset `name` with keyword overrides; unknown names and keys raise a one-line error."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(PRESETS)}")
    fields = ViTConfig.__dataclass_fields__
    unknown = sorted(k for k in overrides if k not in fields)
    if unknown:
        raise ValueError(f"unknown architecture option(s) {unknown} for {name}")
    return replace(ViTConfig(**PRESETS[name]), **overrides)
