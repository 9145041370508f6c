"""After training: rebuild a run's model from its directory, and the multi-view test of a trained run (what
`video-adapt test` runs): engine.evaluation.multi_view_test, the reports written beside the run."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from video_adapt.config import Config, load_config
from video_adapt.engine.builders import build_model
from video_adapt.engine.evaluation import EvalResult
from video_adapt.errors import ConfigError


def _config_file(run_dir: str | Path) -> Path:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir}: not a training run (no config.yaml)")
    return path


def run_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """A training run's config.yaml with `overrides`, its data protocol resolved (a config written by hand is
    resolved as training would resolve it)."""
    from video_adapt.engine.data import data_facts, resolve_data
    cfg = load_config(_config_file(run_dir), overrides)
    return resolve_data(cfg, data_facts(cfg)) if cfg.data.test_sampling is None else cfg


def load_run(run_dir: str | Path, which: str = "adapters", overrides: list[str] | None = None,
             force: bool = False) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild a trained model from a run directory: its resolved config (`run_config`), backbone, and `which`
    adapters."""
    from video_adapt.checkpoint import load_adapters, read_adapter_config
    _config_file(run_dir)
    adapter_dir = Path(run_dir) / which
    info = read_adapter_config(adapter_dir)  # a run without weights says so before its data is looked at
    cfg = run_config(run_dir, overrides)
    model, _ = build_model(cfg, len(info["class_names"]))
    load_adapters(model, adapter_dir, force=force)
    return model, cfg, info


@dataclass
class RunEvaluation:
    """The multi-view test of a run: the result, the report files and how the views were made."""

    result: EvalResult
    paths: dict[str, Path]
    split: str
    crops: int
    views_per_video: int
    average: str


def evaluate_run(run_dir: str | Path, split: str | None = None, *, weights: str = "adapters", crops: int | None = None,
                 average: str | None = None, batch_size: int | None = None, workers: int | None = None,
                 device: str = "auto", overrides: list[str] | None = None, out_dir: str | Path | None = None,
                 progress: bool = False) -> RunEvaluation:
    """Test a trained run on `split` (default: the split its training reported) with the test views of the data
    protocol it was trained with (`crops` and `average` override the protocol's) and write metrics.json,
    per_class.csv, confusion.csv/.png and predictions.csv to `out_dir` (default RUN/test_<split>)."""
    from video_adapt.distributed import resolve_device
    from video_adapt.engine.evaluation import multi_view_test
    from video_adapt.engine.precision import autocast_dtype
    from video_adapt.reports import write_test_reports
    model, cfg, info = load_run(run_dir, weights, overrides)
    dev = resolve_device(device)
    split = split or cfg.data.test_split or cfg.data.val_split
    if not split:
        raise ConfigError(f"{run_dir}: no split to test; pass one")
    average = average or cfg.data.view_average
    result, dataset = multi_view_test(model.to(dev), cfg, split, dev, autocast_dtype(dev, cfg.train.amp), crops=crops,
                                      average=average, batch_size=batch_size, workers=workers, progress=progress)
    out = Path(out_dir) if out_dir else Path(run_dir) / f"test_{split}"
    views, crops = dataset.views_per_video, dataset.view.crops
    paths = write_test_reports(result, info["class_names"], dataset.video_ids, out,
                               extra={"split": split, "crops": crops, "views_per_video": views, "average": average,
                                      "run": str(run_dir), **(info.get("data") or {})})
    return RunEvaluation(result, paths, split, crops, views, average)
