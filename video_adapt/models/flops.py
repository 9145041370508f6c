"""Analytic matmul FLOPs of a forward pass and of a training step, per clip, for every tuning method.

The convention of model FLOPs utilisation (MFU): only matrix products count (2 FLOPs per multiply-add); norms,
activations and softmax are left out, and so is recomputation (activation checkpointing, the flash-attention
backward). With N tokens (plus P prompts), width D, MLP width M, bottleneck r, C classes, per block:

    linear layers   2 N (3D^2 + D^2 + 2DM)      (qkv, proj, fc1, fc2; = 24 N D^2 at M = 4D)
    attention       4 N^2 D                     (Q K^T and A V)
    adapter         4 N D r                     (AdaptFormer)
    LoRA            2 N r (in + out)            (per wrapped layer of rank r: A then B; merged: nothing)
    ST-Adapter      4 N D r + 2 N r k           (per adapter; the depthwise conv has k = k_t k_h k_w taps)

The backward of a linear layer costs its forward once for the input gradient and once for the weight gradient,
and each is paid only when needed: frozen weights need no weight gradient, and no gradient flows into a block
until something trainable lies below it (AdaptFormer's first block only trains its adapter; linear probing only
its head; BitFit's patch-embedding bias makes every block pass input gradients but computes no weight gradient
below the head). The attention backward costs twice its forward (four products: dV, dP, dQ, dK).
`FlopCounterMode` agrees with these numbers exactly (tests/test_flops.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from video_adapt.models.tuning import AdaptMLP, STAdapter, lora_parts
from video_adapt.models.vit import VisionTransformer


@dataclass(frozen=True)
class StepFlops:
    """Matmul FLOPs per clip: forward, and the backward a training step needs on top."""

    forward: float
    backward: float

    @property
    def train(self) -> float:
        return self.forward + self.backward


def _trains(module: nn.Module | None) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


def _bias_trains(layer: nn.Module) -> bool:
    bias = getattr(layer, "bias", None)
    return isinstance(bias, nn.Parameter) and bias.requires_grad


def _dense(total: "_Tally", tokens: int, layer: nn.Module, needs_grad: bool, bias_trains: bool = False) -> bool:
    """A Linear (or the tubelet Conv3d, a Linear over patches), or a peft LoRA layer: base + B(A(x)) * alpha / r."""
    base, pairs = lora_parts(layer)
    fan_in = base.in_features if isinstance(base, nn.Linear) else base.weight[0].numel()
    fan_out = base.out_features if isinstance(base, nn.Linear) else base.weight.shape[0]
    out = total.linear(tokens, fan_in, fan_out, base.weight.requires_grad, needs_grad,
                       bias_trains or _bias_trains(base))
    for a, b in pairs:
        down = total.linear(tokens, a.in_features, a.out_features, a.weight.requires_grad, needs_grad)
        out = total.linear(tokens, b.in_features, b.out_features, b.weight.requires_grad, down) or out
    return out


def _st_adapter(total: "_Tally", tokens: int, adapter: STAdapter | None, needs_grad: bool) -> bool:
    """x + up(DWConv3D(down(x))) on the grid tokens; the depthwise conv costs 2 x k_t k_h k_w per channel and token."""
    if adapter is None:
        return needs_grad
    down = _dense(total, tokens, adapter.down, needs_grad)
    conv = total.linear(tokens, adapter.conv.weight[0].numel(), adapter.conv.out_channels,
                        adapter.conv.weight.requires_grad, down, _bias_trains(adapter.conv))
    return _dense(total, tokens, adapter.up, conv) or needs_grad


def clip_flops(model: VisionTransformer, num_frames: int | None = None, img_size: int | None = None) -> StepFlops:
    """FLOPs per clip of `model` as configured and tuned (which parameters train decides the backward).

    Follows autograd's own rule: an op's input gradient is computed iff that input requires a gradient, its
    weight gradient iff the weight trains; a tensor requires a gradient iff anything trainable lies upstream
    (a trainable bias or LayerNorm too: BitFit).
    """
    cfg = model.cfg
    frames = num_frames or cfg.num_frames
    size = img_size or cfg.img_size
    dim = cfg.embed_dim
    tokens = (frames // cfg.tubelet_size) * (size // cfg.patch_size) ** 2
    total = _Tally()
    needs_grad = _dense(total, tokens, model.patch_embed.proj, False)  # pixels never need a gradient
    prompts = model.token_prompts
    for index, block in enumerate(model.blocks):
        n = tokens + (prompts.num_tokens if prompts is not None else 0)
        if prompts is not None and (prompts.mode == "deep" or index == 0):
            needs_grad = needs_grad or _trains(prompts)
        needs_grad = _st_adapter(total, tokens, block.pre_attn_adapter, needs_grad)
        attn = block.attn
        normed = needs_grad or _trains(block.norm1)
        q_bias = attn.q_bias is not None and (attn.q_bias.requires_grad or attn.v_bias.requires_grad)
        qkv = _dense(total, n, attn.qkv, normed, q_bias)
        total.attention(n, dim, qkv)
        attended = _dense(total, n, attn.proj, qkv)
        residual = _st_adapter(total, tokens, block.pre_mlp_adapter, needs_grad or attended)
        normed = residual or _trains(block.norm2)
        hidden = _dense(total, n, block.mlp.fc1, normed)
        mlp_out = _dense(total, n, block.mlp.fc2, hidden)
        out = residual or mlp_out
        adapter = block.mlp_adapter
        if isinstance(adapter, AdaptMLP):
            if adapter.position == "sequential":
                source = mlp_out
            else:
                source = residual if adapter.input_kind == "residual" else normed
            down = _dense(total, n, adapter.down, source)
            out = _dense(total, n, adapter.up, down) or out
        needs_grad = out
    if isinstance(model.head, nn.Linear):
        features = needs_grad or _trains(model.fc_norm)
        _dense(total, 1, model.head, features)
    return StepFlops(total.forward, total.backward)


class _Tally:
    """Adds up forward and backward matmul FLOPs op by op; each op returns whether its output needs a gradient."""

    def __init__(self) -> None:
        self.forward = 0.0
        self.backward = 0.0

    def linear(self, tokens: int, fan_in: int, fan_out: int, weight_trains: bool, input_needs_grad: bool,
               bias_trains: bool = False) -> bool:
        flops = 2.0 * tokens * fan_in * fan_out
        self.forward += flops
        self.backward += flops * (int(weight_trains) + int(input_needs_grad))
        return weight_trains or bias_trains or input_needs_grad

    def attention(self, tokens: int, dim: int, needs_grad: bool) -> None:
        flops = 4.0 * tokens * tokens * dim
        self.forward += flops
        self.backward += 2.0 * flops if needs_grad else 0.0


def model_flops_utilisation(flops_per_clip: float, clips_per_second: float, peak_flops: float) -> float:
    """MFU: achieved model FLOPs per second over the hardware's dense peak (e.g. 989e12 for H100 SXM bf16)."""
    return flops_per_clip * clips_per_second / peak_flops
