"""Learning-rate schedules against transcriptions of the official code."""
import math

import numpy as np
import pytest
import torch

from video_adapt.schedules import LRSchedule, apply_lr


def official_videomae_table(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    """VM:utils.py:385-402 `cosine_scheduler` (warmup_steps=-1), step by step."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = np.array([final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * i / (len(iters))))
                         for i in iters])
    return np.concatenate((warmup_schedule, schedule))


def official_adaptformer_lr(epoch, lr, min_lr, warmup_epochs, epochs):
    """AF:util/lr_sched.py:9-21 `adjust_learning_rate`."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    return min_lr + (lr - min_lr) * 0.5 * (1. + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))


def test_videomae_schedule_is_the_official_table_at_every_step():
    # SSv2 ViT-B, 2400-epoch script: lr 5e-4 x 384/256, min_lr 1e-6 x 384/256, 30 epochs, 5 warmup
    peak, low, s = 5e-4 * 384 / 256, 1e-6 * 384 / 256, 7
    table = official_videomae_table(peak, low, 30, s, warmup_epochs=5)
    schedule = LRSchedule("step", peak, low, 30, 5, s)
    ours = np.array([schedule.at_step(i) for i in range(30 * s)])
    np.testing.assert_allclose(ours, table, rtol=1e-12, atol=0)
    assert ours[0] == 0.0  # warmup starts at 0: VM's warmup_lr is never passed to the scheduler
    assert ours[5 * s - 1] == pytest.approx(peak)  # warmup end: linspace reaches the peak on its last step
    assert ours[5 * s] == pytest.approx(peak)  # cosine starts at the peak
    mid = 5 * s + (25 * s) // 2
    assert ours[mid] == pytest.approx(low + 0.5 * (peak - low) * (1 + math.cos(math.pi * ((25 * s) // 2) / (25 * s))))
    assert ours[-1] == pytest.approx(table[-1]) and ours[-1] - low < 1e-3 * (peak - low)
    assert schedule.at_step(10**9) == ours[-1]  # past the table: its last value


@pytest.mark.parametrize("accum,loader_len", [(1, 50), (4, 50), (3, 10)])
def test_adaptformer_schedule_follows_fractional_epochs(accum, loader_len):
    peak = 0.1 * 1024 / 256
    schedule = LRSchedule("epoch", peak, 0.0, 90, 10, loader_len // accum)
    for epoch in (0, 5, 9, 10, 45, 89):
        for it in range(0, loader_len, accum):  # the official loop sets the lr where it % accum_iter == 0
            expected = official_adaptformer_lr(it / loader_len + epoch, peak, 0.0, 10, 90)
            assert schedule.lr(epoch, it, loader_len, step=0) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert schedule.lr(0, 0, loader_len, 0) == 0.0  # warmup from 0
    assert schedule.at_epoch(10) == pytest.approx(peak)  # warmup end
    assert schedule.at_epoch(50) == pytest.approx(peak / 2)  # mid-cosine
    last = schedule.lr(89, loader_len - accum, loader_len, 0)
    assert 0 < last < 1e-3 * peak  # the last step is at min_lr = 0 up to the final fraction of an epoch


def test_apply_lr_scales_each_group():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr_scale": 0.75 ** 3}, {"params": [b]}], lr=1.0)
    apply_lr(opt, 0.4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 * 0.75 ** 3) and opt.param_groups[1]["lr"] == 0.4


def test_schedule_rejects_nonsense():
    with pytest.raises(ValueError, match="unknown lr schedule"):
        LRSchedule("linear", 1, 0, 10, 1, 5)
    with pytest.raises(ValueError, match="at least one"):
        LRSchedule("step", 1, 0, 10, 1, 0)
