"""One rank of the DDP check (`training.ddp`), started by torchrun:

    torchrun --standalone --nproc_per_node N -m video_adapt.gpu_check.ddp_worker --out F --sizes full --device cuda

Every rank builds the same AdaptFormer model, wraps it in DistributedDataParallel (NCCL on CUDA, gloo on the CPU)
and trains `ddp_steps` SGD steps on its share of each fixed global batch. Rank 0 then trains the same steps on the
whole batch without DDP and writes how far the two ended apart (JSON). The comparison runs in fp32 with TF32 off,
so that a difference is DDP's and not a kernel's choice for another batch size.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from video_adapt.engine.optim import create_optimizer
from video_adapt.files import write_json_atomic
from video_adapt.gpu_check.sizes import SIZES
from video_adapt.gpu_check.training import build, fixed_batch, update_difference

METHOD = "adaptformer"
LR = 0.01


def train(model: torch.nn.Module, net: torch.nn.Module, sizes, steps: int, part: slice,
          device: torch.device) -> None:
    optimizer = create_optimizer(model, "sgd", LR, weight_decay=0.0)
    for step in range(steps):
        x, y = fixed_batch(sizes, sizes.ddp_batch, seed=100 + step, device=device)
        F.cross_entropy(net(x[part]), y[part]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", choices=list(SIZES), default="quick")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)
    sizes = SIZES[args.sizes]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if args.device == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if sizes.ddp_batch % world:
        raise SystemExit(f"the global batch {sizes.ddp_batch} does not split over {world} processes")
    share = sizes.ddp_batch // world
    model = build(sizes, METHOD, device).train()
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    net = DistributedDataParallel(model, device_ids=[local] if device.type == "cuda" else None)
    start = time.perf_counter()
    train(model, net, sizes, sizes.ddp_steps, slice(rank * share, (rank + 1) * share), device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if rank == 0:
        reference = build(sizes, METHOD, device).train()
        train(reference, reference, sizes, sizes.ddp_steps, slice(None), device)
        ours = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        theirs = {n: p.detach() for n, p in reference.named_parameters() if p.requires_grad}
        nccl = torch.cuda.nccl.version() if device.type == "cuda" else None  # a tuple, or an int in old torch
        write_json_atomic(args.out, {
            "world_size": world, "backend": dist.get_backend(), "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
            "method": METHOD, "model": sizes.model, "global_batch": sizes.ddp_batch, "steps": sizes.ddp_steps,
            "ddp_seconds": seconds, "trained_tensors": len(ours), **update_difference(initial, ours, theirs)})
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
