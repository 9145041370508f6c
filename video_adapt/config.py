"""Run configuration: plain dataclasses, YAML files that inherit with `_base_`, `key=value` overrides.

A YAML file states only what differs from its base (`_base_: ../base.yaml`, a path relative to the file,
or a list of them, merged in order). Overrides on the command line use dotted keys:
`train.lr=0.01 model.tuning=vpt data.num_frames=4`. Unknown keys fail before anything runs, naming the key.
`train.recipe` picks a named official recipe (`adaptformer` or `videomae`, video_adapt/recipes.py); keys set
explicitly in the file or on the command line win over the recipe.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from video_adapt.recipes import RECIPES, recipe_defaults, recipe_name


class ConfigError(Exception):
    """A bad configuration; the message names the key or file."""


@dataclass
class ModelConfig:
    name: str = "vit_base_patch16_224"
    tuning: str = "adaptformer"  # adaptformer | vpt | linear | full
    pretrained: str | None = None  # official/HF/own checkpoint; "none" = a random backbone, stated on purpose
    num_classes: int | None = None  # None = from the data
    bottleneck: int = 64
    adapter_scale: float | str = 0.1
    adapter_position: str = "parallel"
    adapter_input: str = "norm"  # norm: the article's LN(x'); residual: the released code's raw x'
    adapter_init: str = "article"  # article | official | lora (see models/tuning.py)
    adapter_layers: list[int] | None = None
    adapter_dropout: float = 0.0
    vpt_tokens: int = 1
    vpt_mode: str = "deep"
    head_bn: bool = True  # BatchNorm1d(affine=False) before the head (AdaptFormer); the recipe decides
    head_init_std: float = 0.02  # the fresh head's trunc-normal std ...
    head_init_scale: float = 0.001  # ... times this (VideoMAE: 0.02 x 0.001; AdaptFormer: 0.01 x 1)
    drop_path_rate: float = 0.0
    use_checkpoint: bool = False
    arch: dict[str, Any] = field(default_factory=dict)  # embed_dim, depth, patch_size ... overrides


@dataclass
class DataConfig:
    """Where clips come from and the data protocol. Protocol fields left at None take the protocol's value
    (`recipes.DATA_PROTOCOLS`, by `protocol` and the dataset kind); a value set here wins."""

    source: str = "store"  # store: a frame store made by data_prep | videos: decode video files on the fly
    root: str = ""  # the frame store (source: store), or the root of list-file paths (source: videos)
    train_list: str | None = None  # source: videos: a list file (path label) or a folder of class folders
    val_list: str | None = None
    test_list: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"  # monitored every eval_every epochs with one view (VAL-EPOCH)
    test_split: str | None = None  # the split the final multi-view test reports (None = val_split)
    dataset: str | None = None  # ssv2 | hmdb51 | other ...; None = what the store records
    protocol: str | None = None  # adaptformer | videomae; None = the recipe's
    num_frames: int = 8
    img_size: int = 224
    batch_size: int = 32  # per process, before num_sample copies
    num_workers: int = 4
    sampling: str | None = None  # training rule: tsn | lin | seg
    stride: int | None = None  # frame stride of tsn / lin / dense
    train_crop: str | None = None  # msc | rrc
    crop_scale: list[float] | None = None  # rrc area range
    flip: bool | None = None  # None: the protocol's, and never where the store says left/right matters
    randaugment: str | None = None  # e.g. "rand-m7-n4-mstd0.5-inc1"; "none" turns the protocol's off
    reprob: float | None = None  # random erasing probability
    num_sample: int | None = None  # augmented copies of each video per batch (repeated augmentation)
    test_sampling: str | None = None  # dense | ssv2
    test_clips: int | None = None
    test_crops: int | None = None
    test_short_side: int | None = None  # None = img_size (the official 224 / 224)
    view_average: str | None = None  # logits | softmax: how the test views of a video are combined
    gpu_decode: bool = True  # decode JPEG frames on the GPU when training there (no RandAugment)


@dataclass
class TrainConfig:
    recipe: str = "adaptformer"  # adaptformer | videomae (recipes.py)
    epochs: int = 90
    warmup_epochs: float = 10
    optimizer: str = "sgd"  # sgd | adamw
    base_lr: float = 0.1  # scaled by global batch / 256 unless `lr` is set
    lr: float | None = None  # absolute learning rate; wins over base_lr
    min_lr: float = 0.0
    scale_min_lr: bool = False  # VideoMAE scales min_lr by global batch / 256 like the peak
    schedule: str = "epoch"  # epoch: AdaptFormer's per-iteration fractional epochs | step: VideoMAE's per-step table
    global_batch: int | None = None  # the recipe's global batch, reached by gradient accumulation; None = as run
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    layer_decay: float | None = None
    clip_grad: float | None = None
    accum_steps: int = 1
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0
    amp: str = "auto"  # auto | bf16 | fp16 | off
    compile: bool = False
    nonfinite: str = "skip"  # skip | stop: what a NaN/inf loss does
    eval_every: int = 1
    keep_best: bool = True  # keep best_<split>/ by the monitored split, never when it is the test split
    log_every: int = 20
    seed: int = 0


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
    recipe = recipe_name(train.get("recipe", TrainConfig.recipe))
    if recipe not in RECIPES:
        raise ConfigError(f"unknown config value train.recipe={recipe!r} (known: {', '.join(RECIPES)})")
    values = deep_merge(recipe_defaults(recipe), values)
    values.setdefault("train", {})["recipe"] = recipe
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
        "model.tuning": (cfg.model.tuning, ("adaptformer", "vpt", "linear", "full")),
        "train.optimizer": (cfg.train.optimizer, ("sgd", "adamw")),
        "train.amp": (cfg.train.amp, ("auto", "bf16", "fp16", "off")),
        "train.nonfinite": (cfg.train.nonfinite, ("skip", "stop")),
        "train.schedule": (cfg.train.schedule, ("epoch", "step")),
        "data.source": (cfg.data.source, ("store", "videos")),
        "model.adapter_init": (cfg.model.adapter_init, ("article", "official", "lora")),
        "device": (cfg.device, ("auto", "cpu", "cuda")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"config value {key}={value!r} is not one of {', '.join(allowed)}")
    if cfg.train.accum_steps < 1 or cfg.train.epochs < 1 or cfg.data.batch_size < 1:
        raise ConfigError("train.accum_steps, train.epochs and data.batch_size must be at least 1")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Config from a YAML file (with its `_base_` chain) and dotted overrides."""
    values = _read_yaml(Path(path).resolve()) if path else {}
    values = deep_merge(values, parse_overrides(overrides or []))
    return config_from_dict(values)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.as_dict(), sort_keys=False))
