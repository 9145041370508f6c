"""The recipes and data protocols against the official code, one setting per assertion, each citing its source.

AF = ShoufaChen/AdaptFormer @6967d67, VM = MCG-NJU/VideoMAE @14ef8d8; docs/PROTOCOLS.md lists the rows.
"""
from dataclasses import replace

import pytest
import torch

from video_adapt import create_model
from video_adapt.config import DataConfig, load_config
from video_adapt.engine import builders
from video_adapt.engine.data import DataFacts, epoch_updates, resolve_data as resolve_run_data
from video_adapt.engine.loop import accumulation
from video_adapt.engine.precision import Precision, autocast_dtype
from video_adapt.errors import ConfigError
from video_adapt.recipes import apply_data_protocol, check_recipe_dataset, data_protocol
from conftest import ROOT

UCF101 = "VM:scripts/ucf101/videomae_vit_base_patch16_224_tubemasking_ratio_0.75_epoch_3200/finetune.sh"


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
    assert m.head_dropout == 0.0  # no dropout before the head (AF:models/vit_video.py:317-320)
    assert t.clip_grad is None  # max_norm=None (AF:main_video.py:405)
    assert t.sampler_world == 64  # 8 x 8 processes (AF:README.md:43-45), padded by DistributedSampler (:195-197)
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
    assert m.drop_path_rate == 0.1  # --drop_path default (VM:run_class_finetuning.py:47), VM:modeling_finetune.py:217
    assert m.head_dropout == 0.0  # --fc_drop_rate default 0 (VM:run_class_finetuning.py:41)
    assert t.clip_grad is None  # --clip_grad default None (VM:run_class_finetuning.py:62); no --model_ema (:51)
    assert t.sampler_world == 1  # the loop stops at floor(N / batch) steps (VM:engine_for_finetuning.py:44-46)
    # the same values for every dataset kind but HMDB51 (below)
    assert recipe("videomae", "data.dataset=ssv2").train == t and recipe("videomae", "data.dataset=other").model == m


def test_videomae_recipe_on_hmdb51_is_the_ucf101_script():
    """VideoMAE released no HMDB51 script; its UCF101 ViT-B script is the closest official one (UCF101, cited by
    line below), and VM:datasets.py:119-179 builds UCF101 and HMDB51 with the same code."""
    cfg = recipe("videomae", "data.dataset=hmdb51")
    t, m = cfg.train, cfg.model
    assert t.global_batch == 16 * 8  # --batch_size 16 (:19) on 8 GPUs (:9-10), update_freq 1
    assert (t.base_lr, t.min_lr, t.scale_min_lr) == (5e-4, 1e-5, True)  # --lr (:27), --min_lr (:29), both x B/256
    assert t.layer_decay == 0.7  # --layer_decay 0.7 (:30)
    assert t.epochs == 100  # --epochs 100 (:33)
    assert t.warmup_epochs == 5  # not passed: the default (VM:run_class_finetuning.py:81); --warmup_lr (:28) is inert
    assert (t.optimizer, t.betas, t.weight_decay) == ("adamw", [0.9, 0.999], 0.05)  # --opt (:26), :31, :32
    assert m.drop_path_rate == 0.2  # --drop_path 0.2 (:37)
    assert m.head_dropout == 0.5  # --fc_drop_rate 0.5 (:36): VM:modeling_finetune.py:226,284
    # not passed: the defaults (VM:run_class_finetuning.py:93,115-117)
    assert (t.mixup, t.cutmix, t.label_smoothing) == (0.8, 1.0, 0.1)
    assert t.sampler_world == 1 and t.schedule == "step"
    protocol = data_protocol(cfg.data.protocol, "hmdb51")  # the data protocol is the non-SSv2 one
    assert (protocol["sampling"], protocol["stride"]) == ("lin", 4)  # --sampling_rate 4 (:24), VM:datasets.py:163-178
    assert protocol["num_sample"] == 2 and protocol["flip"]  # --num_sample 2 (:25)
    assert (protocol["test_clips"], protocol["test_crops"]) == (5, 3)  # --test_num_segment 5 --test_num_crop 3 (:34-35)
    # lr and min_lr x 128 / 256 (VM:run_class_finetuning.py:406-407)
    run = accumulation(cfg, world_size=1)
    assert run.train.accum_steps == 4  # 32 x 4 = 128 on one process
    assert builders.learning_rate(run, 128) == pytest.approx(2.5e-4)
    schedule = builders.build_schedule(run, 2.5e-4, 128, epoch_updates(run, 3570, world_size=1))
    assert schedule.min_lr == pytest.approx(5e-6)
    # HMDB51 split 1 (3570 training videos): floor(3570 / 128) = 27 updates an epoch (VM:run_class_finetuning.py:405),
    # 2700 in 100 epochs (the SSv2 recipe gave 9 x 30 = 270)
    assert schedule.steps_per_epoch == 27 and schedule.epochs * schedule.steps_per_epoch == 2700
    assert epoch_updates(accumulation(recipe("videomae"), 1), 3570, 1) * recipe("videomae").train.epochs == 270
    # the shipped HMDB51 configs name the dataset kind, so the recipe picks these values; explicit keys still win
    for split in (1, 2, 3):
        shipped = load_config(ROOT / "video_adapt" / "configs" / f"hmdb51_split{split}" / "full_16f.yaml", ["train.recipe=videomae"])
        assert (shipped.train.epochs, shipped.train.layer_decay, shipped.model.head_dropout) == (100, 0.7, 0.5)
    assert recipe("videomae", "data.dataset=hmdb51", "train.epochs=7", "model.head_dropout=0").train.epochs == 7
    # AdaptFormer's recipe has one set of values for SSv2 and HMDB51 (AF:main_video.py:182-187)
    assert recipe("adaptformer", "data.dataset=hmdb51").train == recipe("adaptformer").train


def test_a_recipe_with_dataset_values_stops_on_data_whose_kind_the_config_did_not_name():
    """The per-dataset values are picked when the config is read, from data.dataset: a store that says hmdb51 under
    a config without data.dataset would otherwise train HMDB51 with the SSv2 script's values."""
    with pytest.raises(ConfigError, match="data.dataset is not set but the data is hmdb51.*train.epochs"):
        check_recipe_dataset("videomae", None, "hmdb51")
    check_recipe_dataset("videomae", "hmdb51", "hmdb51")
    check_recipe_dataset("videomae", None, "ssv2")  # SSv2's are the recipe's defaults
    check_recipe_dataset("adaptformer", None, "hmdb51")  # no per-dataset values
    facts = DataFacts(classes=["a", "b"], dataset="hmdb51", flip_allowed=True)
    with pytest.raises(ConfigError, match="set data.dataset=hmdb51"):
        resolve_run_data(recipe("videomae"), facts)
    assert resolve_run_data(recipe("videomae", "data.dataset=hmdb51"), facts).data.sampling == "lin"


def test_head_dropout_sits_between_fc_norm_and_the_head():
    """VM:modeling_finetune.py:226,284: head(fc_dropout(fc_norm(mean token))); active only in training."""
    cfg = recipe("videomae", "data.dataset=hmdb51", "model.name=vit_nano_patch8_32", "model.pretrained=none",
                 "model.tuning=full")
    model, _ = builders.build_model(cfg, num_classes=3)
    assert model.head_dropout.p == 0.5
    seen = {}
    model.fc_norm.register_forward_hook(lambda _m, _i, out: seen.__setitem__("norm", out.detach()))
    model.head.register_forward_pre_hook(lambda _m, args: seen.__setitem__("head", args[0].detach()))
    x = torch.randn(64, 3, cfg.data.num_frames, 32, 32)
    model.train()
    model(x)
    kept = seen["head"] != 0
    torch.testing.assert_close(seen["head"][kept], 2 * seen["norm"][kept])  # survivors scaled by 1 / (1 - p)
    assert 0.4 < 1 - kept.float().mean().item() < 0.6  # about half dropped
    model.eval()
    model(x)
    torch.testing.assert_close(seen["head"], seen["norm"])


def test_amp_default_is_bf16_where_the_gpu_has_it_and_fp16_is_the_official_setting(monkeypatch):
    """Both official runs use fp16 with loss scaling (AF:engine_finetune.py:58 with NativeScaler, AF:main_video.py:374;
    VM's DeepSpeed config, VM:utils.py:503-508); train.amp=auto picks bf16 where supported, which needs no scaler."""
    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert recipe("adaptformer").train.amp == recipe("videomae").train.amp == "auto"
    auto = Precision.create(cuda, "auto")
    assert auto.dtype == torch.bfloat16 and auto.scaler is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype(cuda, "auto") == torch.float16  # an older GPU: fp16, which Precision pairs with a scaler
    official = Precision.create(torch.device("cpu"), "fp16")  # train.amp=fp16: the official setting, scaled
    assert official.dtype == torch.float16 and official.scaler is not None


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
    resolved = apply_data_protocol(data, "hmdb51", flip_allowed=False)
    assert resolved.test_clips == 7 and resolved.randaugment is None  # set by the user
    assert resolved.flip is False  # the protocol's flip, refused by the store (SSv2-like labels)
    assert resolved.test_short_side == resolved.img_size == 224  # VM/AF: short side 224, crop 224
    assert apply_data_protocol(DataConfig(protocol="videomae"), "hmdb51", flip_allowed=True).flip is True
    assert apply_data_protocol(DataConfig(protocol="videomae", flip=False), "hmdb51", flip_allowed=True).flip is False


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
    cfg = accumulation(recipe("videomae"), world_size=1)
    steps = epoch_updates(cfg, 168913, world_size=1)
    assert steps == 168913 // 384 == 439  # VM:run_class_finetuning.py:405
    schedule = builders.build_schedule(cfg, peak=7.5e-4, global_batch=384, steps_per_epoch=steps)
    assert schedule.steps_per_epoch == 439
    assert schedule.min_lr == pytest.approx(1e-6 * 384 / 256)  # VM:run_class_finetuning.py:407
    af_cfg = accumulation(recipe("adaptformer"), world_size=1)
    af = builders.build_schedule(af_cfg, peak=0.4, global_batch=1024,
                                 steps_per_epoch=epoch_updates(af_cfg, 168913, world_size=1))
    assert af.kind == "epoch" and af.min_lr == 0.0 and af.steps_per_epoch == 165  # ceil(168913 / 64) // 16


@pytest.mark.parametrize("name", ["adaptformer", "videomae"])
def test_heads_are_initialised_as_each_recipe(name):
    cfg = recipe(name, "model.name=vit_small_patch16_224", "model.tuning=linear", "model.pretrained=none")
    torch.manual_seed(0)
    model, _ = builders.build_model(replace(cfg, model=replace(cfg.model, arch={"depth": 1})), num_classes=1000)
    w = model.head.weight.detach()
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
