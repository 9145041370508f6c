"""The updates of an epoch against the official samplers and loops (video_adapt/engine/epochs.py).

AF = ShoufaChen/AdaptFormer @6967d67, VM = MCG-NJU/VideoMAE @14ef8d8.
"""
import csv
import math

import pytest
from torch.utils.data import DataLoader, DistributedSampler

from conftest import tiny_overrides
from video_adapt.config import load_config
from video_adapt.distributed import DistState
from video_adapt.engine.data import build_loaders, data_facts, epoch_updates, resolve_data
from video_adapt.engine.epochs import EpochSampler, epoch_sampler_world, updates_per_epoch
from video_adapt.engine.loop import accumulation, train

SSV2_TRAIN, HMDB51_SPLIT1_TRAIN = 168913, 3570


def official_updates(n: int, processes: int, per_process: int, seed: int, epoch: int,
                     cap: int | None = None) -> list[list[int]]:
    """The videos of each update of one official epoch: torch's DistributedSampler on every process (shuffle, no
    drop_last: AF:main_video.py:195-197, VM:run_class_finetuning.py:236-238), each process's loader dropping its last
    partial batch (AF:main_video.py:217-223, VM:run_class_finetuning.py:263-270), update k made of batch k of every
    process; VideoMAE's loop skips every update from `cap` = floor(N / global batch) on
    (VM:run_class_finetuning.py:405, VM:engine_for_finetuning.py:44-46)."""
    videos = list(range(n))
    batches = []
    for rank in range(processes):
        sampler = DistributedSampler(videos, num_replicas=processes, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        loader = DataLoader(videos, batch_size=per_process, sampler=sampler, drop_last=True)
        batches.append([b.tolist() for b in loader])
    updates = [sorted(i for rank in batches for i in rank[k]) for k in range(len(batches[0]))]
    return updates[:cap]


def our_updates(n: int, global_batch: int, sampler_world: int, processes: int, micro_batch: int, seed: int,
                epoch: int) -> list[list[int]]:
    """The videos of each update of one of our epochs on `processes` ranks with accumulation."""
    total = updates_per_epoch(n, global_batch, sampler_world) * global_batch
    accum = global_batch // (micro_batch * processes)
    micro = []
    for rank in range(processes):
        sampler = EpochSampler(list(range(n)), num_replicas=processes, rank=rank, seed=seed, total=total)
        sampler.set_epoch(epoch)
        micro.append(list(DataLoader(list(range(n)), batch_size=micro_batch, sampler=sampler, drop_last=True)))
    assert all(len(m) % accum == 0 for m in micro)  # no partial accumulation group is left over
    return [sorted(int(i) for rank in micro for b in rank[k * accum:(k + 1) * accum] for i in b)
            for k in range(len(micro[0]) // accum)]


def test_updates_per_epoch_are_the_official_counts():
    # AdaptFormer: 64 processes of 16 (AF:README.md:43-51): ceil(N / 64) // 16, the last update padded
    assert updates_per_epoch(SSV2_TRAIN, 1024, 64) == math.ceil(SSV2_TRAIN / 64) // 16 == 165
    assert SSV2_TRAIN // 1024 == 164  # what a drop_last sampler on one process ran
    assert updates_per_epoch(HMDB51_SPLIT1_TRAIN, 1024, 64) == math.ceil(HMDB51_SPLIT1_TRAIN / 64) // 16 == 3
    # VideoMAE: floor(N / global batch) (VM:run_class_finetuning.py:405): 6 x 64, 8 x 64 (the 800-epoch script),
    # and the UCF101 script's 16 x 8 on HMDB51
    assert updates_per_epoch(SSV2_TRAIN, 384, 1) == SSV2_TRAIN // 384 == 439
    assert updates_per_epoch(SSV2_TRAIN, 512, 1) == 329
    assert updates_per_epoch(HMDB51_SPLIT1_TRAIN, 128, 1) == 27
    # the recipes on one process (batch 32, accumulated) and on 8 (batch 16): the same count
    for processes, batch in ((1, 32), (8, 16)):
        af = accumulation(load_config(None, [f"data.batch_size={batch}"]), processes)
        assert epoch_updates(af, SSV2_TRAIN, processes) == 165
        vm = accumulation(load_config(None, ["train.recipe=videomae", "data.batch_size=6"]), processes)
        assert epoch_updates(vm, SSV2_TRAIN, processes) == 439
        hmdb = accumulation(load_config(None, ["train.recipe=videomae", "data.dataset=hmdb51",
                                               f"data.batch_size={batch}"]), processes)
        assert epoch_updates(hmdb, HMDB51_SPLIT1_TRAIN, processes) == 27


@pytest.mark.parametrize("processes,micro_batch", [(1, 32), (1, 8), (2, 8)])
def test_each_update_trains_on_the_videos_the_official_processes_train_on(processes, micro_batch):
    """1019 videos, a global batch of 32: AdaptFormer-like 8 processes of 4 pad to 1024 and run 32 updates (the last
    with 5 repeated videos), VideoMAE-like ones stop at 31. Ours, on 1 or 2 processes with accumulation, gives every
    update the same videos."""
    n, seed = 1019, 3
    for epoch in (0, 1):
        af = official_updates(n, processes=8, per_process=4, seed=seed, epoch=epoch)
        assert len(af) == 32 and len(set(sum(af, []))) == n  # every video, five of them twice
        assert our_updates(n, 32, 8, processes, micro_batch, seed, epoch) == af
        vm = official_updates(n, processes=8, per_process=4, seed=seed, epoch=epoch, cap=n // 32)
        assert len(vm) == 31
        assert our_updates(n, 32, 1, processes, micro_batch, seed, epoch) == vm


def test_the_sampler_world_is_the_recipes_and_a_free_batch_pads_for_its_own_processes():
    assert epoch_sampler_world(64, 1024, world_size=1) == 64  # the official run's, whatever runs here
    assert epoch_sampler_world(64, None, world_size=2) == 2  # no official run to follow: our processes
    assert epoch_sampler_world(1, None, world_size=4) == 1  # VideoMAE's loop never pads
    assert epoch_sampler_world(None, 1024, world_size=4) == 4
    with pytest.raises(ValueError, match="does not split"):
        EpochSampler(list(range(10)), num_replicas=3, rank=0, seed=0, total=8)


@pytest.mark.slow
def test_an_epoch_runs_the_official_count_and_no_leftover_micro_batches(synthetic_store, tmp_path):
    """24 training videos, a global batch of 16 from micro-batches of 4: with the sampler padding for 16 processes
    (AdaptFormer's rule) an epoch is ceil(24 / 16) x 16 / 16 = 2 updates; a drop_last sampler ran 1 and two
    micro-batches whose gradients were thrown away. VideoMAE's rule is 1 update of 4 micro-batches."""
    overrides = ["train.global_batch=16", "data.batch_size=4"]
    af = load_config(None, tiny_overrides(synthetic_store, tmp_path / "af", *overrides, "train.sampler_world=16"))
    train(af)
    with open(tmp_path / "af" / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == [2, 4]  # 2 updates in each of the 2 epochs
    vm = load_config(None, tiny_overrides(synthetic_store, tmp_path / "vm", *overrides, "train.recipe=videomae"))
    vm = accumulation(resolve_data(vm, data_facts(vm)), 1)
    data = build_loaders(vm, DistState())
    assert len(data.loader) == 4 and vm.train.accum_steps == 4  # one update, nothing left over
