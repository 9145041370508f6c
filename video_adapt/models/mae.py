"""The VideoMAE masked autoencoder (the model; its training loop is video_adapt.pretraining): tube masking,
an asymmetric encoder/decoder and the normalised-pixel loss.

The encoder is our `VisionTransformer` (num_classes=0, final `norm` as in the official encoder) and sees only
the visible tubelets; the decoder sees every position (encoded visible tokens + mask tokens, fixed sinusoid
positions) and predicts the pixels of the masked tubelets. Parameter names are the official ones
(`encoder.*`, `decoder.blocks.N.*`, `decoder.norm`, `decoder.head`, `encoder_to_decoder`, `mask_token`), so
`save_pretrain_checkpoint` writes a file that `load_pretrained` (and VideoMAE's own code) reads.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import trunc_normal_
from torch import nn

from video_adapt.files import torch_save_atomic
from video_adapt.imagenet import IMAGENET_MEAN, IMAGENET_STD
from video_adapt.models.vit import (Block, VisionTransformer, init_linear_and_norm, sinusoid_position_table,
                                    vit_config)


def tube_mask(batch: int, grid: tuple[int, int, int], ratio: float, generator: torch.Generator | None = None,
              device: torch.device | None = None) -> torch.Tensor:
    """bool (B, N), True = masked. The same spatial positions are masked in every temporal slice (VideoMAE)."""
    t, h, w = grid
    per_slice = h * w
    num_masked = int(round(ratio * per_slice))
    if not 0 <= num_masked < per_slice:
        raise ValueError(f"mask ratio {ratio} leaves no visible patch in a {h}x{w} grid")
    noise = torch.rand(batch, per_slice, generator=generator)
    masked_ids = noise.argsort(dim=1)[:, :num_masked]
    spatial = torch.zeros(batch, per_slice, dtype=torch.bool)
    spatial.scatter_(1, masked_ids, True)
    return spatial.repeat(1, t).to(device) if device is not None else spatial.repeat(1, t)


def patchify(videos: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B, N, tubelet * patch * patch, 3), tokens in the encoder's t-major order."""
    return rearrange(videos, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=tubelet, p1=patch, p2=patch)


def pixel_targets(clips: torch.Tensor, tubelet: int, patch: int, norm_pix: bool = True) -> torch.Tensor:
    """Regression targets from ImageNet-normalised clips: per-tubelet normalised pixels (VideoMAE), flattened."""
    mean = torch.tensor(IMAGENET_MEAN, device=clips.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=clips.device).view(1, 3, 1, 1, 1)
    pixels = patchify(clips.float() * std + mean, tubelet, patch)
    if norm_pix:
        pixels = (pixels - pixels.mean(dim=-2, keepdim=True)) / (pixels.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return pixels.flatten(2)


def _xavier_init(m: nn.Module) -> None:
    init_linear_and_norm(m, nn.init.xavier_uniform_)


class PretrainVideoMAE(nn.Module):
    """Masked autoencoder over tubelets; `forward(clips, mask)` returns the loss on masked tubelets."""

    def __init__(self, encoder_name: str = "vit_base_patch16_224", decoder_dim: int = 384, decoder_depth: int = 4,
                 decoder_heads: int = 6, norm_pix_loss: bool = True, **encoder_overrides: Any):
        super().__init__()
        cfg = vit_config(encoder_name, num_classes=0, use_mean_pooling=False, **encoder_overrides)
        self.encoder = VisionTransformer(cfg)
        self.encoder_name = encoder_name
        self.encoder_overrides = dict(encoder_overrides)
        self.tubelet, self.patch = cfg.tubelet_size, cfg.patch_size
        self.norm_pix_loss = norm_pix_loss
        out_dim = 3 * cfg.tubelet_size * cfg.patch_size ** 2
        dec_cfg = replace(cfg, embed_dim=decoder_dim, depth=decoder_depth, num_heads=decoder_heads,
                          drop_path_rate=0.0, init_values=0.0)
        self.encoder_to_decoder = nn.Linear(cfg.embed_dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder = nn.Module()
        self.decoder.blocks = nn.ModuleList([Block(dec_cfg, 0.0) for _ in range(decoder_depth)])
        self.decoder.norm = nn.LayerNorm(decoder_dim, eps=cfg.norm_eps)
        self.decoder.head = nn.Linear(decoder_dim, out_dim)
        # VideoMAE's pretraining init (VM:modeling_pretrain.py:65-72, 137, 246-252): every Linear of the encoder and
        # decoder Xavier-uniform with zero bias, LayerNorm ones/zeros; the mask token trunc-normal(0.02) clipped at
        # +-0.02 (VM:modeling_pretrain.py:14-15); the tubelet Conv3d and encoder_to_decoder keep PyTorch's default
        self.encoder.apply(_xavier_init)
        self.decoder.apply(_xavier_init)
        trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)

    def no_weight_decay(self) -> set[str]:
        """Names kept out of weight decay besides 1-D tensors and biases (VM:modeling_pretrain.py:268-269);
        timm's optimizer factory reads this method."""
        return {"mask_token"}

    def grid(self, clips: torch.Tensor) -> tuple[int, int, int]:
        return self.encoder.patch_embed.grid(*clips.shape[2:])

    def forward(self, clips: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b = clips.shape[0]
        tokens = self.encoder.embed(clips)
        d = tokens.shape[-1]
        visible = tokens[~mask].reshape(b, -1, d)
        encoded = self.encoder.forward_tokens(visible)
        x = self.encoder_to_decoder(encoded)
        dec_dim = x.shape[-1]
        pos = sinusoid_position_table(mask.shape[1], dec_dim).to(x.device, x.dtype).expand(b, -1, -1)
        pos_visible = pos[~mask].reshape(b, -1, dec_dim)
        pos_masked = pos[mask].reshape(b, -1, dec_dim)
        x = torch.cat([x + pos_visible, self.mask_token.to(x.dtype) + pos_masked], dim=1)
        for block in self.decoder.blocks:
            x = block(x)
        num_masked = pos_masked.shape[1]
        pred = self.decoder.head(self.decoder.norm(x[:, -num_masked:]))
        target = pixel_targets(clips, self.tubelet, self.patch, self.norm_pix_loss)[mask].reshape(b, num_masked, -1)
        return F.mse_loss(pred.float(), target)


def save_pretrain_checkpoint(model: PretrainVideoMAE, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """`{"model": state_dict}` in the official VideoMAE pretrain layout, written atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return torch_save_atomic({"model": state, **(extra or {})}, path)
