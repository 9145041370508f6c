"""The memory estimate counts what does not depend on the CPU's kernels (tools/bench_memory.py).

Every assertion here holds whichever GEMM / convolution / attention kernels run: counts are compared exactly or
within 1%, and the profiler's kernel-dependent peak only as a lower bound (CI runs AMD EPYC without AMX and Intel
Xeon with AMX, whose oneDNN kernels allocate other temporaries).
"""
import gc
import json
import os
import subprocess
import sys
import weakref

import pytest
import torch

from conftest import ROOT
from video_adapt import create_model
from video_adapt.models.memory import (Bilinear, MemoryEstimate, counted_step_bytes, estimate_training_memory,
                                       peak_step_bytes, recomputed_block_bytes, saved_activation_bytes, state_bytes)

CONFIGS = [("full", False), ("full", True), ("adaptformer", False), ("adaptformer", True)]


def _build(tuning: str, checkpointing: bool = False):
    def build(depth: int):
        torch.manual_seed(0)
        return create_model("vit_nano_patch8_32", embed_dim=64, depth=depth, num_heads=2, num_classes=5,
                            tuning=tuning, use_checkpoint=checkpointing)
    return build


def _clips(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 64, 64)


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = torch.nn.Linear(1000, 1000), torch.nn.Linear(1000, 10)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


def test_saved_bytes_and_state_of_a_small_mlp_by_hand():
    model, clips = MLP(), torch.randn(8, 1000)
    # relu keeps its output, which is also the second layer's saved input (one storage); cross-entropy keeps the
    # log-softmax and its total weight (a scalar); the clips, labels and weights are input and state
    assert saved_activation_bytes(model, clips, amp=None) == 4 * (8 * 1000 + 8 * 10 + 1)
    weights = 4 * (1000 * 1000 + 1000 + 1000 * 10 + 10)
    assert state_bytes(model) == 4 * weights  # weights, gradients, two AdamW moments
    model.hidden.requires_grad_(False)
    assert state_bytes(model) == weights + 3 * 4 * (1000 * 10 + 10)


def test_counting_keeps_no_activation_alive():
    """Saved tensors live only while they are counted (returning them from the pack hook as they are would tie each
    saved output to its grad_fn in a cycle the garbage collector cannot see: the ViT-H table ran out of memory)."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    outputs = []
    model[1].register_forward_hook(lambda module, args, out: outputs.append(weakref.ref(out)))
    # ReLU's output (4 x 8 fp32, also the second Linear's input), log-softmax's (4 x 3) and the loss's total weight
    assert saved_activation_bytes(model, torch.randn(4, 8), amp=None) == 4 * (4 * 8 + 4 * 3 + 1)
    gc.collect()
    assert outputs and outputs[0]() is None


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


def test_the_profiler_prints_no_usdt_lines_and_passes_the_rest(capfd):
    """Kineto writes `USDT: ... profiler_start` for every profile; nothing else on stderr may be hidden."""
    from video_adapt.models.memory import _quiet_profiler
    peak_step_bytes(torch.nn.Linear(8, 3), torch.randn(2, 8), amp=None)
    with _quiet_profiler():
        os.write(2, b"USDT: a probe\nERROR: a real problem\n")
        os.write(1, b"a result\n")
    out, err = capfd.readouterr()
    assert "USDT" not in out + err
    assert "ERROR: a real problem" in err and "a result" in out


@pytest.mark.slow
@pytest.mark.parametrize("tuning,checkpointing", CONFIGS)
def test_two_and_three_block_fit_predicts_a_deeper_model_at_a_larger_batch(tuning, checkpointing):
    build = _build(tuning, checkpointing)
    estimate = estimate_training_memory(build, depth=6, num_frames=8, img_size=64)
    # the count is exactly bilinear in batch and depth, on any CPU; 1% leaves room only for rounding
    assert estimate.total(5) == pytest.approx(counted_step_bytes(build(6), _clips(5)), rel=0.01)


def test_the_recomputed_block_is_what_a_block_saves_without_checkpointing_beyond_its_input():
    """Two ways to the same bytes: the blocks' own saves, and the depth differences of the two forwards."""
    clips = _clips(3)
    plain = {d: saved_activation_bytes(_build("full")(d), clips) for d in (3, 4)}
    kept = {d: saved_activation_bytes(_build("full", True)(d), clips) for d in (3, 4)}
    assert kept[4] - kept[3] == 3 * 8 * 8 * 4 * 64 * 2  # one bf16 block input per clip: the checkpoint's
    recomputed = recomputed_block_bytes(_build("full", True)(4), clips)
    assert recomputed == (plain[4] - plain[3]) - (kept[4] - kept[3])
    assert counted_step_bytes(_build("full", True)(4), clips) == counted_step_bytes(
        _build("full")(4), clips) - plain[4] + kept[4] + recomputed


def test_attention_is_counted_as_flash_attention_keeps_it():
    """No N x N attention matrix is saved: the CPU picks flash attention, as a GPU does, on any instruction set."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    model, clips = _build("full")(2), _clips(2)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        flash = saved_activation_bytes(model, clips)
    assert saved_activation_bytes(model, clips) == flash


@pytest.mark.slow
def test_checkpointing_and_adapters_shrink_the_per_clip_memory():
    per_clip = {(t, c): estimate_training_memory(_build(t, c), 12, 8, 64).per_clip for t, c in CONFIGS}
    assert per_clip[("full", True)] < per_clip[("full", False)]
    assert per_clip[("adaptformer", True)] < per_clip[("adaptformer", False)]
    assert per_clip[("adaptformer", False)] < per_clip[("full", False)]


@pytest.mark.parametrize("tuning,checkpointing", [("full", False), ("adaptformer", True)])
def test_the_profiled_peak_is_never_below_the_count(tuning, checkpointing):
    """The profiler adds this CPU's kernel temporaries to what the count holds; it can only be larger."""
    model, clips = _build(tuning, checkpointing)(2), _clips(2)
    assert peak_step_bytes(model, clips)[0] >= counted_step_bytes(model, clips)


def _counts() -> list[int]:
    return [counted_step_bytes(_build(t, c)(2), _clips(2)) for t, c in [("full", False), ("adaptformer", True)]]


def test_the_count_is_the_same_with_another_kernel_family():
    """AVX2 kernels (oneDNN without AVX-512 or AMX) in a subprocess count the same bytes as this process's default
    kernels, whichever those are on this CPU."""
    code = "import sys; sys.path.insert(0, 'tests'); import torch, test_memory as t; " \
           "print(t._counts(), torch.backends.cpu.get_cpu_capability())"
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    counts, capability = out.stdout.strip().rsplit(" ", 1)
    assert capability == "AVX2"
    assert json.loads(counts) == _counts()


def test_largest_batch_arithmetic():
    counts = Bilinear(base=2**30, per_block=2**30, clip=0, clip_block=2**29)
    estimate = MemoryEstimate(2, counts)
    assert estimate.fixed == 3 * 2**30 and estimate.per_clip == 2**30
    assert estimate.total(3) == 6 * 2**30
    # (24e9 - 1.5 GiB) * 0.9 = 20.15e9 usable; minus 3 GiB leaves 16.93e9 bytes = 15.8 clips of 1 GiB
    assert estimate.largest_batch(24e9) == 15
    assert estimate.largest_batch(80e9) > 3 * estimate.largest_batch(24e9)
    assert estimate.largest_batch(2**30) == 0


def test_bilinear_fit_recovers_its_coefficients():
    truth = Bilinear(base=7.0, per_block=3.0, clip=5.0, clip_block=2.0)
    counts = {(b, l): truth.fixed(l) + b * truth.per_clip(l) for b in (2, 3) for l in (2, 3)}
    assert Bilinear.fit(counts) == truth


@pytest.mark.slow
def test_bench_memory_smoke(tmp_path):
    out = subprocess.run([sys.executable, "tools/bench_memory.py", "--smoke", "--json", str(tmp_path / "m.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    assert "USDT" not in out.stdout + out.stderr
    rows = json.loads((tmp_path / "m.json").read_text())
    fits = {(r["method"], r["checkpointing"]): (r["batch @ 24 GB"], r["batch @ 80 GB"]) for r in rows}
    for small, large in fits.values():
        assert 0 < small <= large
    # from kernel-independent counts, so strict on every CPU
    assert fits[("full", True)][0] > fits[("full", False)][0]
    assert fits[("adaptformer", True)][0] > fits[("adaptformer", False)][0]
    assert fits[("adaptformer", False)][0] > fits[("full", False)][0]
    assert all(r["cpu_peak_over_count"] >= 1 for r in rows)  # the profiler adds this CPU's temporaries
    assert "largest batch, 24 GB" in out.stdout and "Not counted: kernel" in out.stdout


def test_a_runs_step_memory_is_counted_on_its_own_model_without_touching_it():
    """The run's own model, not a second one built for the count: same number, and its BatchNorm statistics, its
    weights and the random stream it trains with are as they were."""
    from video_adapt.config import load_config
    from video_adapt.engine.builders import build_model, counted_step_memory
    cfg = load_config(None, ["model.name=vit_nano_patch8_32", "model.tuning=linear", "model.pretrained=none",
                             "data.img_size=32", "data.num_frames=4", "data.batch_size=4"])
    model, _ = build_model(cfg, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    count = counted_step_memory(model, cfg, None)
    assert torch.equal(torch.rand(3), expected_next)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # head_bn's running stats too
    fresh, _ = build_model(cfg, 3)
    clips = torch.randn(4, 3, 4, 32, 32)
    assert count == counted_step_bytes(fresh, clips, None)
