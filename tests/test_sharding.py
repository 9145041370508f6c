"""FSDP2 sharded full fine-tuning (video_adapt.sharding) gives what one process gives, and its checkpoints are
one-process checkpoints."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sharding_common import STEPS, build_model, build_optimizer, train_steps
from conftest import ROOT


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(ROOT / "tests" / "sharding_worker.py"), str(out)],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _assert_close(ours: dict, theirs: dict, atol: float = 1e-5) -> None:
    assert set(ours) == set(theirs)
    for key in ours:
        assert torch.allclose(ours[key].float(), theirs[key].float(), atol=atol), key


def _assert_optimizer_close(ours: dict, theirs: dict) -> None:
    assert [{k: v for k, v in g.items() if k != "betas"} for g in ours["param_groups"]] == \
        [{k: v for k, v in g.items() if k != "betas"} for g in theirs["param_groups"]]
    assert set(ours["state"]) == set(theirs["state"])
    for index, state in ours["state"].items():
        _assert_close(state, theirs["state"][index], atol=1e-6)


@pytest.mark.slow
def test_two_sharded_gloo_processes_match_one_process(sharded_run):
    model = build_model(0)
    optimizer = build_optimizer(model)
    train_steps(model, optimizer, range(STEPS))
    mid = torch.load(sharded_run / "mid.pt", weights_only=True)
    _assert_close(mid["weights"], model.state_dict())
    _assert_optimizer_close(mid["optimizer"], optimizer.state_dict())


@pytest.mark.slow
def test_sharded_checkpoint_resumes_in_one_process_and_in_a_sharded_run(sharded_run):
    """`mid.pt` loads with plain load_state_dict calls; the sharded run resumed from it ends where one process does."""
    mid = torch.load(sharded_run / "mid.pt", weights_only=True)
    model = build_model(7)
    model.load_state_dict(mid["weights"], strict=True)
    optimizer = build_optimizer(model)
    optimizer.load_state_dict(mid["optimizer"])
    train_steps(model, optimizer, range(STEPS, 2 * STEPS))
    final = torch.load(sharded_run / "final.pt", weights_only=True)
    assert final["world"] == 2 and final["sharded"] == "DTensor"
    _assert_close(final["weights"], model.state_dict())
    _assert_optimizer_close(final["optimizer"], optimizer.state_dict())


@pytest.mark.slow
def test_sharded_state_bytes_bounds_what_each_rank_holds(sharded_run):
    """Each rank keeps 1/world of the weights and AdamW moments (its gradients are the weights' size); the
    estimate adds two gathered blocks and the root group on top."""
    from video_adapt.sharding import sharded_state_bytes
    final = torch.load(sharded_run / "final.pt", weights_only=True)
    model = build_model(0)
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert sum(w for w, _ in final["held"]) == weights and sum(m for _, m in final["held"]) == 2 * weights
    estimate = sharded_state_bytes(model, world_size=2)
    assert max(2 * w + m for w, m in final["held"]) <= estimate
    block = sum(p.numel() * 4 for p in model.blocks[0].parameters())
    root = weights - sum(p.numel() * 4 for p in model.blocks.parameters())
    assert estimate == math.ceil(4 * weights / 2) + 2 * 2 * block + 2 * root
    frozen = build_model(0)
    for p in frozen.parameters():
        p.requires_grad = False
    assert sharded_state_bytes(frozen, 2) == math.ceil(weights / 2) + 2 * block + root


@pytest.fixture
def one_rank_group(tmp_path):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_optimizer_state_of_another_model_is_refused_on_every_rank(one_rank_group):
    from video_adapt.sharding import load_full_optimizer_state, shard_model
    other = build_model(0)
    other_optimizer = torch.optim.AdamW(other.parameters(), lr=1e-3)  # one param group, not two
    train_steps(other, other_optimizer, range(1))
    model = shard_model(build_model(0))
    with pytest.raises(ValueError, match="param groups"):
        load_full_optimizer_state(model, build_optimizer(model), other_optimizer.state_dict())


def test_a_sharded_estimate_swaps_only_the_state():
    from video_adapt.models.memory import GiB, Bilinear, MemoryEstimate
    estimate = MemoryEstimate(depth=40, counts=Bilinear(base=2 * GiB, per_block=0.5 * GiB, clip=0.1 * GiB,
                                                        clip_block=0.05 * GiB))
    sharded = estimate.with_state(counted_state=16 * GiB, held_state=3 * GiB)
    assert sharded.fixed == estimate.fixed - 13 * GiB and sharded.per_clip == estimate.per_clip
    assert sharded.largest_batch(80e9) > estimate.largest_batch(80e9)


@pytest.mark.slow
def test_bench_memory_adds_fsdp_rows(tmp_path):
    out = tmp_path / "m.json"
    result = subprocess.run([sys.executable, "tools/bench_memory.py", "--smoke", "--methods", "full", "--strategies",
                             "ddp", "fsdp", "--world-size", "4", "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(r["strategy"], r["checkpointing"]) for r in rows] == [("ddp", False), ("fsdp", False), ("ddp", True),
                                                                   ("fsdp", True)]
    assert {r["world_size"] for r in rows if r["strategy"] == "fsdp"} == {4}
    assert "| FSDP x4 |" in result.stdout
    for ddp, fsdp in zip(rows[::2], rows[1::2]):
        assert fsdp["per_clip_mib"] == ddp["per_clip_mib"]
        assert fsdp["fixed_gib"] - fsdp["state_gib"] == pytest.approx(ddp["fixed_gib"] - ddp["state_gib"])
