"""Run configuration: plain dataclasses, YAML files that inherit with `_base_`, `key=value` overrides.

A YAML file states only what differs from its base (`_base_: ../base.yaml`, a path relative to the file,
or a list of them, merged in order). Overrides on the command line use dotted keys:
`train.lr=0.01 model.tuning=vpt data.num_frames=4`. Unknown keys fail before anything runs, naming the key.
`train.recipe` picks a named set of optimisation defaults (`paper` or `videomae`); keys set explicitly
in the file or on the command line win over the recipe.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from video_adapt.models.tuning import METHODS, TUNING_OPTIONS, TuningConfig


class ConfigError(Exception):
    """A bad configuration; the message names the key or file."""


@dataclass
class ModelConfig:
    name: str = "vit_base_patch16_224"
    tuning: str = "adaptformer"  # adaptformer | vpt | linear | full | lora | bitfit | st_adapter
    pretrained: str | None = None  # official/HF/own checkpoint; None = random backbone (a control)
    num_classes: int | None = None  # None = from the tube store
    bottleneck: int = 64
    adapter_scale: float | str = 0.1
    adapter_position: str = "parallel"
    adapter_input: str = "norm"
    adapter_init: str = "article"  # article | lora | official (AdaptFormer's released code)
    adapter_layers: list[int] | None = None  # adaptformer, lora, st_adapter: which blocks; None = all
    adapter_dropout: float = 0.0
    vpt_tokens: int = 1
    vpt_mode: str = "deep"
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_targets: list[str] = field(default_factory=lambda: ["qkv"])  # qkv | proj | fc1 | fc2
    lora_dropout: float = 0.0
    st_kernel: list[int] = field(default_factory=lambda: [3, 1, 1])  # ST-Adapter conv kernel (time, height, width)
    st_position: str = "attn"  # attn | mlp | both
    head_bn: bool = True  # AdaptFormer's video code puts BatchNorm1d(affine=False) before every head
    drop_path_rate: float = 0.0
    use_checkpoint: bool = False
    arch: dict[str, Any] = field(default_factory=dict)  # embed_dim, depth, patch_size ... overrides


@dataclass
class DataConfig:
    root: str = ""  # a tube store written by data_prep
    train_split: str = "train"
    val_split: str = "val"
    num_frames: int = 8
    img_size: int = 224
    batch_size: int = 32  # per process
    num_workers: int = 4
    flip: bool | None = None  # None = from the store (off for SSv2: left/right is in its labels)
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # random resized crop area range
    randaugment: str | None = None  # e.g. "rand-m7-n4-mstd0.5-inc1" (VideoMAE)
    test_crops: int = 3
    eval_crops: int = 1  # crops for the per-epoch validation (1 = centre); tools/test.py does all views
    gpu_decode: bool = True  # decode JPEG tubes on the GPU when training there


@dataclass
class TrainConfig:
    recipe: str = "paper"
    epochs: int = 90
    warmup_epochs: float = 10
    optimizer: str = "sgd"  # sgd | adamw
    base_lr: float = 0.1  # scaled by global batch / 256 unless `lr` is set
    lr: float | None = None  # absolute learning rate; wins over base_lr
    min_lr: float = 0.0
    warmup_lr: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    layer_decay: float | None = None
    clip_grad: float | None = None
    accum_steps: int = 1
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0
    repeated_aug: int = 1
    amp: str = "auto"  # auto | bf16 | fp16 | off
    compile: bool = False
    nonfinite: str = "skip"  # skip | stop: what a NaN/inf loss does
    eval_every: int = 1
    log_every: int = 20
    seed: int = 0


RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    # AdaptFormer's video recipe (official code): SGD, lr 0.1 x batch/256, no weight decay, 10/90 warmup.
    "paper": {"train": dict(optimizer="sgd", base_lr=0.1, momentum=0.9, weight_decay=0.0, epochs=90,
                            warmup_epochs=10, layer_decay=None, mixup=0.0, cutmix=0.0, label_smoothing=0.0,
                            repeated_aug=1)},
    # VideoMAE's fine-tuning recipe (SSv2 ViT-B): AdamW, layer decay 0.75, drop path 0.1, RandAugment m7-n4,
    # mixup 0.8 / cutmix 1.0, label smoothing 0.1, repeated augmentation 2.
    "videomae": {"train": dict(optimizer="adamw", base_lr=5e-4, weight_decay=0.05, epochs=40, warmup_epochs=5,
                               layer_decay=0.75, mixup=0.8, cutmix=1.0, label_smoothing=0.1, repeated_aug=2,
                               min_lr=1e-6, warmup_lr=1e-6),
                 "model": dict(drop_path_rate=0.1),
                 "data": dict(randaugment="rand-m7-n4-mstd0.5-inc1")},
}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "runs/default"
    resume: str | None = None  # "auto" = latest checkpoint in out_dir, or a path
    device: str = "auto"  # auto | cpu | cuda

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in chain:
        raise ConfigError(f"{path}: _base_ cycle through {' -> '.join(map(str, chain))}")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    bases = data.pop("_base_", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = deep_merge(merged, _read_yaml((path.parent / base).resolve(), chain + (path,)))
    return deep_merge(merged, data)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "arch":
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`a.b=value` strings -> nested dict; values parsed as YAML scalars (`0.1`, `true`, `[1, 2]`)."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
    return tree


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _section(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config key '{where}' must be a mapping")
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key '{where}.{key}' (known: {', '.join(sorted(known))})")
    return cls(**values)


def config_from_dict(values: dict[str, Any]) -> Config:
    values = copy.deepcopy(values)
    train = values.get("train") or {}
    recipe = train.get("recipe", TrainConfig.recipe)
    if recipe not in RECIPES:
        raise ConfigError(f"unknown config value train.recipe={recipe!r} (known: {', '.join(RECIPES)})")
    values = deep_merge(RECIPES[recipe], values)
    top_level = {f.name for f in fields(Config)}
    kwargs = {}
    for key, value in values.items():
        if key in _SECTIONS:
            kwargs[key] = _section(_SECTIONS[key], value or {}, key)
        elif key in top_level:
            kwargs[key] = value
        else:
            raise ConfigError(f"unknown config key '{key}' (known: {', '.join(sorted(top_level))})")
    cfg = Config(**kwargs)
    _check_choices(cfg)
    return cfg


def _check_choices(cfg: Config) -> None:
    choices = {
        "model.tuning": (cfg.model.tuning, METHODS),
        "train.optimizer": (cfg.train.optimizer, ("sgd", "adamw")),
        "train.amp": (cfg.train.amp, ("auto", "bf16", "fp16", "off")),
        "train.nonfinite": (cfg.train.nonfinite, ("skip", "stop")),
        "device": (cfg.device, ("auto", "cpu", "cuda")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"config value {key}={value!r} is not one of {', '.join(allowed)}")
    if cfg.train.accum_steps < 1 or cfg.train.epochs < 1 or cfg.data.batch_size < 1:
        raise ConfigError("train.accum_steps, train.epochs and data.batch_size must be at least 1")
    try:  # the tuning options are checked where they are defined
        tuning_config(cfg.model)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"config section model: {err}") from None


def tuning_config(model: ModelConfig) -> TuningConfig:
    """The model section's tuning method and options, as `create_model` takes them."""
    return TuningConfig(method=model.tuning, **{key: getattr(model, key) for key in TUNING_OPTIONS})


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Config from a YAML file (with its `_base_` chain) and dotted overrides."""
    values = _read_yaml(Path(path).resolve()) if path else {}
    values = deep_merge(values, parse_overrides(overrides or []))
    return config_from_dict(values)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.as_dict(), sort_keys=False))
