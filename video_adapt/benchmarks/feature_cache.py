"""Epoch time of a linear probe on clips against the same probe on cached features (`train.feature_cache`), measured
in one process: the two kinds of epoch alternate, so the load of a shared host falls on both alike. The one-off
cost of the cache (K views of every training video and the monitoring views through the backbone) is measured too.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from video_adapt.config import Config
from video_adapt.distributed import DistState, resolve_device
from video_adapt.engine.builders import build_loss, build_model, build_optimizer, build_schedule, learning_rate
from video_adapt.engine.data import TrainData, build_loaders, data_facts, resolve_data
from video_adapt.engine.feature_cache import PooledHead, cache_features
from video_adapt.engine.loop import TrainRun, accumulation, check_config, train_one_epoch
from video_adapt.engine.optim import Updater
from video_adapt.engine.precision import Precision
from video_adapt.engine.runlog import RunLog


@dataclass
class PairedEpochs:
    clips_s: list[float]  # training pass of each epoch on clips (loader + backbone + head)
    cached_s: list[float]  # the same epochs on cached features (head only)
    cache_s: float  # computing the cache once
    views: int
    videos: int

    def summary(self) -> dict[str, Any]:
        clips, cached = statistics.median(self.clips_s), statistics.median(self.cached_s)
        return {"clips_epoch_s": clips, "cached_epoch_s": cached, "speedup": clips / cached, "cache_s": self.cache_s,
                "cache_in_clip_epochs": self.cache_s / clips, "views": self.views, "videos": self.videos,
                "rounds": len(self.clips_s), "clips_s": self.clips_s, "cached_s": self.cached_s}


def _run(cfg: Config, dist: DistState, num_classes: int, out_dir: Path, cached: bool) -> tuple[TrainRun, TrainData,
                                                                                                float]:
    """A linear probe's TrainRun as `loop._train` builds it, on clips or on cached features (seconds to cache)."""
    model, _ = build_model(cfg, num_classes)
    model.to(dist.device)
    data = build_loaders(cfg, dist)
    precision = Precision.create(dist.device, cfg.train.amp)
    seconds = 0.0
    if cached:
        start = time.perf_counter()
        data, _ = cache_features(model, data, cfg, dist, precision.dtype, out_dir)
        seconds = time.perf_counter() - start
    global_batch = cfg.data.batch_size * cfg.train.accum_steps
    lr = learning_rate(cfg, global_batch)
    optimizer = build_optimizer(model, cfg, lr)
    schedule = build_schedule(cfg, lr, global_batch, len(data.loader) // cfg.train.accum_steps)
    mixup, loss_fn = build_loss(cfg, num_classes)
    run = TrainRun(cfg=cfg, dist=dist, model=model, net=PooledHead(model) if cached else model, loader=data.loader,
                   updater=Updater(optimizer, schedule, precision), loss_fn=loss_fn, mixup=mixup,
                   log=RunLog(out_dir, False), cached=cached)
    return run, data, seconds


def paired_epoch_times(cfg: Config, rounds: int, out_dir: Path) -> PairedEpochs:
    """`rounds` epochs on clips and on cached features (K = cfg.train.feature_cache), alternating, one process."""
    dist = DistState(device=resolve_device(cfg.device))
    facts = data_facts(cfg)
    cfg = accumulation(resolve_data(cfg, facts), 1)
    num_classes = check_config(cfg, facts)
    clip_run, clip_data, _ = _run(replace(cfg, train=replace(cfg.train, feature_cache=None)), dist, num_classes,
                                  out_dir, cached=False)
    cache_run, cache_data, cache_s = _run(cfg, dist, num_classes, out_dir, cached=True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for epoch in range(rounds):
        for run, data in ((clip_run, clip_data), (cache_run, cache_data)):
            data.sampler.set_epoch(epoch)
            data.train_set.set_epoch(epoch)
            times[run.cached].append(train_one_epoch(run, epoch)["epoch_time_s"])
    return PairedEpochs(times[False], times[True], cache_s, cache_data.train_set.views, len(cache_data.train_set))
