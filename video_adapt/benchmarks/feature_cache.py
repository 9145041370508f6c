"""Epoch time of a linear probe on clips against the same probe on cached features (`train.feature_cache`), measured
in one process: the two kinds of epoch alternate, so the load of a shared host falls on both alike. The one-off
cost of the cache (K views of every training video and the monitoring views through the backbone) is measured too.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from video_adapt.config import Config
from video_adapt.distributed import DistState, resolve_device
from video_adapt.engine.loop import start_run, train_one_epoch


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


def paired_epoch_times(cfg: Config, rounds: int, out_dir: Path) -> PairedEpochs:
    """`rounds` epochs on clips and on cached features (K = cfg.train.feature_cache), alternating, one process;
    both runs are built by the loop's own `start_run`."""
    dist = DistState(device=resolve_device(cfg.device))
    clips = start_run(replace(cfg, train=replace(cfg.train, feature_cache=None), out_dir=str(out_dir / "clips"),
                              resume=None), dist)
    cached = start_run(replace(cfg, out_dir=str(out_dir / "cached"), resume=None), dist)
    times: dict[bool, list[float]] = {False: [], True: []}
    for epoch in range(rounds):
        for run in (clips, cached):
            run.data.sampler.set_epoch(epoch)
            run.data.train_set.set_epoch(epoch)
            times[run.cached].append(train_one_epoch(run, epoch)["epoch_time_s"])
    for run in (clips, cached):
        run.log.close()
    return PairedEpochs(times[False], times[True], cached.cache.seconds, cached.data.train_set.views,
                        len(cached.data.train_set))
