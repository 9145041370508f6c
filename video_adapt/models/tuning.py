"""Tuning methods: which parameters train, and the small modules a method adds to a frozen backbone.

- `adaptformer`: AdaptMLP, a bottleneck branch beside the frozen MLP of each block (Chen et al. 2022);
- `vpt`: learnable prompt tokens, shallow (once, before block 0) or deep (fresh before every block);
- `linear`: frozen backbone, trains `fc_norm` and `head` (optionally behind `head_bn`);
- `full`: everything trains.
The backbone is built first (vit.py); `apply_tuning` then attaches the method and sets `requires_grad`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from video_adapt.models.vit import VisionTransformer

METHODS = ("adaptformer", "vpt", "linear", "full")
HEAD_PREFIXES = ("fc_norm.", "head.", "head_bn.")
ADAPTER_TAG = "mlp_adapter."
PROMPT_TAG = "token_prompts."


@dataclass
class TuningConfig:
    """How a backbone is tuned; stored with every adapter file so it can be rebuilt."""

    method: str = "adaptformer"
    bottleneck: int = 64
    adapter_scale: float | str = 0.1  # a number, or "learnable"
    adapter_position: str = "parallel"  # "parallel" | "sequential"
    adapter_input: str = "norm"  # "norm": the article's LN(x'); "residual": the official code's raw x'
    adapter_layers: list[int] | None = None  # None = every block
    adapter_dropout: float = 0.0
    vpt_tokens: int = 1
    vpt_mode: str = "deep"  # "deep" | "shallow"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown tuning method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.adapter_position not in ("parallel", "sequential"):
            raise ValueError(f"adapter_position must be 'parallel' or 'sequential', not {self.adapter_position!r}")
        if self.adapter_input not in ("norm", "residual"):
            raise ValueError(f"adapter_input must be 'norm' or 'residual', not {self.adapter_input!r}")
        if self.vpt_mode not in ("deep", "shallow"):
            raise ValueError(f"vpt_mode must be 'deep' or 'shallow', not {self.vpt_mode!r}")
        if isinstance(self.adapter_scale, str) and self.adapter_scale != "learnable":
            raise ValueError(f"adapter_scale must be a number or 'learnable', not {self.adapter_scale!r}")
        if self.bottleneck < 1 or self.vpt_tokens < 1:
            raise ValueError("bottleneck and vpt_tokens must be at least 1")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AdaptMLP(nn.Module):
    """The bottleneck branch: s * up(ReLU(down(input))), added to the frozen MLP's output.

    down: Kaiming-normal; up and both biases: zero, so an untrained model equals its backbone.
    `position="sequential"` applies the branch (with its own residual) to the MLP output instead.
    """

    def __init__(self, dim: int, bottleneck: int, scale: float | str = 0.1, position: str = "parallel",
                 input_kind: str = "norm", dropout: float = 0.0):
        super().__init__()
        self.position = position
        self.input_kind = input_kind
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, dim)
        if scale == "learnable":
            self.scale = nn.Parameter(torch.ones(1))
        else:
            self.register_buffer("scale", torch.tensor(float(scale)), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.down.weight, nonlinearity="relu")
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(x)))) * self.scale

    def forward(self, residual: torch.Tensor, normed: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
        if self.position == "sequential":
            return mlp_out + self.branch(mlp_out)
        return mlp_out + self.branch(normed if self.input_kind == "norm" else residual)


class PromptTokens(nn.Module):
    """VPT prompts, prepended as extra tokens without position encoding.

    deep: one set per block, added before it and removed after it; shallow: one set added before
    block 0 and removed after the last block. Uniform init with the Xavier bound sqrt(6 / (num_tokens + dim));
    VPT's own code takes the patch embedding's fan-in instead, sqrt(6 / (3 * patch * patch + dim)).
    """

    def __init__(self, dim: int, depth: int, num_tokens: int, mode: str = "deep"):
        super().__init__()
        self.mode = mode
        self.depth = depth
        self.num_tokens = num_tokens
        self.prompts = nn.Parameter(torch.empty(depth if mode == "deep" else 1, num_tokens, dim))
        bound = math.sqrt(6.0 / (num_tokens + dim))
        nn.init.uniform_(self.prompts, -bound, bound)

    def before_block(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if self.mode == "shallow" and index > 0:
            return x
        prompt = self.prompts[index if self.mode == "deep" else 0].to(x.dtype)
        return torch.cat((prompt.expand(x.shape[0], -1, -1), x), dim=1)

    def after_block(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if self.mode == "shallow" and index < self.depth - 1:
            return x
        return x[:, self.num_tokens:]


def _check_layers(layers: Sequence[int] | None, depth: int) -> list[int]:
    if layers is None:
        return list(range(depth))
    chosen = sorted(set(int(i) for i in layers))
    bad = [i for i in chosen if not 0 <= i < depth]
    if bad:
        raise ValueError(f"adapter_layers {bad} out of range for a {depth}-block model")
    return chosen


def apply_tuning(model: VisionTransformer, cfg: TuningConfig) -> VisionTransformer:
    """Attach the method's modules and freeze what the method does not train."""
    dim = model.embed_dim
    if cfg.method == "adaptformer":
        for i in _check_layers(cfg.adapter_layers, len(model.blocks)):
            model.blocks[i].mlp_adapter = AdaptMLP(
                dim, cfg.bottleneck, cfg.adapter_scale, cfg.adapter_position, cfg.adapter_input,
                cfg.adapter_dropout,
            )
    elif cfg.method == "vpt":
        model.token_prompts = PromptTokens(dim, len(model.blocks), cfg.vpt_tokens, cfg.vpt_mode)
    for name, param in model.named_parameters():
        param.requires_grad = cfg.method == "full" or parameter_group(name) != "backbone"
    model.tuning = cfg
    return model


def parameter_group(name: str) -> str:
    """backbone | adapters | prompts | head, from a parameter's name."""
    if ADAPTER_TAG in name:
        return "adapters"
    if name.startswith(PROMPT_TAG):
        return "prompts"
    if name.startswith(HEAD_PREFIXES):
        return "head"
    return "backbone"


def parameter_report(model: nn.Module) -> dict[str, Any]:
    """Total and trainable counts, per group, and the trainable share of the whole model."""
    groups = {g: {"total": 0, "trainable": 0} for g in ("backbone", "adapters", "prompts", "head")}
    for name, param in model.named_parameters():
        group = groups[parameter_group(name)]
        group["total"] += param.numel()
        group["trainable"] += param.numel() if param.requires_grad else 0
    total = sum(g["total"] for g in groups.values())
    trainable = sum(g["trainable"] for g in groups.values())
    added = groups["adapters"]["total"] + groups["prompts"]["total"]
    backbone = groups["backbone"]["total"]
    return {
        "total": total,
        "trainable": trainable,
        "trainable_ratio": trainable / total if total else 0.0,
        "added": added,
        "added_ratio": added / backbone if backbone else 0.0,
        "groups": groups,
    }


def tuned_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a parameter-efficient method changes: trainable parameters plus head_bn statistics."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b for name, b in model.named_buffers() if name.startswith("head_bn.")}
    return {name: t.detach() for name, t in {**params, **buffers}.items()}
