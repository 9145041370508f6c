"""The registry of tuning methods: one `MethodSpec` per method says what trains, what it adds, how it is built,
whether its weights fold into the plain backbone, what its adapter file holds and its paper's size. Everything
that depends on the method (config checks, freezing, saving, loading, merging, export, the method configs) reads
it here; adding a method means its modules and `attach` function (video_adapt/models/tuning.py) and one entry below.

The tuning options themselves (`TuningOptions`) are plain numbers and names, checked by `TuningConfig`. This module
imports no framework, so commands can list methods and check options before torch loads.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from video_adapt.schema import option

ADAPTER_INITS = ("article", "lora", "official")
ADAPTER_POSITIONS = ("parallel", "sequential")
ADAPTER_INPUTS = ("norm", "residual")
VPT_MODES = ("deep", "shallow")
ST_POSITIONS = ("attn", "mlp", "both")
# LoRA target names -> module paths inside a block
LORA_TARGETS = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


@dataclass(frozen=True)
class MethodSpec:
    """One tuning method, as the rest of the code needs to know it."""

    name: str
    title: str  # how tables and the README name it
    summary: str  # one line: what it adds and trains (the method config's first comment)
    backbone_trains: str  # "all" (full), "biases" (BitFit) or "none": which backbone weights train
    attach: str | None = None  # the function in video_adapt.models.tuning that adds its modules (None: adds nothing)
    options: tuple[str, ...] = ()  # the TuningOptions it reads
    merges: bool = True  # its trained weights fold into a plain backbone (full, linear, BitFit, LoRA merged)
    merge: str | None = None  # the function in video_adapt.models.tuning that folds its modules into the backbone
    paper_size: dict[str, Any] = field(default_factory=dict)  # its options as its paper sizes it (ViT-B)
    # serving several tasks on one backbone (video_adapt.models.multitask): its modules act on each clip's tokens
    # alone, so clips of different tasks share one forward; VPT's prompts change the token count and BitFit's biases
    # every layer, so their clips run task by task
    mixes: bool = True

    @property
    def frozen_backbone(self) -> bool:
        """Most of the backbone keeps its pretrained weights, so a run without them trains on noise."""
        return self.backbone_trains != "all"

    @property
    def plain_forward(self) -> bool:
        """Its backbone forward is the pretrained one (linear probing): one forward per clip serves all such tasks."""
        return self.attach is None and self.backbone_trains == "none"

    @property
    def saves_backbone(self) -> bool:
        """Its adapter file is the whole model (full fine-tuning) rather than what the method changes."""
        return self.backbone_trains == "all"


LAYER_OPTION = ("adapter_layers",)

REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("adaptformer", "AdaptFormer",
               "a parallel bottleneck branch beside every frozen MLP, scaled by s (Chen et al. 2022)", "none",
               attach="attach_adaptformer",
               options=("bottleneck", "adapter_scale", "adapter_position", "adapter_input", "adapter_init",
                        "adapter_dropout", *LAYER_OPTION),
               merges=False, paper_size=dict(bottleneck=64, adapter_scale=0.1, adapter_position="parallel")),
    MethodSpec("vpt", "VPT",
               "learnable prompt tokens before every block (deep) or the first (shallow) (Jia et al. 2022)", "none",
               attach="attach_vpt", options=("vpt_tokens", "vpt_mode"), merges=False, mixes=False,
               paper_size=dict(vpt_tokens=1, vpt_mode="deep")),
    MethodSpec("linear", "linear probing", "a frozen backbone: only fc_norm and the head train", "none"),
    MethodSpec("full", "full fine-tuning", "every weight trains", "all"),
    MethodSpec("lora", "LoRA", "low-rank updates of the chosen Linear layers, through peft (Hu et al. 2022)", "none",
               attach="attach_lora", merge="merge_lora", options=("lora_rank", "lora_alpha", "lora_targets", "lora_dropout", *LAYER_OPTION),
               paper_size=dict(lora_rank=8, lora_alpha=8.0, lora_targets=["qkv"], lora_dropout=0.0)),
    MethodSpec("bitfit", "BitFit", "every bias of the backbone trains, nothing is added (Ben Zaken et al. 2022)",
               "biases", mixes=False),
    MethodSpec("st_adapter", "ST-Adapter",
               "a bottleneck with a depthwise 3-D convolution over the token grid before attention (Pan et al. 2022)",
               "none", attach="attach_st_adapter", options=("bottleneck", "st_kernel", "st_position", *LAYER_OPTION),
               merges=False, paper_size=dict(bottleneck=384, st_kernel=[3, 1, 1], st_position="attn")),
)}
METHODS = tuple(REGISTRY)


def method_spec(name: str) -> MethodSpec:
    """The spec of method `name`; a one-line ValueError naming the methods otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown tuning method {name!r}; choose one of {', '.join(METHODS)}") from None


@dataclass
class TuningOptions:
    """Every method's options, by the names `create_model` and the model section of a config take."""

    bottleneck: int = 64  # AdaptFormer's d_hat; also the width of the ST-Adapter
    adapter_scale: float | str = 0.1  # a number, or "learnable"
    adapter_position: str = "parallel"  # "parallel" | "sequential"
    adapter_input: str = "norm"  # "norm": the article's LN(x'); "residual": the official code's raw x'
    adapter_init: str = "article"  # "article" | "lora" | "official" (see AdaptMLP.reset_parameters)
    adapter_layers: list[int] | None = option(None, ge=0)  # blocks that get an adapter / LoRA; None = every block
    adapter_dropout: float = option(0.0, ge=0, lt=1)
    vpt_tokens: int = 1
    vpt_mode: str = "deep"  # "deep" | "shallow"
    lora_rank: int = 8
    lora_alpha: float = 8.0  # the update is scaled by lora_alpha / lora_rank
    lora_targets: list[str] = field(default_factory=lambda: ["qkv"])  # any of qkv, proj, fc1, fc2
    lora_dropout: float = 0.0
    st_kernel: list[int] = field(default_factory=lambda: [3, 1, 1])  # (time, height, width), odd sizes
    st_position: str = "attn"  # "attn": before attention; "mlp": before the MLP; "both": two per block


TUNING_OPTIONS = tuple(f.name for f in fields(TuningOptions))


@dataclass
class TuningConfig(TuningOptions):
    """How a backbone is tuned; stored with every adapter file so it can be rebuilt. Bad values raise a one-line
    ValueError naming the option."""

    method: str = "adaptformer"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        method_spec(self.method)
        choices = {"adapter_position": (self.adapter_position, ADAPTER_POSITIONS),
                   "adapter_input": (self.adapter_input, ADAPTER_INPUTS),
                   "adapter_init": (self.adapter_init, ADAPTER_INITS),
                   "vpt_mode": (self.vpt_mode, VPT_MODES),
                   "st_position": (self.st_position, ST_POSITIONS)}
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
        if isinstance(self.adapter_scale, str) and self.adapter_scale != "learnable":
            raise ValueError(f"adapter_scale must be a number or 'learnable', not {self.adapter_scale!r}")
        if self.bottleneck < 1 or self.vpt_tokens < 1 or self.lora_rank < 1:
            raise ValueError("bottleneck, vpt_tokens and lora_rank must be at least 1")
        targets = list(self.lora_targets) if isinstance(self.lora_targets, (list, tuple)) else None
        if not targets or any(t not in LORA_TARGETS for t in targets) or len(set(targets)) != len(targets):
            raise ValueError(f"lora_targets must be a list of distinct names from {', '.join(LORA_TARGETS)}, "
                             f"not {self.lora_targets!r}")
        if not self.lora_alpha > 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError("lora_alpha must be positive and lora_dropout in [0, 1)")
        kernel = self.st_kernel
        if (not isinstance(kernel, (list, tuple)) or len(kernel) != 3
                or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernel)):
            raise ValueError(f"st_kernel must be three odd sizes (time, height, width), not {kernel!r}")

    @property
    def spec(self) -> MethodSpec:
        return REGISTRY[self.method]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
