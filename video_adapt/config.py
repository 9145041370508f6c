"""Run configuration: plain dataclasses, YAML files that inherit with `_base_`, `key=value` overrides.

A YAML file states only what differs from its base (`_base_: ../base.yaml`, a path relative to the file, or a
shipped config's name such as `ssv2/adaptformer_8f`, or a list of them, merged in order); `--config` takes a file or
a shipped name (video_adapt.resources). Overrides on the command line use dotted keys:
`train.lr=0.01 model.tuning=vpt data.num_frames=4`. Unknown keys and values of the wrong type or out of range
fail before anything runs, naming the key (video_adapt.schema).
`train.recipe` picks a named official recipe (`adaptformer` or `videomae`, video_adapt/recipes.py), with the values
it has for the `data.dataset` kind; keys set explicitly in the file or on the command line win over the recipe and
its data protocol.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from video_adapt.errors import ConfigError
from video_adapt.files import write_text_atomic
from video_adapt.models.methods import METHODS, TUNING_OPTIONS, TuningConfig, TuningOptions
from video_adapt.resources import resolve_config, resolve_pretrained, shipped_config
from video_adapt.recipes import DATA_PROTOCOLS, RECIPE_ALIASES, RECIPES, recipe_defaults, recipe_name
from video_adapt.schema import from_dict, option

__all__ = ["Config", "ConfigError", "DataConfig", "ModelConfig", "RECIPES", "TrainConfig", "config_from_dict",
           "deep_merge", "load_config", "parse_overrides", "read_config_values", "save_config"]


def _model_names() -> list[str]:
    from video_adapt.models.presets import PRESETS
    return list(PRESETS)


def _randaugment_check(value: str | None) -> str | None:
    if value in (None, "none") or (value.startswith("rand-m") and value[6:7].isdigit()):
        return None
    return "is not a timm RandAugment spec of the form 'rand-m<magnitude>-n<ops>...' (or 'none')"


@dataclass
class ModelConfig(TuningOptions):
    """The model: a preset, its pretrained weights, the tuning method and the head. The method's options are the
    fields of `TuningOptions` (bottleneck, adapter_*, vpt_*, lora_*, st_*), checked with the method by TuningConfig."""

    name: str = option("vit_base_patch16_224", choices=_model_names)
    tuning: str = option("adaptformer", choices=METHODS)  # the registry, video_adapt.models.methods
    # official/HF/own checkpoint; "demo" = the committed demo backbone; "none" = a random backbone, on purpose (a
    # frozen random backbone without a word would be a silent failure, so a missing value stops a frozen-backbone
    # method)
    pretrained: str | None = None
    num_classes: int | None = option(None, ge=1)  # None = from the data
    head_bn: bool = True  # BatchNorm1d(affine=False) before the head (AdaptFormer); the recipe decides
    head_init_std: float = option(0.02, gt=0)  # the fresh head's trunc-normal std ...
    head_init_scale: float = option(0.001, gt=0)  # ... times this (VideoMAE 0.02 x 0.001; AdaptFormer 0.01 x 1)
    drop_path_rate: float = option(0.0, ge=0, lt=1)
    head_dropout: float = option(0.0, ge=0, lt=1)  # between fc_norm (and head_bn) and the head: VM's fc_drop_rate
    use_checkpoint: bool = False
    arch: dict[str, Any] = field(default_factory=dict)  # embed_dim, depth, patch_size ... overrides


@dataclass
class DataConfig:
    """Where clips come from and the data protocol. Protocol fields left at None take the protocol's value
    (`recipes.DATA_PROTOCOLS`, by `protocol` and the dataset kind); a value set here wins."""

    source: str = option("store", choices=("store", "videos"))  # a frame store | video files decoded on the fly
    root: str = ""  # the frame store (source: store), or the root of list-file paths (source: videos)
    train_list: str | None = None  # source: videos: a list file (path label) or a folder of class folders
    val_list: str | None = None
    test_list: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"  # monitored every eval_every epochs with one view (VAL-EPOCH); None = none
    test_split: str | None = None  # the split the final multi-view test reports (None = val_split)
    dataset: str | None = None  # ssv2 | hmdb51 | other ...: picks per-dataset protocol settings; None = the store's
    # several labels per video: sigmoid + BCE, mAP. None = the store's; with source: videos, true reads label sets
    # from the lists (`path l1 l2 ...`)
    multilabel: bool | None = None
    protocol: str | None = option(None, choices=lambda: list(DATA_PROTOCOLS) + [None])  # None = the recipe's
    num_frames: int = option(8, ge=1)
    img_size: int = option(224, ge=1)
    batch_size: int = option(32, ge=1)  # per process, before the num_sample copies
    num_workers: int = option(4, ge=0)
    sampling: str | None = option(None, choices=("tsn", "lin", "seg", None))  # the training rule
    stride: int | None = option(None, ge=1)  # frame stride of tsn, lin and dense
    train_crop: str | None = option(None, choices=("msc", "rrc", None))
    crop_scale: list[float] | None = option(None, gt=0, le=1)  # rrc area range
    flip: bool | None = None  # None: the protocol's, and never where the data says left/right matters
    randaugment: str | None = option(None, check=_randaugment_check)  # "none" turns the protocol's off
    reprob: float | None = option(None, ge=0, le=1)  # random erasing probability
    num_sample: int | None = option(None, ge=1)  # augmented copies of each video per batch (repeated augmentation)
    test_sampling: str | None = option(None, choices=("dense", "ssv2", None))
    test_clips: int | None = option(None, ge=1)
    test_crops: int | None = option(None, ge=1)
    test_short_side: int | None = option(None, ge=1)  # None = img_size (the official 224 / 224)
    view_average: str | None = option(None, choices=("logits", "softmax", None))  # how a video's views combine
    gpu_decode: bool = True  # decode JPEG frames on the GPU when training there (without RandAugment)
    cache_mb: int = option(0, ge=0)  # decoded JPEG frames kept in memory per split and process (0 = decode every read)


@dataclass
class TrainConfig:
    recipe: str = option("adaptformer", choices=lambda: list(RECIPES) + list(RECIPE_ALIASES))
    epochs: int = option(90, ge=1)
    warmup_epochs: float = option(10, ge=0)
    optimizer: str = option("sgd", choices=("sgd", "adamw"))
    base_lr: float = option(0.1, gt=0)  # scaled by global batch / 256 unless `lr` is set
    lr: float | None = option(None, gt=0)  # absolute learning rate; wins over base_lr
    min_lr: float = option(0.0, ge=0)
    scale_min_lr: bool = False  # VideoMAE scales min_lr by global batch / 256 like the peak
    schedule: str = option("epoch", choices=("epoch", "step"))  # AdaptFormer per fractional epoch | VideoMAE per step
    global_batch: int | None = option(None, ge=1)  # the recipe's global batch, reached by accumulation; None = as run
    # the process count whose sampler an epoch follows (video_adapt/engine/epochs.py): the shuffled videos are padded
    # to a multiple of it, then cut to whole global batches. AdaptFormer's recipe 64 (its 8 x 8 GPUs), VideoMAE's 1
    # (its loop stops at floor(N / global batch) updates); None = this run's processes
    sampler_world: int | None = option(None, ge=1)
    momentum: float = option(0.9, ge=0, le=1)
    betas: list[float] = option(factory=lambda: [0.9, 0.999], ge=0, lt=1)
    weight_decay: float = option(0.0, ge=0)
    layer_decay: float | None = option(None, gt=0, le=1)
    clip_grad: float | None = option(None, gt=0)
    accum_steps: int = option(1, ge=1)
    mixup: float = option(0.0, ge=0)
    cutmix: float = option(0.0, ge=0)
    label_smoothing: float = option(0.0, ge=0, lt=1)
    amp: str = option("auto", choices=("auto", "bf16", "fp16", "off"))
    strategy: str = option("ddp", choices=("ddp", "fsdp"))  # fsdp: weights, gradients and AdamW state sharded (FSDP2)
    compile: bool = False
    # linear probing only: train on the frozen backbone's pooled features of K fixed augmented views per video,
    # computed once (video_adapt/engine/feature_cache.py); None = a fresh clip every epoch, the official protocol
    feature_cache: int | None = option(None, ge=1)
    nonfinite: str = option("skip", choices=("skip", "stop"))  # what a NaN/inf loss does
    eval_every: int = option(1, ge=1)
    keep_best: bool = True  # keep best_<split>/ by the monitored split, never when it is the test split
    log_every: int = option(20, ge=1)
    seed: int = option(0, ge=0)


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
        merged = deep_merge(merged, _read_yaml(_base_path(path, str(base)), chain + (path,)))
    return deep_merge(merged, data)


def _base_path(path: Path, base: str) -> Path:
    """A `_base_` entry: a file relative to the config that names it, else a shipped config's name
    (`_base_: ssv2/adaptformer_8f` in a user's own file)."""
    relative = (path.parent / base).resolve()
    if relative.is_file():
        return relative
    return shipped_config(base) or relative


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
    values = _read_yaml(resolve_config(path)) if path else {}
    return deep_merge(values, parse_overrides(overrides or []))


def config_from_dict(values: dict[str, Any]) -> Config:
    """The training config of a mapping: recipe defaults first, then every key checked (video_adapt.schema)."""
    values = copy.deepcopy(values)
    train = values.get("train") or {}
    recipe = train.get("recipe", TrainConfig.recipe) if isinstance(train, dict) else TrainConfig.recipe
    if not isinstance(recipe, str) or recipe_name(recipe) not in RECIPES:
        raise ConfigError(f"unknown config value train.recipe={recipe!r} (known: {', '.join(RECIPES)})")
    data = values.get("data")
    dataset = data.get("dataset") if isinstance(data, dict) else None
    values = deep_merge(recipe_defaults(recipe, dataset if isinstance(dataset, str) else None), values)
    values["train"]["recipe"] = recipe_name(recipe)
    cfg = from_dict(Config, values)
    cfg.model.pretrained = resolve_pretrained(cfg.model.pretrained)
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
