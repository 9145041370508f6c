"""One rank of the FSDP2 equivalence test (tests/test_sharding.py), started by torch.distributed.run on gloo.

Sharded full fine-tuning of a tiny V2-style model (cosine attention, activation checkpointing): rank 0's
weights are broadcast into every rank, each rank trains on its half of the global batch for STEPS steps, the full
model and optimizer state are gathered and saved (`mid.pt`), a fresh sharded model and optimizer resume from that
file and train STEPS more steps (`final.pt`). The test replays the same steps in one unsharded process.
"""
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sharding_common import GLOBAL_BATCH, STEPS, build_model, build_optimizer, train_steps  # noqa: E402

from video_adapt.sharding import (  # noqa: E402
    full_optimizer_state, full_state_dict, load_full_optimizer_state, load_full_state_dict, shard_model,
)


def sharded(seed: int, state: dict) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = shard_model(build_model(seed))
    load_full_state_dict(model, state)
    return model, build_optimizer(model)


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = GLOBAL_BATCH // world
    part = slice(rank * local, (rank + 1) * local)
    initial = build_model(0).state_dict() if rank == 0 else {}
    model, optimizer = sharded(100 + rank, initial)  # other ranks start from other weights until the broadcast
    train_steps(model, optimizer, range(STEPS), part)
    weights, opt_state = full_state_dict(model), full_optimizer_state(model, optimizer)
    if rank == 0:
        torch.save({"weights": weights, "optimizer": opt_state}, out / "mid.pt")
    dist.barrier()
    saved = torch.load(out / "mid.pt", weights_only=True) if rank == 0 else {"weights": {}, "optimizer": {}}
    model, optimizer = sharded(200 + rank, saved["weights"])
    load_full_optimizer_state(model, optimizer, saved["optimizer"])
    train_steps(model, optimizer, range(STEPS, 2 * STEPS), part)
    weights, opt_state = full_state_dict(model), full_optimizer_state(model, optimizer)
    held = [None] * world  # bytes of weights and of AdamW moments this rank keeps between steps
    dist.all_gather_object(held, (sum(p.to_local().nbytes for p in model.parameters()),
                                  sum(t.to_local().nbytes for s in optimizer.state.values()
                                      for k, t in s.items() if k in ("exp_avg", "exp_avg_sq"))))
    if rank == 0:
        torch.save({"weights": weights, "optimizer": opt_state, "world": world, "held": held,
                    "sharded": type(model.blocks[0].attn.qkv.weight).__name__}, out / "final.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
