"""Saved-tensor counting and the GPU memory estimate (tools/bench_memory.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from video_adapt import create_model
from video_adapt.models.memory import MemoryEstimate, estimate_training_memory, saved_tensor_bytes, state_bytes

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(embed_dim=64, depth=3, num_heads=2, num_classes=5)


def _model(**kw):
    torch.manual_seed(0)
    return create_model("vit_nano_patch8_32", **TINY, **kw).train()


def test_saved_bytes_by_hand_for_a_linear_layer():
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)
    # addmm keeps its input (for the weight gradient); the weight itself is not counted
    assert saved_tensor_bytes(layer, x) == 4 * 16 * 4
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    assert saved_tensor_bytes(layer, x) == 0  # frozen weights: the input gradient needs only the weight


@pytest.mark.parametrize("tuning", ["full", "adaptformer"])
def test_estimate_counted_at_two_frames_matches_counting_at_eight(tuning):
    model = _model(tuning=tuning)
    estimate = estimate_training_memory(model, num_frames=8, img_size=32, amp=torch.bfloat16)
    one = saved_tensor_bytes(model, torch.randn(1, 3, 8, 32, 32), torch.bfloat16)
    two = saved_tensor_bytes(model, torch.randn(2, 3, 8, 32, 32), torch.bfloat16)
    per_block_transient = (two - one) / 3
    assert estimate.per_clip == pytest.approx((two - one) + per_block_transient, rel=0.01)
    assert estimate.state == state_bytes(model)


def test_checkpointing_and_adapters_shrink_the_estimate():
    per_clip = {(t, c): estimate_training_memory(_model(tuning=t, use_checkpoint=c), 8, 32).per_clip
                for t in ("full", "adaptformer") for c in (False, True)}
    assert per_clip[("full", True)] < per_clip[("full", False)]
    assert per_clip[("adaptformer", True)] < per_clip[("adaptformer", False)]
    assert per_clip[("adaptformer", False)] < per_clip[("full", False)]


def test_largest_batch_arithmetic():
    estimate = MemoryEstimate(state=2 * 2**30, fixed=2**30, per_clip=2**30)
    assert estimate.total(3) == 6 * 2**30
    # (24e9 - 1.5 GiB) * 0.9 = 20.15e9 usable; minus 3 GiB leaves 16.93e9 bytes = 15.8 clips of 1 GiB
    assert estimate.largest_batch(int(24e9)) == 15
    assert estimate.largest_batch(int(80e9)) > 3 * estimate.largest_batch(int(24e9))
    assert estimate.largest_batch(2**30) == 0


def test_bench_memory_smoke(tmp_path):
    out = subprocess.run([sys.executable, "tools/bench_memory.py", "--smoke", "--json", str(tmp_path / "m.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    rows = json.loads((tmp_path / "m.json").read_text())
    fits = {(r["method"], r["checkpointing"]): (r["batch @ 24 GB"], r["batch @ 80 GB"]) for r in rows}
    for small, large in fits.values():
        assert 0 < small <= large
    assert fits[("full", True)][0] > fits[("full", False)][0]
    assert fits[("adaptformer", False)][0] > fits[("full", False)][0]
    assert "largest batch, 24 GB" in out.stdout
