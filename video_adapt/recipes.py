"""The official recipes and data protocols, as the released AdaptFormer and VideoMAE code runs them.

A recipe (`train.recipe`) names a complete training protocol: optimiser, learning-rate rule and schedule, epochs,
global batch, how an epoch is counted, head, adapter variant and its data protocol. Some of a recipe's values differ
per dataset (`DATASET_RECIPES`, looked up by `data.dataset` when the config is read). A data protocol
(`data.protocol`) names the temporal sampling rule, the training augmentation, the test views and how they are
averaged; VideoMAE's differs between SSv2 and other datasets, so it is looked up by the dataset kind the store
records (`data.dataset`).

Every value cites the official file and line (AF = ShoufaChen/AdaptFormer @6967d67, VM = MCG-NJU/VideoMAE
@14ef8d8); docs/PROTOCOLS.md lists them beside the tests that pin them. Keys set in a config file or on the
command line win over the recipe and the protocol.
"""
from __future__ import annotations

from typing import Any

from video_adapt.errors import ConfigError

VIDEOMAE_RANDAUGMENT = "rand-m7-n4-mstd0.5-inc1"  # VM:run_class_finetuning.py:93 (--aa default)

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    # AdaptFormer's video fine-tuning (AF:README.md:43-51, AF:main_video.py): SGD momentum 0.9, lr 0.1 x batch/256
    # with a global batch of 16 x 64, no weight decay, 90 epochs with 10 of warmup from 0, cosine to 0 per
    # iteration, plain cross-entropy, BatchNorm1d(affine=False) + trunc-normal(0.01) head, the released adapter.
    # An epoch is what the official 64 processes run: DistributedSampler pads the shuffled videos to a multiple of 64
    # (AF:main_video.py:195-197, no drop_last) and each process's loader drops its last partial batch of 16
    # (AF:main_video.py:217-223): ceil(N / 64) // 16 updates (`sampler_world`, video_adapt/engine/epochs.py).
    "adaptformer": {
        "train": dict(optimizer="sgd", base_lr=0.1, momentum=0.9, weight_decay=0.0, epochs=90, warmup_epochs=10,
                      min_lr=0.0, schedule="epoch", layer_decay=None, mixup=0.0, cutmix=0.0, label_smoothing=0.0,
                      global_batch=1024, sampler_world=64),
        "model": dict(head_bn=True, head_init_std=0.01, head_init_scale=1.0, drop_path_rate=0.0,
                      adapter_init="official", adapter_input="residual"),
        "data": dict(protocol="adaptformer"),
    },
    # VideoMAE's fine-tuning, SSv2 ViT-B after the 2400-epoch pretraining (VM:scripts/ssv2/..._epoch_2400/finetune.sh):
    # AdamW (0.9, 0.999) through DeepSpeed, lr 5e-4 x batch/256 and min_lr 1e-6 scaled the same way, weight decay
    # 0.05 without 1-D tensors and biases, layer decay 0.75, 30 epochs with 5 of warmup from 0, per-step cosine,
    # drop path 0.1, mixup 0.8 / cutmix 1.0 with label smoothing 0.1, global batch 6 x 64, two augmented copies of
    # each video. The 800-epoch script differs: train.epochs=50 train.global_batch=512 data.num_sample=1.
    # An epoch is floor(N / global batch) updates: the loop skips every iteration past that count
    # (VM:run_class_finetuning.py:405, VM:engine_for_finetuning.py:44-46), whatever its sampler padded
    # (sampler_world 1).
    "videomae": {
        "train": dict(optimizer="adamw", base_lr=5e-4, weight_decay=0.05, epochs=30, warmup_epochs=5, min_lr=1e-6,
                      scale_min_lr=True, schedule="step", layer_decay=0.75, mixup=0.8, cutmix=1.0,
                      label_smoothing=0.1, global_batch=384, betas=[0.9, 0.999], sampler_world=1),
        "model": dict(head_bn=False, head_init_std=0.02, head_init_scale=0.001, drop_path_rate=0.1),
        "data": dict(protocol="videomae"),
    },
}
RECIPE_ALIASES = {"paper": "adaptformer"}  # the name this recipe had before the protocols were made exact

DATASET_RECIPES: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "videomae": {
        # VideoMAE has no HMDB51 script; its UCF101 ViT-B script is the closest official one
        # (VM:scripts/ucf101/videomae_vit_base_patch16_224_tubemasking_ratio_0.75_epoch_3200/finetune.sh; VM's
        # datasets.py:119-179 builds UCF101 and HMDB51 alike): 16 per GPU on 8 GPUs (:9-10,19) = 128, lr 5e-4
        # (:27) and min_lr 1e-5 (:29) both x 128/256, layer decay 0.7 (:30), 100 epochs (:33), head dropout 0.5
        # (:36, --fc_drop_rate), drop path 0.2 (:37). The rest is the SSv2 recipe's: AdamW (0.9, 0.999) (:31), weight
        # decay 0.05 (:32), 5 warmup epochs, mixup, label smoothing and erasing (argparse defaults); the data protocol
        # (stride 4 (:24), num_sample 2 (:25), 5 x 3 test views (:34-35)) is DATA_PROTOCOLS' non-SSv2 one.
        "hmdb51": {"train": dict(global_batch=128, epochs=100, min_lr=1e-5, layer_decay=0.7),
                   "model": dict(drop_path_rate=0.2, head_dropout=0.5)},
    },
}

DATA_PROTOCOLS: dict[str, dict[str, dict[str, Any]]] = {
    # AF:main_video.py:143,188 and AF:datasets/kinetics.py:583-622: S-TSN r = 4 for SSv2 and HMDB51 alike, the
    # multi-scale crop only (no flip, RandAugment or erasing); test T-DENSE r = 4, 4 clips x 3 crops at short side
    # 224 (AF:main_video.py:147-149), raw logits averaged (AF:engine_finetune.py:190-239).
    "adaptformer": {
        "default": dict(sampling="tsn", stride=4, train_crop="msc", flip=False, randaugment=None, reprob=0.0,
                        num_sample=1, test_sampling="dense", test_clips=4, test_crops=3, view_average="logits"),
    },
    # VM:datasets.py:102-116 and VM:ssv2.py: S-SEG, RandAugment + random resized crop (0.08-1) without flip, random
    # erasing 0.25, two copies per video; test T-SSV2 x 3 crops = 6 views, softmax averaged
    # (VM:engine_for_finetuning.py:233-282). Other datasets (VM:datasets.py:163-178, VM:kinetics.py): S-LIN r = 4,
    # flip allowed, T-DENSE 5 x 3.
    "videomae": {
        "ssv2": dict(sampling="seg", stride=1, train_crop="rrc", crop_scale=[0.08, 1.0], flip=False,
                     randaugment=VIDEOMAE_RANDAUGMENT, reprob=0.25, num_sample=2, test_sampling="ssv2", test_clips=2,
                     test_crops=3, view_average="softmax"),
        "default": dict(sampling="lin", stride=4, train_crop="rrc", crop_scale=[0.08, 1.0], flip=True,
                        randaugment=VIDEOMAE_RANDAUGMENT, reprob=0.25, num_sample=2, test_sampling="dense",
                        test_clips=5, test_crops=3, view_average="softmax"),
    },
}


def recipe_name(name: str) -> str:
    return RECIPE_ALIASES.get(name, name)


def recipe_defaults(name: str, dataset: str | None = None) -> dict[str, dict[str, Any]]:
    """The config sections a recipe sets for a dataset kind (copied, so callers may change them)."""
    import copy
    sections = copy.deepcopy(RECIPES[recipe_name(name)])
    for section, values in DATASET_RECIPES.get(recipe_name(name), {}).get(dataset or "", {}).items():
        sections[section].update(copy.deepcopy(values))
    return sections


def check_recipe_dataset(recipe: str, configured: str | None, actual: str) -> None:
    """The per-dataset values of a recipe are picked when the config is read, from `data.dataset`; a config that
    left it unset on data of a kind with its own values would silently train with the other datasets' ones."""
    values = DATASET_RECIPES.get(recipe_name(recipe), {}).get(actual)
    if configured is None and values:
        keys = ", ".join(f"{section}.{key}" for section, table in values.items() for key in table)
        raise ConfigError(f"data.dataset is not set but the data is {actual}, for which recipe {recipe} has its own "
                          f"values ({keys}): set data.dataset={actual} (the files in configs/datasets/ set it)")


def data_protocol(name: str, dataset: str) -> dict[str, Any]:
    """The data settings of protocol `name` for a dataset kind ("ssv2", "hmdb51", "other", ...)."""
    table = DATA_PROTOCOLS[name]
    return dict(table.get(dataset, table["default"]))


PROTOCOL_FIELDS = ("sampling", "stride", "train_crop", "crop_scale", "flip", "randaugment", "reprob", "num_sample",
                   "test_sampling", "test_clips", "test_crops", "view_average")


def apply_data_protocol(data: Any, dataset: str, flip_allowed: bool) -> Any:
    """A DataConfig with every protocol field filled: the value set by the user, else the protocol's for this
    dataset kind. A flip is never drawn where the data says left/right is part of the label."""
    from dataclasses import replace
    if data.protocol not in DATA_PROTOCOLS:
        raise ConfigError(f"unknown config value data.protocol={data.protocol!r} (known: {', '.join(DATA_PROTOCOLS)})")
    table = data_protocol(data.protocol, dataset)
    values = {name: getattr(data, name) if getattr(data, name) is not None else table.get(name)
              for name in PROTOCOL_FIELDS}
    if data.flip is None:
        values["flip"] = bool(values["flip"]) and flip_allowed
    if values["randaugment"] in ("none", ""):
        values["randaugment"] = None
    if values["crop_scale"] is None:
        values["crop_scale"] = [0.08, 1.0]
    short = data.test_short_side if data.test_short_side is not None else data.img_size
    return replace(data, dataset=dataset, test_short_side=short, **values)
