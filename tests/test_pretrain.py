import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from video_adapt import create_model, load_pretrained
from video_adapt.config import ConfigError
from video_adapt.engine.precision import Precision
from video_adapt.models.mae import PretrainVideoMAE, patchify, pixel_targets, tube_mask
from video_adapt.models.methods import METHODS
from video_adapt.pretraining import (
    PretrainConfig,
    build_pretrain_model,
    build_pretrain_updater,
    load_pretrain_config,
    pretrain,
)

NANO = dict(model="vit_nano_patch8_32", num_frames=4, img_size=32, decoder_dim=16, decoder_depth=1, decoder_heads=2,
            batch_size=8, synthetic_clips=32, synthetic_size=32, lr=2e-2, warmup_epochs=0)


def test_tube_mask_is_the_same_in_every_time_slice():
    mask = tube_mask(3, (4, 4, 4), 0.75, torch.Generator().manual_seed(0))
    assert mask.shape == (3, 64) and mask.dtype == torch.bool
    slices = mask.view(3, 4, 16)
    assert (slices == slices[:, :1]).all()
    assert (slices.sum(-1) == 12).all()
    assert not torch.equal(slices[0, 0], slices[1, 0])
    with pytest.raises(ValueError, match="no visible"):
        tube_mask(1, (1, 2, 2), 1.0)


def test_patchify_follows_token_order_and_targets_are_normalised():
    x = torch.arange(2 * 4 * 16 * 16, dtype=torch.float32).view(1, 1, 2 * 4, 16, 16).expand(1, 3, 8, 16, 16)
    patches = patchify(x, 2, 8)
    assert patches.shape == (1, 4 * 2 * 2, 2 * 8 * 8, 3)
    assert patches[0, 1, 0, 0] == x[0, 0, 0, 0, 8]  # token 1 = first tubelet, second patch column
    targets = pixel_targets(torch.randn(2, 3, 4, 16, 16), 2, 8)
    per_patch = targets.view(2, 8, 128, 3)
    assert torch.allclose(per_patch.mean(2), torch.zeros(2, 8, 3), atol=1e-5)


@pytest.mark.slow
def test_loss_falls_and_checkpoint_loads_for_every_method(tmp_path):
    summary = pretrain(PretrainConfig(**NANO, epochs=12, norm_pix_loss=False, out_dir=str(tmp_path)), progress=False)
    losses = summary["losses"]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)["model"]
    assert "encoder.blocks.0.attn.qkv.weight" in ckpt and "decoder.head.weight" in ckpt and "mask_token" in ckpt
    for method in METHODS:
        model = create_model("vit_nano_patch8_32", num_classes=3, tuning=method)
        report = load_pretrained(model, tmp_path / "checkpoint.pth")
        assert "encoder_to_decoder.weight" in report.ignored
    # the loaded backbone computes what the pretrained encoder computes on all tokens
    mae = PretrainVideoMAE("vit_nano_patch8_32", decoder_dim=16, decoder_depth=1, decoder_heads=2)
    mae.load_state_dict(ckpt)
    model = create_model("vit_nano_patch8_32", num_classes=3, tuning="linear", use_mean_pooling=False)
    load_pretrained(model, tmp_path / "checkpoint.pth")
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(mae.encoder.forward_tokens(mae.encoder.embed(x)),
                              model.eval().forward_tokens(model.embed(x)), atol=1e-6)


@pytest.mark.slow
def test_resumed_pretraining_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    import video_adapt.pretraining as loop
    straight = pretrain(PretrainConfig(**NANO, epochs=3, out_dir=str(tmp_path / "a")), progress=False)
    real_save, calls = loop.save_pretrain_checkpoint, []

    def killed_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(loop, "save_pretrain_checkpoint", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        pretrain(PretrainConfig(**NANO, epochs=3, out_dir=str(tmp_path / "b")), progress=False)
    monkeypatch.setattr(loop, "save_pretrain_checkpoint", real_save)
    resumed = pretrain(PretrainConfig(**NANO, epochs=3, out_dir=str(tmp_path / "b")), progress=False)
    assert resumed["losses"] == straight["losses"]
    a = torch.load(tmp_path / "a" / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_pretrain_tool_runs_from_a_store(synthetic_store, tmp_path):
    out = subprocess.run([sys.executable, "-m", "video_adapt", "pretrain", "model=vit_nano_patch8_32", "num_frames=4",
                          "img_size=32", "epochs=1", "batch_size=8", f"store={synthetic_store}",
                          "decoder_dim=16", "decoder_depth=1", "decoder_heads=2", f"out_dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-800:]
    assert "checkpoint:" in out.stdout
    assert json.loads((tmp_path / "pretrain_summary.json").read_text())["steps"] == 3


def test_pretraining_decays_only_matrices_not_biases_norms_or_the_mask_token():
    """VideoMAE pretraining keeps 1-D tensors, `.bias` and `mask_token` out of weight decay
    (VM:optim_factory.py:49-61, VM:modeling_pretrain.py:268-269); every other weight decays by weight_decay."""
    cfg = PretrainConfig(**NANO)
    model = build_pretrain_model(cfg)
    updater = build_pretrain_updater(model, cfg, steps_per_epoch=4, device=torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = updater.optimizer.param_groups
    held = [names[id(p)] for g in groups for p in g["params"]]
    assert sorted(held) == sorted(names.values())
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all(g["weight_decay"] in (0.0, cfg.weight_decay) for g in groups)
    assert "mask_token" not in decayed and not any(n.endswith(".bias") for n in decayed)
    assert all(model.get_parameter(n).ndim > 1 for n in decayed)
    assert {"encoder.blocks.0.attn.qkv.weight", "decoder.head.weight", "encoder_to_decoder.weight"} <= decayed
    assert updater.optimizer.defaults["betas"] == (0.9, 0.95)
    # no layer decay (VM:run_mae_pretraining.py:205-206 passes none to create_optimizer), drop path 0 (--drop_path
    # default 0.0, VM:run_mae_pretraining.py:41,126)
    assert all(g.get("lr_scale", 1.0) == 1.0 for g in groups)
    assert all(isinstance(b.drop_path, torch.nn.Identity) for b in [*model.encoder.blocks, *model.decoder.blocks])


@pytest.mark.slow
def test_fp16_always_comes_with_a_gradient_scaler(tmp_path, monkeypatch):
    """fp16 autocast without loss scaling underflows small gradients; pretraining used to run it unscaled. It never
    clips gradients (--clip_grad default None, VM:run_mae_pretraining.py:54)."""
    def no_clipping(*args, **kwargs):
        raise AssertionError("pretraining clipped gradients")
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", no_clipping)
    cpu = torch.device("cpu")
    assert Precision.create(cpu, "fp16").scaler is not None
    assert Precision.create(cpu, "bf16").scaler is None and Precision.create(cpu, "auto").dtype is None
    summary = pretrain(PretrainConfig(**NANO, epochs=1, amp="fp16", out_dir=str(tmp_path)), progress=False)
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["scaler"] is not None and state["scaler"]["scale"] > 0
    assert summary["steps"] == 4 and summary["final_loss"] == summary["final_loss"]  # finite, not NaN


def test_pretrain_config_values_are_checked_like_training_ones(tmp_path):
    (tmp_path / "p.yaml").write_text("epochs: 3\nmask_ratio: 0.75\n")
    cfg = load_pretrain_config(tmp_path / "p.yaml", ["lr=1e-3", "arch={depth: 1}"])
    assert (cfg.epochs, cfg.mask_ratio, cfg.lr, cfg.arch) == (3, 0.75, 0.001, {"depth": 1})
    for override, message in [("batch_size=abc", "'batch_size' expects int"), ("mask_ratio=1.5", "mask_ratio=1.5"),
                              ("decoder=3", "unknown config key 'decoder'"), ("model=vit_x", "model='vit_x'")]:
        with pytest.raises(ConfigError, match=message):
            load_pretrain_config(None, [override])


def test_pretraining_defaults_are_the_official_vit_b_ssv2_run():
    """VM:scripts/ssv2/videomae_vit_base_patch16_224_tubemasking_ratio_0.9_epoch_800/pretrain.sh and the argparse
    defaults of VM:run_mae_pretraining.py:64-72."""
    cfg = PretrainConfig()
    assert (cfg.model, cfg.num_frames, cfg.img_size, cfg.sampling_rate) == ("vit_base_patch16_224", 16, 224, 2)
    assert (cfg.mask_ratio, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads) == (0.9, 384, 4, 6)
    assert (cfg.lr, cfg.min_lr, cfg.warmup_epochs, cfg.weight_decay, cfg.batch_size) == (1.5e-4, 1e-5, 40, 0.05, 32)
    # lr and min_lr scale with the batch (VM:run_mae_pretraining.py:193-194): 1.2e-3 and 8e-5 at 32 x 64
    updater = build_pretrain_updater(build_pretrain_model(PretrainConfig(**NANO)),
                                     PretrainConfig(**{**NANO, "batch_size": 2048, "lr": 1.5e-4, "warmup_epochs": 40,
                                                       "epochs": 800}), steps_per_epoch=10,
                                     device=torch.device("cpu"))
    schedule = updater.schedule
    assert schedule.peak == pytest.approx(1.2e-3) and schedule.min_lr == pytest.approx(8e-5)
    assert schedule.kind == "step" and schedule.at_step(0) == 0.0  # warmup from 0 (PROTOCOLS.md note 3)


def test_pretraining_init_is_videomaes():
    """Every encoder/decoder Linear Xavier-uniform with zero bias; the mask token trunc-normal(0.02) clipped at
    +-0.02; encoder_to_decoder and the tubelet Conv3d at PyTorch's defaults (VM:modeling_pretrain.py:14-15, 65-72,
    137, 246-252)."""
    torch.manual_seed(0)
    model = PretrainVideoMAE("vit_small_patch16_224", decoder_dim=192, decoder_depth=1, decoder_heads=3, depth=2,
                             num_frames=4, img_size=32).requires_grad_(False)  # the weights are only read
    qkv = model.encoder.blocks[0].attn.qkv.weight
    fan_in, fan_out = qkv.shape[1], qkv.shape[0]
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert float(qkv.abs().max()) <= bound and float(qkv.std()) == pytest.approx(bound / 3 ** 0.5, rel=0.05)
    fc2 = model.decoder.blocks[0].mlp.fc2
    assert float(fc2.weight.abs().max()) <= (6 / sum(fc2.weight.shape)) ** 0.5 and torch.count_nonzero(fc2.bias) == 0
    assert float(model.mask_token.abs().max()) <= 0.02 and float(model.mask_token.std()) > 0.005
    e2d = model.encoder_to_decoder.weight  # nn.Linear's default: kaiming_uniform(a=sqrt(5)) -> bound 1/sqrt(fan_in)
    default = 1 / e2d.shape[1] ** 0.5  # half Xavier's bound for this shape, so the two are told apart by the std
    assert float(e2d.abs().max()) <= default and float(e2d.std()) == pytest.approx(default / 3 ** 0.5, rel=0.05)


def test_pretraining_clips_are_fresh_stsn_samples_with_the_multiscale_crop(synthetic_store):
    """VM:datasets.py:9-20, 38-54: S-TSN at the sampling rate and GroupMultiScaleCrop, no flip."""
    from video_adapt.pretraining import StoreClips
    clips = StoreClips(str(synthetic_store), num_frames=4, img_size=32, stride=2, seed=0)
    view = clips.inner.view
    assert (view.sampling, view.stride, view.crop, view.flip, view.randaugment) == ("tsn", 2, "msc", False, None)
    first = clips[0]
    clips.set_epoch(1)
    assert first.shape == (3, 4, 32, 32) and not torch.equal(first, clips[0])
