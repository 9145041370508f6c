"""The recipes and data protocols against the official code, one setting per assertion, each citing its source.

AF = ShoufaChen/AdaptFormer @6967d67, VM = MCG-NJU/VideoMAE @14ef8d8 (../shared/PROTOCOLS.md).
"""
from dataclasses import replace

import pytest
import torch

from video_adapt import create_model
from video_adapt.config import DataConfig, load_config
from video_adapt.engine import builders
from video_adapt.engine.loop import accumulation
from video_adapt.errors import ConfigError
from video_adapt.recipes import data_protocol, resolve_data


def recipe(name: str, *overrides: str):
    return load_config(None, [f"train.recipe={name}", *overrides])


def test_adaptformer_recipe_is_the_released_code():
    cfg = recipe("adaptformer")
    t, m, d = cfg.train, cfg.model, cfg.data
    assert (t.optimizer, t.momentum) == ("sgd", 0.9)  # AF:main_video.py:50-53 (SGD, momentum 0.9, no Nesterov)
    assert t.base_lr == 0.1 and t.lr is None  # --blr 0.1 (AF:README.md:43-51), lr = blr x batch / 256 (:358-361)
    assert t.weight_decay == 0.0 and t.layer_decay is None  # --weight_decay 0.0; no layer decay
    assert (t.epochs, t.warmup_epochs, t.min_lr, t.schedule) == (90, 10, 0.0, "epoch")  # AF:main_video.py:75,78
    assert t.global_batch == 16 * 64  # 16 per GPU on 8 x 8 GPUs (AF:README.md:43-51)
    assert (t.mixup, t.cutmix, t.label_smoothing) == (0.0, 0.0, 0.0)  # plain cross-entropy (AF:main_video.py:376)
    assert m.head_bn and (m.head_init_std, m.head_init_scale) == (0.01, 1.0)  # AF:main_video.py:334,337
    assert (m.adapter_input, m.adapter_init) == ("residual", "official")  # AF:main_video.py:242-250, note 1
    assert m.drop_path_rate == 0.0  # AF:main_video.py:128-133
    assert d.protocol == "adaptformer"


def test_videomae_recipe_is_the_ssv2_script():
    cfg = recipe("videomae")
    t, m = cfg.train, cfg.model
    assert t.optimizer == "adamw" and t.betas == [0.9, 0.999]  # DeepSpeed's AdamW (VM:utils.py:482-509)
    assert (t.base_lr, t.min_lr, t.scale_min_lr) == (5e-4, 1e-6, True)  # VM:run_class_finetuning.py:404-407
    assert (t.weight_decay, t.layer_decay) == (0.05, 0.75)  # finetune.sh; VM:optim_factory.py:24-61
    assert (t.epochs, t.warmup_epochs, t.schedule) == (30, 5, "step")  # finetune.sh (2400-epoch pretrain)
    assert t.global_batch == 6 * 64  # --batch_size 6 on 64 GPUs
    assert (t.mixup, t.cutmix, t.label_smoothing) == (0.8, 1.0, 0.1)  # VM:run_class_finetuning.py:115-125
    assert not m.head_bn and (m.head_init_std, m.head_init_scale) == (0.02, 0.001)  # VM:modeling_finetune.py:276-285
    assert m.drop_path_rate == 0.1  # VM:modeling_finetune.py:217


def test_the_old_recipe_name_still_means_adaptformers():
    assert recipe("paper").train.recipe == "adaptformer"


@pytest.mark.parametrize("protocol,dataset,expected", [
    # AF:main_video.py:143,188 (S-TSN r = 4 for SSv2 and HMDB51), :147-149 (4 x 3 at 224), MSC without flip
    # (AF:datasets/kinetics.py:583-599), logits averaged (AF:engine_finetune.py:190-239)
    ("adaptformer", "ssv2", dict(sampling="tsn", stride=4, train_crop="msc", flip=False, randaugment=None,
                                 reprob=0.0, num_sample=1, test_sampling="dense", test_clips=4, test_crops=3,
                                 view_average="logits")),
    ("adaptformer", "hmdb51", dict(sampling="tsn", stride=4, train_crop="msc", flip=False, test_clips=4)),
    # VM:datasets.py:102-116 (S-SEG), VM:ssv2.py (VM-AUG, no flip, T-SSV2 x 3), num_sample 2, softmax averaged
    ("videomae", "ssv2", dict(sampling="seg", train_crop="rrc", crop_scale=[0.08, 1.0], flip=False,
                              randaugment="rand-m7-n4-mstd0.5-inc1", reprob=0.25, num_sample=2, test_sampling="ssv2",
                              test_clips=2, test_crops=3, view_average="softmax")),
    # VM:datasets.py:163-178 (S-LIN, r default 4), flip allowed, T-DENSE 5 x 3 (VM:run_class_finetuning.py:101-102)
    ("videomae", "hmdb51", dict(sampling="lin", stride=4, flip=True, test_sampling="dense", test_clips=5,
                                test_crops=3, num_sample=2, view_average="softmax")),
])
def test_data_protocols(protocol, dataset, expected):
    table = data_protocol(protocol, dataset)
    for key, value in expected.items():
        assert table[key] == value, key


def test_explicit_values_win_and_flips_never_where_left_right_matters():
    data = DataConfig(protocol="videomae", test_clips=7, randaugment="none")
    resolved = resolve_data(data, "hmdb51", flip_allowed=False)
    assert resolved.test_clips == 7 and resolved.randaugment is None  # set by the user
    assert resolved.flip is False  # the protocol's flip, refused by the store (SSv2-like labels)
    assert resolved.test_short_side == resolved.img_size == 224  # VM/AF: short side 224, crop 224
    assert resolve_data(DataConfig(protocol="videomae"), "hmdb51", flip_allowed=True).flip is True
    assert resolve_data(DataConfig(protocol="videomae", flip=False), "hmdb51", flip_allowed=True).flip is False


def test_global_batch_is_reached_by_accumulation_and_lr_counts_videos():
    cfg = recipe("adaptformer", "data.batch_size=32")
    run = accumulation(cfg, world_size=8)
    assert run.train.accum_steps == 4  # 32 x 8 GPUs x 4 = 1024, the official 16 x 64
    assert builders.learning_rate(run, 32 * 4 * 8) == pytest.approx(0.4)  # 0.1 x 1024 / 256 (PROTOCOLS.md section 1)
    vm = accumulation(recipe("videomae", "data.batch_size=6"), world_size=8)
    assert vm.train.accum_steps == 8  # 6 x 8 x 8 = 384
    # the two augmented copies of each video do not count (VM:run_class_finetuning.py:404-405)
    assert builders.learning_rate(vm, 384) == pytest.approx(5e-4 * 384 / 256)
    with pytest.raises(ConfigError, match="not a multiple"):
        accumulation(recipe("adaptformer", "data.batch_size=24"), world_size=1)


def test_videomae_schedule_uses_the_official_steps_per_epoch_and_scaled_min_lr():
    cfg = recipe("videomae")
    schedule = builders.build_schedule(cfg, peak=7.5e-4, global_batch=384, train_videos=168913, loader_steps=999)
    assert schedule.steps_per_epoch == 168913 // 384  # VM:run_class_finetuning.py:405
    assert schedule.min_lr == pytest.approx(1e-6 * 384 / 256)  # VM:run_class_finetuning.py:407
    af = builders.build_schedule(recipe("adaptformer"), peak=0.4, global_batch=1024, train_videos=168913,
                                 loader_steps=164)
    assert af.kind == "epoch" and af.min_lr == 0.0


@pytest.mark.parametrize("name", ["adaptformer", "videomae"])
def test_heads_are_initialised_as_each_recipe(name):
    cfg = recipe(name, "model.name=vit_small_patch16_224", "model.tuning=linear", "model.pretrained=none")
    torch.manual_seed(0)
    model, _ = builders.build_model(replace(cfg, model=replace(cfg.model, arch={"depth": 1})), num_classes=1000)
    w = model.head.weight
    assert torch.count_nonzero(model.head.bias) == 0
    expected = 0.01 if name == "adaptformer" else 0.02 * 0.001
    assert float(w.std()) == pytest.approx(expected, rel=0.05)
    assert (model.head_bn is not None) == (name == "adaptformer")
    if model.head_bn is not None:  # BatchNorm1d(affine=False, eps 1e-6) (AF:main_video.py:337)
        assert model.head_bn.affine is False and model.head_bn.eps == 1e-6


def _official_layer_scale(name: str, depth: int, decay: float) -> float:
    """VM:optim_factory.py:24-46 `get_num_layer_for_vit` with LayerDecayValueAssigner(decay ** (depth + 1 - i))."""
    if name.startswith("patch_embed"):
        layer = 0
    elif name.startswith("blocks"):
        layer = int(name.split(".")[1]) + 1
    else:
        layer = depth + 1
    return decay ** (depth + 1 - layer)


@pytest.mark.parametrize("tuning", ["full", "adaptformer"])
def test_videomae_param_groups_decay_and_layer_scales_are_the_official_ones(tuning):
    cfg = recipe("videomae", f"model.tuning={tuning}")
    model = create_model("vit_nano_patch8_32", num_classes=5, tuning=tuning, depth=3, bottleneck=4)
    optimizer = builders.build_optimizer(model, cfg, lr=1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            seen.add(name)
            # no decay for 1-D tensors and biases (VM:optim_factory.py:49-61)
            no_decay = p.ndim == 1 or name.endswith(".bias")
            assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
            assert group["lr_scale"] == pytest.approx(_official_layer_scale(name, 3, 0.75)), name
    assert seen == {n for n, p in model.named_parameters() if p.requires_grad}
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8


def test_adaptformer_param_groups_have_no_decay_and_no_layer_scale():
    cfg = recipe("adaptformer")
    model = create_model("vit_nano_patch8_32", num_classes=5, tuning="adaptformer", bottleneck=4)
    optimizer = builders.build_optimizer(model, cfg, lr=0.4)
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(g["weight_decay"] == 0.0 and g.get("lr_scale", 1.0) == 1.0 for g in optimizer.param_groups)
    assert optimizer.defaults["momentum"] == 0.9 and not optimizer.defaults["nesterov"]


# what trains, per method (AF:main_video.py:153-157,338-348: missing keys + fc_norm + head)
TRAINED = {"linear": {"head", "fc_norm"}, "vpt": {"head", "fc_norm", "token_prompts"},
           "adaptformer": {"head", "fc_norm", "mlp_adapter"}, "full": {"everything"}}


@pytest.mark.parametrize("name", ["adaptformer", "videomae"])
@pytest.mark.parametrize("tuning", list(TRAINED))
def test_each_method_trains_the_same_set_under_each_recipe(name, tuning):
    cfg = recipe(name, f"model.tuning={tuning}", "model.name=vit_nano_patch8_32", "model.pretrained=none")
    model, _ = builders.build_model(cfg, num_classes=4)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    if tuning == "full":
        assert trained == {n for n, _ in model.named_parameters()}
        return
    tags = TRAINED[tuning]
    assert trained and all(any(t in n for t in tags) for n in trained)
    assert all(any(n.startswith(f"{t}.") or f".{t}." in n for n in trained) for t in tags)


def test_frozen_methods_refuse_a_missing_backbone_and_accept_an_explicit_control():
    with pytest.raises(ConfigError, match="model.pretrained is not set"):
        builders.check_backbone(recipe("adaptformer", "model.tuning=vpt"))
    builders.check_backbone(recipe("adaptformer", "model.tuning=vpt", "model.pretrained=none"))
    builders.check_backbone(recipe("adaptformer", "model.tuning=full"))  # full fine-tuning may start from scratch
