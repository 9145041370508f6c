"""Tuning methods: which parameters train, and the small modules a method adds to a frozen backbone. What each
method is (what trains, which `attach_*` function below builds it, whether it merges) is its entry in the
registry, video_adapt/models/methods.py.

- `adaptformer`: AdaptMLP, a bottleneck branch beside the frozen MLP of each block (Chen et al. 2022);
- `vpt`: learnable prompt tokens, shallow (once, before block 0) or deep (fresh before every block);
- `lora`: low-rank updates of the attention / MLP Linear layers, through Hugging Face `peft` (Hu et al. 2022);
- `bitfit`: only the backbone's bias terms train (Ben Zaken et al. 2022);
- `st_adapter`: a bottleneck with a depthwise 3-D convolution over the token grid before attention (Pan et al. 2022);
- `linear`: frozen backbone, trains `fc_norm` and `head` (optionally behind `head_bn`);
- `full`: everything trains.
Every method also trains `fc_norm` and `head`. The backbone is built first (vit.py); `apply_tuning` then fills its
slots (`Block.mlp_adapter`, `Block.pre_attn_adapter`, `Block.pre_mlp_adapter`, `VisionTransformer.token_prompts`)
or wraps its Linear layers (LoRA), and sets `requires_grad` by parameter name.
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import torch
from timm.layers import trunc_normal_
from torch import nn

from video_adapt.models.methods import LORA_TARGETS, TuningConfig, method_spec
from video_adapt.models.vit import VisionTransformer

HEAD_PREFIXES = ("fc_norm.", "head.", "head_bn.")
ADAPTER_TAGS = ("mlp_adapter.", "pre_attn_adapter.", "pre_mlp_adapter.")
LORA_TAGS = (".lora_A.", ".lora_B.")
PROMPT_TAG = "token_prompts."
GROUPS = ("backbone", "adapters", "lora", "prompts", "head")


class AdaptMLP(nn.Module):
    """The bottleneck branch: s * up(ReLU(down(input))), added to the frozen MLP's output.

    `position="sequential"` applies the branch (with its own residual) to the MLP output instead.
    `init` picks one of three initialisations (see `reset_parameters`).
    """

    def __init__(self, dim: int, bottleneck: int, *, scale: float | str = 0.1, position: str = "parallel",
                 input_kind: str = "norm", dropout: float = 0.0, init: str = "article"):
        super().__init__()
        self.position = position
        self.input_kind = input_kind
        self.init = init
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
        """article: Kaiming-normal down, zero up (the article's text); lora: Kaiming-uniform(a=sqrt(5)) down, zero up
        (what AdaptFormer's config asks for, AF:models/adapter.py:43-48); official: trunc-normal(std 0.02) down and
        up (what its released code runs: the model re-initialises every Linear after building,
        AF:models/vit_video.py:258,272-276). Biases start at zero in all three; only `official` does not start at
        the backbone's function."""
        if self.init == "official":
            trunc_normal_(self.down.weight, std=0.02)
            trunc_normal_(self.up.weight, std=0.02)
        else:
            if self.init == "lora":
                nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            else:
                nn.init.kaiming_normal_(self.down.weight, nonlinearity="relu")
            nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(x)))) * self.scale

    def forward(self, residual: torch.Tensor, normed: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
        if self.position == "sequential":
            return mlp_out + self.branch(mlp_out)
        return mlp_out + self.branch(normed if self.input_kind == "norm" else residual)


class STAdapter(nn.Module):
    """ST-Adapter: x + up(DWConv3D(down(x))), the convolution over the (time, height, width) token grid.

    As the official code (linziyi96/st-adapter@b914b38, models_adapter.py:18-55): no activation, a depthwise
    Conv3d padded to keep the grid, its weight and bias zero at the start, zero Linear biases and PyTorch's default
    Linear weights; so an untrained adapter adds exactly zero and the model equals its backbone. Tokens in front of
    the grid (prompts) pass unchanged, as the official code passes the class token.
    """

    def __init__(self, dim: int, bottleneck: int, kernel: Sequence[int] = (3, 1, 1)):
        super().__init__()
        kernel = tuple(int(k) for k in kernel)
        self.down = nn.Linear(dim, bottleneck)
        self.conv = nn.Conv3d(bottleneck, bottleneck, kernel, padding=tuple(k // 2 for k in kernel), groups=bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int] | None) -> torch.Tensor:
        if grid is None:
            raise ValueError("ST-Adapter needs the token grid (time, height, width); call the ViT on clips")
        t, h, w = grid
        b, n, _ = x.shape
        extra = n - t * h * w
        if extra < 0:
            raise ValueError(f"{n} tokens do not hold a {t}x{h}x{w} token grid")
        tokens = x[:, extra:] if extra else x
        y = self.down(tokens).view(b, t, h, w, -1).permute(0, 4, 1, 2, 3)
        y = self.conv(y).permute(0, 2, 3, 4, 1).reshape(b, t * h * w, -1)
        out = tokens + self.up(y)
        return torch.cat((x[:, :extra], out), dim=1) if extra else out


class PromptTokens(nn.Module):
    """VPT prompts, prepended as extra tokens without position encoding.

    deep: one set per block, added before it and removed after it; shallow: one set added before
    block 0 and removed after the last block.
    """

    def __init__(self, dim: int, depth: int, num_tokens: int, mode: str = "deep"):
        super().__init__()
        self.mode = mode
        self.depth = depth
        self.num_tokens = num_tokens
        self.prompts = nn.Parameter(torch.empty(depth if mode == "deep" else 1, num_tokens, dim))
        # AF:models/vit_video.py:263-270: xavier_uniform_ on each (1, n, D) set; torch's fans of a 3-D tensor are
        # n*D in and D out, so the bound is sqrt(6 / (D * (n + 1)))
        for index in range(self.prompts.shape[0]):
            nn.init.xavier_uniform_(self.prompts.data[index:index + 1])

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


def attach_adaptformer(model: VisionTransformer, cfg: TuningConfig, layers: list[int]) -> None:
    for i in layers:
        model.blocks[i].mlp_adapter = AdaptMLP(
            model.embed_dim, cfg.bottleneck, scale=cfg.adapter_scale, position=cfg.adapter_position,
            input_kind=cfg.adapter_input, dropout=cfg.adapter_dropout, init=cfg.adapter_init,
        )


def attach_st_adapter(model: VisionTransformer, cfg: TuningConfig, layers: list[int]) -> None:
    for i in layers:
        if cfg.st_position in ("attn", "both"):
            model.blocks[i].pre_attn_adapter = STAdapter(model.embed_dim, cfg.bottleneck, cfg.st_kernel)
        if cfg.st_position in ("mlp", "both"):
            model.blocks[i].pre_mlp_adapter = STAdapter(model.embed_dim, cfg.bottleneck, cfg.st_kernel)


def attach_lora(model: VisionTransformer, cfg: TuningConfig, layers: list[int]) -> None:
    """peft's LoRA layers around the chosen Linear layers: A Kaiming-uniform, B zero, update scaled by alpha / r."""
    from peft import LoraConfig, inject_adapter_in_model  # imported here: peft loads transformers (seconds)
    modules = "|".join(re.escape(LORA_TARGETS[t]) for t in cfg.lora_targets)
    blocks = "|".join(str(i) for i in layers)
    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                        target_modules=rf"blocks\.({blocks})\.({modules})")  # a full match on module names
    inject_adapter_in_model(config, model)


def attach_vpt(model: VisionTransformer, cfg: TuningConfig, layers: list[int]) -> None:
    model.token_prompts = PromptTokens(model.embed_dim, len(model.blocks), cfg.vpt_tokens, cfg.vpt_mode)


def apply_tuning(model: VisionTransformer, cfg: TuningConfig) -> VisionTransformer:
    """Attach the method's modules (its spec's `attach` function, video_adapt.models.methods) and freeze what the
    method does not train."""
    spec = cfg.spec
    if spec.attach is not None:
        layers = _check_layers(cfg.adapter_layers, len(model.blocks)) if "adapter_layers" in spec.options else []
        globals()[spec.attach](model, cfg, layers)
    for name, param in model.named_parameters():
        param.requires_grad = trains(name, cfg.method)
    model.tuning = cfg
    return model


def is_bias(name: str) -> bool:
    """BitFit's trainable set: every bias term (Linear, LayerNorm, the patch embedding, VideoMAE's q_bias/v_bias)."""
    return name.endswith("bias")


def trains(name: str, method: str) -> bool:
    """Whether parameter `name` trains under `method`: the method's own tensors and the head always do, the
    backbone's as its spec says."""
    spec = method_spec(method)
    if parameter_group(name) != "backbone" or spec.backbone_trains == "all":
        return True
    return spec.backbone_trains == "biases" and is_bias(name)


def parameter_group(name: str) -> str:
    """backbone | adapters | lora | prompts | head, from a parameter's name."""
    if any(tag in name for tag in ADAPTER_TAGS):
        return "adapters"
    if any(tag in name for tag in LORA_TAGS):
        return "lora"
    if name.startswith(PROMPT_TAG):
        return "prompts"
    if name.startswith(HEAD_PREFIXES):
        return "head"
    return "backbone"


def backbone_key(name: str) -> str:
    """A tensor's name in the plain backbone: peft keeps the Linear it wraps under `base_layer.`."""
    return name.replace(".base_layer.", ".")


def lora_parts(layer: nn.Module) -> tuple[nn.Module, list[tuple[nn.Linear, nn.Linear]]]:
    """(the wrapped Linear, its active (A, B) pairs) for a peft LoRA layer; (layer, []) for anything else."""
    base = getattr(layer, "base_layer", None)
    if base is None or not hasattr(layer, "lora_A"):
        return layer, []
    return base, [(layer.lora_A[n], layer.lora_B[n]) for n in layer.active_adapters if n in layer.lora_A]


def merge_tuning(model: nn.Module) -> nn.Module:
    """Fold the method's own modules into the backbone where its registry entry has a `merge` (LoRA); the same
    logits at the plain backbone's speed. A no-op for methods with nothing to fold."""
    tuning = getattr(model, "tuning", None)
    spec = method_spec(tuning.method) if tuning is not None else None
    return globals()[spec.merge](model) if spec is not None and spec.merge else model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its Linear (W + alpha/r B A) and put the plain Linear back.

    Afterwards the model has exactly the backbone's architecture, so attention takes its fused path, and it gives
    the same logits (to float rounding). For inference: save or load adapter files before merging, not after.
    """
    tuning = getattr(model, "tuning", None)
    if tuning is None or tuning.method != "lora":
        raise ValueError("merge_lora: the model is not tuned with LoRA")
    if getattr(model, "lora_merged", False):
        return model
    for name, module in list(model.named_modules()):
        base, _ = lora_parts(module)
        if base is not module:
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, base)
    model.__dict__.pop("peft_config", None)
    model.lora_merged = True
    return model


def parameter_report(model: nn.Module) -> dict[str, Any]:
    """Total and trainable counts, per group, and the trainable share of the whole model."""
    groups = {g: {"total": 0, "trainable": 0} for g in GROUPS}
    for name, param in model.named_parameters():
        group = groups[parameter_group(name)]
        group["total"] += param.numel()
        group["trainable"] += param.numel() if param.requires_grad else 0
    total = sum(g["total"] for g in groups.values())
    trainable = sum(g["trainable"] for g in groups.values())
    added = groups["adapters"]["total"] + groups["lora"]["total"] + groups["prompts"]["total"]
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
