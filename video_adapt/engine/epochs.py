"""How many updates an epoch has, and which videos fill them: the count the official loops run, on any number of
processes and any accumulation.

Both official loops shuffle with torch's `DistributedSampler`, which pads the permutation to a multiple of its
process count P by repeating its first videos (no drop_last), and each process's loader drops its last partial
batch. For a global batch G = per-process batch x P, an epoch is therefore the first U x G videos of the padded
permutation, U = floor(ceil(N / P) x P / G):
- AdaptFormer (P = 64 processes of 16, AF:main_video.py:195-197,217-223) runs every one of them: on SSv2
  (N = 168,913) U = ceil(N / 64) // 16 = 165, the last update holding 47 repeated videos.
- VideoMAE skips every iteration past floor(N / G) (VM:run_class_finetuning.py:405, VM:engine_for_finetuning.py:44-46),
  which is the same rule with P = 1: no padding is ever used.

`EpochSampler` yields exactly those U x G videos, split over this run's processes as DistributedSampler splits
them, so a run reaches the official count with any batch, accumulation and process count, every update a whole
global batch. Without it (a plain drop_last sampler and loader on one process) an epoch was floor(N / G) updates and
the leftover micro-batches ran forward and backward for nothing (164 instead of 165 on SSv2).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler


def updates_per_epoch(videos: int, global_batch: int, sampler_world: int) -> int:
    """U = floor(ceil(N / P) x P / G): the updates of an epoch whose sampler pads N videos for P processes."""
    padded = math.ceil(videos / sampler_world) * sampler_world
    return padded // global_batch


def epoch_sampler_world(sampler_world: int | None, global_batch: int | None, world_size: int) -> int:
    """The P an epoch follows: the recipe's official process count (`train.sampler_world`), or this run's processes
    when none is set. A run at the batch it runs (`train.global_batch` null) has no official run to follow, so it
    pads for at most its own processes, as the official code would on them."""
    if sampler_world is None:
        return world_size
    return min(sampler_world, world_size) if global_batch is None else sampler_world


class EpochSampler(DistributedSampler):
    """The U x G videos of an epoch (padded like DistributedSampler for P processes, cut to whole global batches),
    this rank's share being every `num_replicas`-th of them, as DistributedSampler shares. The permutation is
    DistributedSampler's (randperm seeded by seed + epoch), so every epoch's videos and order are the official
    sampler's. A repeated video draws the same clip as its first appearance (clips are keyed by (seed, epoch, video));
    the official loader draws it afresh."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, total: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        if total % num_replicas:
            raise ValueError(f"an epoch of {total} videos does not split over {num_replicas} processes")
        self.total_size = total
        self.num_samples = total // num_replicas

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator).tolist()  # type: ignore[arg-type]
        order = (order * math.ceil(self.total_size / len(order)))[:self.total_size]
        return iter(order[self.rank:self.total_size:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples
