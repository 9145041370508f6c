import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from video_adapt import create_model, load_pretrained
from video_adapt.models.pretrain import PretrainVideoMAE, patchify, pixel_targets, save_pretrain_checkpoint, tube_mask
from video_adapt.pretraining import PretrainConfig, pretrain

ROOT = Path(__file__).resolve().parents[1]
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


def test_loss_falls_and_checkpoint_loads_for_every_method(tmp_path):
    summary = pretrain(PretrainConfig(**NANO, epochs=12, norm_pix_loss=False, out_dir=str(tmp_path)), progress=False)
    losses = summary["losses"]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)["model"]
    assert "encoder.blocks.0.attn.qkv.weight" in ckpt and "decoder.head.weight" in ckpt and "mask_token" in ckpt
    for method in ("adaptformer", "vpt", "linear", "full"):
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


def test_pretrain_tool_runs_from_a_store(synthetic_store, tmp_path):
    out = subprocess.run([sys.executable, "tools/pretrain.py", "--model", "vit_nano_patch8_32", "--frames", "4",
                          "--img-size", "32", "--epochs", "1", "--batch", "8", "--store", str(synthetic_store),
                          "--decoder-dim", "16", "--decoder-depth", "1", "--decoder-heads", "2", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-800:]
    assert "checkpoint:" in out.stdout
    assert json.loads((tmp_path / "pretrain_summary.json").read_text())["steps"] == 3
