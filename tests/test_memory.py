"""Exact peak memory of a training step and the GPU fit estimate (tools/bench_memory.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from video_adapt import create_model
from video_adapt.models.memory import Bilinear, MemoryEstimate, estimate_training_memory, peak_step_bytes

ROOT = Path(__file__).resolve().parents[1]


def _build(tuning: str, checkpointing: bool = False):
    def build(depth: int):
        torch.manual_seed(0)
        return create_model("vit_nano_patch8_32", embed_dim=64, depth=depth, num_heads=2, num_classes=5,
                            tuning=tuning, use_checkpoint=checkpointing)
    return build


def test_peak_of_a_linear_layer_by_hand():
    layer = torch.nn.Linear(1000, 1000)  # 4 MB of weight
    clips = torch.randn(8, 1000)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x)

    backward, update = peak_step_bytes(Model(), clips, amp=None)
    weights = 4 * (1000 * 1000 + 1000)
    # backward: weights + AdamW's two moments + all gradients at once, plus the input, the output and (the bound's
    # one overcount) the largest single gradient while it is being made
    assert 4 * weights <= backward < 5 * weights + 2**20
    # update: the same, plus the foreach step's weight-sized temporaries
    assert 4 * weights <= update <= 6 * weights + 2**20


@pytest.mark.slow
@pytest.mark.parametrize("tuning,checkpointing", [("full", False), ("adaptformer", False), ("adaptformer", True)])
def test_two_and_three_block_fit_predicts_a_deeper_model_at_a_larger_batch(tuning, checkpointing):
    build = _build(tuning, checkpointing)
    estimate = estimate_training_memory(build, depth=6, num_frames=8, img_size=64)
    measured = peak_step_bytes(build(6), torch.randn(5, 3, 8, 64, 64))
    assert estimate.total(5) == pytest.approx(max(measured), rel=0.03)
    assert estimate.fixed + 5 * estimate.per_clip == pytest.approx(measured[0], rel=0.03)


@pytest.mark.slow
def test_checkpointing_and_adapters_shrink_the_per_clip_memory():
    per_clip = {(t, c): estimate_training_memory(_build(t, c), 6, 8, 64).per_clip
                for t in ("full", "adaptformer") for c in (False, True)}
    assert per_clip[("full", True)] < per_clip[("full", False)]
    assert per_clip[("adaptformer", True)] < per_clip[("adaptformer", False)]
    assert per_clip[("adaptformer", False)] < per_clip[("full", False)]


def test_largest_batch_arithmetic():
    backward = Bilinear(base=2**30, per_block=2**30, clip=0, clip_block=2**29)
    estimate = MemoryEstimate(2, backward, update=Bilinear(4 * 2**30, 0, 0, 0))
    assert estimate.fixed == 3 * 2**30 and estimate.per_clip == 2**30
    assert estimate.total(3) == 6 * 2**30
    assert estimate.total(0) == 4 * 2**30  # the optimizer step's peak when there are no activations
    # (24e9 - 1.5 GiB) * 0.9 = 20.15e9 usable; minus 3 GiB leaves 16.93e9 bytes = 15.8 clips of 1 GiB
    assert estimate.largest_batch(24e9) == 15
    assert estimate.largest_batch(80e9) > 3 * estimate.largest_batch(24e9)
    assert estimate.largest_batch(2**30) == 0


@pytest.mark.slow
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
