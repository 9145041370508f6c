"""Run configuration: plain dataclasses, YAML files that inherit with `_base_`, `key=value` overrides.

A YAML file states only what differs from its base (`_base_: ../base.yaml`, a path relative to the file,
or a list of them, merged in order). Overrides on the command line use dotted keys:
`train.lr=0.01 model.tuning=vpt data.num_frames=4`. Unknown keys and values of the wrong type or out of range
fail before anything runs, naming the key (video_adapt.schema).
`train.recipe` picks a named set of optimisation defaults (`paper` or `videomae`); keys set explicitly
in the file or on the command line win over the recipe.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from video_adapt.errors import ConfigError
from video_adapt.files import write_text_atomic
from video_adapt.models.tuning import METHODS, TUNING_OPTIONS, TuningConfig
from video_adapt.schema import from_dict, option

__all__ = ["Config", "ConfigError", "DataConfig", "ModelConfig", "RECIPES", "TrainConfig", "config_from_dict",
           "deep_merge", "load_config", "parse_overrides", "read_config_values", "save_config"]


def _model_names() -> list[str]:
    from video_adapt.models.vit import PRESETS
    return list(PRESETS)


def _randaugment_check(value: str | None) -> str | None:
    from video_adapt.data.transforms import parse_randaugment
    try:
        parse_randaugment(value)
    except ValueError:
        return "is not of the form 'rand-m<magnitude>-n<ops>'"
    return None


@dataclass
class ModelConfig:
    name: str = option("vit_base_patch16_224", choices=_model_names)
    tuning: str = option("adaptformer", choices=METHODS)  # video_adapt.models.tuning.METHODS
    pretrained: str | None = None  # official/HF/own checkpoint; None = random backbone (a control)
    num_classes: int | None = option(None, ge=1)  # None = from the tube store
    # the tuning options: their allowed values are checked where they are defined, by TuningConfig (check_tuning)
    bottleneck: int = 64
    adapter_scale: float | str = 0.1
    adapter_position: str = "parallel"
    adapter_input: str = "norm"
    adapter_init: str = "article"  # article | lora | official (AdaptFormer's released code)
    adapter_layers: list[int] | None = option(None, ge=0)  # adaptformer, lora, st_adapter: which blocks; None = all
    adapter_dropout: float = option(0.0, ge=0, lt=1)
    vpt_tokens: int = 1
    vpt_mode: str = "deep"
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_targets: list[str] = field(default_factory=lambda: ["qkv"])  # qkv | proj | fc1 | fc2
    lora_dropout: float = 0.0
    st_kernel: list[int] = field(default_factory=lambda: [3, 1, 1])  # ST-Adapter conv kernel (time, height, width)
    st_position: str = "attn"  # attn | mlp | both
    head_bn: bool = True  # AdaptFormer's video code puts BatchNorm1d(affine=False) before every head
    drop_path_rate: float = option(0.0, ge=0, lt=1)
    use_checkpoint: bool = False
    arch: dict[str, Any] = field(default_factory=dict)  # embed_dim, depth, patch_size ... overrides


@dataclass
class DataConfig:
    root: str = ""  # a tube store written by data_prep
    train_split: str = "train"
    val_split: str = "val"
    num_frames: int = option(8, ge=1)
    img_size: int = option(224, ge=1)
    batch_size: int = option(32, ge=1)  # per process
    num_workers: int = option(4, ge=0)
    flip: bool | None = None  # None = from the store (off for SSv2: left/right is in its labels)
    crop_scale: list[float] = option(factory=lambda: [0.08, 1.0], gt=0, le=1)  # random resized crop area range
    randaugment: str | None = option(None, check=_randaugment_check)  # e.g. "rand-m7-n4-mstd0.5-inc1" (VideoMAE)
    test_crops: int = option(3, ge=1)
    eval_crops: int = option(1, ge=1)  # crops for the per-epoch validation (1 = centre); tools/test.py does all views
    gpu_decode: bool = True  # decode JPEG tubes on the GPU when training there


@dataclass
class TrainConfig:
    recipe: str = option("paper", choices=lambda: RECIPES)
    epochs: int = option(90, ge=1)
    warmup_epochs: float = option(10, ge=0)
    optimizer: str = option("sgd", choices=("sgd", "adamw"))
    base_lr: float = option(0.1, gt=0)  # scaled by global batch / 256 unless `lr` is set
    lr: float | None = option(None, gt=0)  # absolute learning rate; wins over base_lr
    min_lr: float = option(0.0, ge=0)
    warmup_lr: float = option(0.0, ge=0)
    momentum: float = option(0.9, ge=0, le=1)
    weight_decay: float = option(0.0, ge=0)
    layer_decay: float | None = option(None, gt=0, le=1)
    clip_grad: float | None = option(None, gt=0)
    accum_steps: int = option(1, ge=1)
    mixup: float = option(0.0, ge=0)
    cutmix: float = option(0.0, ge=0)
    label_smoothing: float = option(0.0, ge=0, lt=1)
    repeated_aug: int = option(1, ge=1)
    amp: str = option("auto", choices=("auto", "bf16", "fp16", "off"))
    compile: bool = False
    nonfinite: str = option("skip", choices=("skip", "stop"))  # what a NaN/inf loss does
    eval_every: int = option(1, ge=1)
    log_every: int = option(20, ge=1)
    seed: int = option(0, ge=0)


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
    device: str = option("auto", choices=("auto", "cpu", "cuda"))

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
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: value is not valid YAML") from None
    return tree


def read_config_values(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The merged mapping of a YAML file (with its `_base_` chain) and dotted overrides, not yet checked."""
    values = _read_yaml(Path(path).resolve()) if path else {}
    return deep_merge(values, parse_overrides(overrides or []))


def config_from_dict(values: dict[str, Any]) -> Config:
    """The training config of a mapping: recipe defaults first, then every key checked (video_adapt.schema)."""
    values = copy.deepcopy(values)
    train = values.get("train") or {}
    recipe = train.get("recipe", TrainConfig.recipe) if isinstance(train, dict) else TrainConfig.recipe
    if not isinstance(recipe, str) or recipe not in RECIPES:
        raise ConfigError(f"unknown config value train.recipe={recipe!r} (known: {', '.join(RECIPES)})")
    cfg = from_dict(Config, deep_merge(RECIPES[recipe], values))
    check_tuning(cfg.model)
    return cfg


def tuning_config(model: ModelConfig) -> TuningConfig:
    """The model section's tuning method and options, as `create_model` takes them."""
    return TuningConfig(method=model.tuning, **{key: getattr(model, key) for key in TUNING_OPTIONS})


def check_tuning(model: ModelConfig) -> None:
    """The rules that tie tuning options together (e.g. st_kernel sizes are odd) live with TuningConfig."""
    try:
        tuning_config(model)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"config section model: {err}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Config from a YAML file (with its `_base_` chain) and dotted overrides."""
    return config_from_dict(read_config_values(path, overrides))


def save_config(cfg: Any, path: str | Path) -> None:
    """Any config dataclass as YAML (readable back by `read_config_values`)."""
    write_text_atomic(path, yaml.safe_dump(asdict(cfg), sort_keys=False))
