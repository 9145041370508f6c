"""Sharded full fine-tuning with PyTorch FSDP2 (`torch.distributed.fsdp.fully_shard`), for backbones whose
weights, gradients and AdamW state do not fit one GPU next to the activations (ViT-g/14: 1.0 B weights, 16 GB of
fp32 state before the first activation).

Each block is one FSDP group: its weights are gathered just before it runs and freed after, so a rank holds
1/world of the weights, gradients and optimizer state plus one block's full weights at a time. What is saved is
a full, unsharded state in the same layout a single process writes (`model.state_dict()`,
`optimizer.state_dict()`), so a sharded run resumes from a one-process checkpoint and the other way round.

Every function here is collective: call it on every rank.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
_SCATTER = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)


def shard_model(model: nn.Module, mesh: DeviceMesh | None = None, param_dtype: torch.dtype | None = None,
                reshard_after_forward: bool = True) -> nn.Module:
    """Shard `model` in place: one FSDP group per entry of `model.blocks`, the rest (patch embedding, prompts,
    norms, head) in the root group. Build the optimizer after this: sharding replaces the parameters.

    `param_dtype` (e.g. torch.bfloat16) gathers and computes in that dtype while the sharded master weights and
    the gradient reduction stay float32; None keeps float32 (autocast then chooses per operation).
    `mesh` defaults to all ranks of the default process group on the current device type.
    """
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded `model.state_dict()` on CPU on rank 0 (for saving); an empty dict on the other ranks."""
    return get_model_state_dict(model, options=_GATHER)


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict into a sharded model. Only rank 0's `state` is read (others may pass {}): rank 0
    broadcasts and every rank keeps its shard. Every key must fit (strict)."""
    set_model_state_dict(model, dict(state), options=_SCATTER)  # the loader writes into the dict it gets


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The unsharded `optimizer.state_dict()` on rank 0, in torch's own layout (state and param groups keyed by
    parameter index), so `optimizer.load_state_dict` of an unsharded run takes it; {} on the other ranks."""
    named = get_optimizer_state_dict(model, optimizer, options=_GATHER)
    if not named:
        return {}
    index: dict[str, int] = {}
    for group in named["param_groups"]:
        for name in group["params"]:
            index.setdefault(name, len(index))
    return {"state": {index[name]: state for name, state in named["state"].items()},
            "param_groups": [{**group, "params": [index[n] for n in group["params"]]} for group in named["param_groups"]]}


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an `optimizer.state_dict()` written by an unsharded run or by `full_optimizer_state` into the
    optimizer of a sharded model. Only rank 0's `state` is read; the optimizer must have the same param groups."""
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    named: dict[str, Any] = {}
    problem = [None]
    if state:
        saved = [len(g["params"]) for g in state["param_groups"]]
        if saved != [len(g["params"]) for g in optimizer.param_groups]:
            problem[0] = (f"optimizer state has param groups of {saved} parameters, the optimizer "
                          f"{[len(g['params']) for g in optimizer.param_groups]}; it was saved for another model")
        else:
            named = {"state": {order[i]: dict(s) for i, s in state["state"].items()},
                     "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in state["param_groups"]]}
    dist.broadcast_object_list(problem, src=0)  # every rank raises, none waits in the collective below
    if problem[0]:
        raise ValueError(problem[0])
    set_optimizer_state_dict(model, optimizer, named, options=_SCATTER)


def sharded_state_bytes(model: nn.Module, world_size: int, live_blocks: int = 2) -> int:
    """What one rank holds of the model's state under `shard_model` with AdamW, for planning memory before the
    GPUs exist (call it on the unsharded model, even on the meta device).

    1/world_size of the weights, and of the gradients and two AdamW moments of what trains; plus, unsharded, the
    weights and gradients of `live_blocks` blocks (the block running and the one FSDP gathers ahead, or whose
    gradients it is still reducing) and of the root group (patch embedding, norms, head), which FSDP keeps
    gathered from the forward to the backward. Activations, and autocast's low-precision weight copies saved
    for the backward, are not sharded and not counted here.
    """
    def state(params: list[nn.Parameter], optimizer_too: bool) -> int:
        per = 4 if optimizer_too else 2  # weight and gradient, plus two moments when held sharded
        return sum(p.numel() * p.element_size() * (per if p.requires_grad else 1) for p in params)

    in_blocks = {id(p) for p in model.blocks.parameters()}
    root = [p for p in model.parameters() if id(p) not in in_blocks]
    largest_block = max(model.blocks, key=lambda b: sum(p.numel() for p in b.parameters()))
    sharded = math.ceil(state(list(model.parameters()), optimizer_too=True) / world_size)
    return sharded + live_blocks * state(list(largest_block.parameters()), False) + state(root, False)
