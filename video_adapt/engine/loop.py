"""The fine-tuning loop: AMP, DDP, gradient accumulation, exact resume, non-finite guards, logging.

`train(cfg)` runs a whole job from a `Config`, top to bottom: data, model, optimizer, resume, epochs, summary.
`train_one_epoch(run, epoch)` is one pass over the training loader with the `TrainRun` that `train` built.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from video_adapt.checkpoint import save_adapters
from video_adapt.config import Config, save_config
from video_adapt.distributed import DistState, any_rank, barrier, cleanup, init_distributed
from video_adapt.engine.builders import (
    VideoMixup,
    build_loss,
    build_model,
    build_optimizer,
    build_schedule,
    check_backbone,
    counted_step_memory,
    learning_rate,
)
from video_adapt.data.protocol import DataProtocol
from video_adapt.engine.data import DataFacts, TrainData, batch_to_device, build_loaders, data_facts, resolve_data, \
    to_model_input
from video_adapt.engine.evaluation import EvalResult, evaluate, multi_view_test
from video_adapt.engine.feature_cache import CacheReport, PooledHead, cache_features, check_feature_cache, \
    features_to_device
from video_adapt.engine.optim import Updater
from video_adapt.engine.precision import Precision
from video_adapt.engine.runlog import RunLog
from video_adapt.engine.seeding import seed_everything
from video_adapt.engine.state import CHECKPOINT_NAME, check_finite_weights, find_resume, load_training_state, \
    save_training_state
from video_adapt.errors import ConfigError, TrainingError
from video_adapt.files import write_json_atomic
from video_adapt.reports import write_test_reports
from video_adapt.models.memory import peak_rss, reset_peak_rss
from video_adapt.models.methods import method_spec
from video_adapt.models.tuning import parameter_report
from video_adapt.schema import validate


@dataclass(kw_only=True)
class TrainRun:
    """What every epoch of a run works with, built once by `start_run`."""

    cfg: Config
    dist: DistState
    model: nn.Module  # the bare model: evaluated and saved
    scorer: nn.Module  # what a batch goes through: the model, or its head on cached features (PooledHead)
    net: nn.Module  # what runs forward and backward: the scorer, DDP-wrapped and/or compiled
    data: TrainData
    updater: Updater
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    mixup: VideoMixup | None
    log: RunLog
    class_names: list[str]
    record: dict[str, Any]  # the protocol and training facts a number depends on (protocol_record)
    params: dict[str, Any]
    checkpoint: Path
    sharded: bool = False
    cache: CacheReport | None = None  # train.feature_cache: batches are pooled features, `net` wraps PooledHead
    start_epoch: int = 0
    best: float = -1.0
    monitored: EvalResult | None = None
    step_memory: int | None = None
    wall_start: float = field(default_factory=time.perf_counter)

    @property
    def loader(self) -> DataLoader:
        return self.data.loader

    @property
    def cached(self) -> bool:
        return self.cache is not None

    @property
    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.out_dir)

    @property
    def test_split(self) -> str | None:
        return self.cfg.data.test_split or self.cfg.data.val_split

    @property
    def keeps_best(self) -> bool:
        """A best checkpoint chosen on the split that is reported would be a test-set choice: only for another."""
        d = self.cfg.data
        return self.cfg.train.keep_best and self.data.val_loader is not None and d.val_split != self.test_split


def check_config(cfg: Config, facts: DataFacts) -> int:
    """Fail before training on a config that cannot work with this data; returns the class count."""
    num_classes = len(facts.classes)
    if cfg.model.num_classes is not None and cfg.model.num_classes != num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the data has {num_classes} classes")
    check_backbone(cfg)
    if cfg.train.strategy == "fsdp" and method_spec(cfg.model.tuning).frozen_backbone:
        raise ConfigError(f"train.strategy=fsdp shards full fine-tuning; {cfg.model.tuning} trains a small part of "
                          "the model and needs no sharding: use train.strategy=ddp")
    pretrained = cfg.model.pretrained
    if pretrained and pretrained != "none" and not Path(pretrained).exists():
        raise ConfigError(f"model.pretrained={pretrained}: no such file or directory")
    if (cfg.train.mixup > 0 or cfg.train.cutmix > 0) and cfg.data.batch_size * (cfg.data.num_sample or 1) % 2:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} must give an even batch with mixup/cutmix")
    check_feature_cache(cfg)
    return num_classes


def accumulation(cfg: Config, world_size: int) -> Config:
    """`train.global_batch` reached by gradient accumulation: accum_steps = global / (batch x processes). The
    official runs' batch (AdaptFormer 16 x 64, VideoMAE 6 x 64) on fewer GPUs gives the same updates; BatchNorm
    (AdaptFormer's head) still sees each micro-batch's statistics, as each of their GPUs did."""
    t = cfg.train
    if t.global_batch is None:
        return cfg
    per_step = cfg.data.batch_size * world_size
    if t.global_batch % per_step:
        raise ConfigError(f"train.global_batch={t.global_batch} is not a multiple of data.batch_size="
                          f"{cfg.data.batch_size} x {world_size} process(es); change one of them, or set "
                          "train.global_batch=null to train at the batch you run")
    return replace(cfg, train=replace(t, accum_steps=t.global_batch // per_step))


def _gradient_sync(net: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP all-reduces (FSDP reduce-scatters) gradients on every backward unless told not to: only the last
    micro-batch of an accumulated update syncs."""
    if hasattr(net, "set_requires_gradient_sync"):  # an FSDP2 module
        net.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if sync or not isinstance(net, DistributedDataParallel):
        return contextlib.nullcontext()
    return net.no_sync()


def train_one_epoch(run: TrainRun, epoch: int) -> dict[str, float]:
    """One pass over the loader: `accum_steps` micro-batches per optimizer update; returns the epoch's stats."""
    cfg, dist, updater = run.cfg, run.dist, run.updater
    accum = cfg.train.accum_steps
    trainable = run.trainable
    run.net.train()
    total_loss, counted, skipped, clips_seen = 0.0, 0, 0, 0
    start = time.perf_counter()
    bar = tqdm(run.loader, desc=f"epoch {epoch}", disable=not dist.is_main, leave=False)
    updater.zero_grad()
    micro_batches = len(run.loader)
    for i, batch in enumerate(bar):
        if i % accum == 0:  # the lr of the update this micro-batch starts (AF:engine_finetune.py:48-50)
            updater.begin(epoch, i, micro_batches)
        x, y = batch if run.cached else batch_to_device(batch, dist.device)
        if run.mixup is not None:
            x, y = run.mixup(x, y)
        last_micro = (i + 1) % accum == 0
        with _gradient_sync(run.net, last_micro):
            with updater.precision.autocast():
                loss = run.loss_fn(run.net(x), y)
            if any_rank(not torch.isfinite(loss).item(), dist):
                if cfg.train.nonfinite == "stop":
                    raise TrainingError(f"non-finite loss at epoch {epoch}, step {updater.step}; lower train.lr, "
                                        "set train.clip_grad, or set train.nonfinite=skip")
                skipped += 1
                updater.zero_grad()
                continue
            updater.backward(loss / accum)
        if not last_micro:
            continue
        updater.update(trainable, cfg.train.clip_grad)
        total_loss += loss.item()
        counted += 1
        clips_seen += len(y) * dist.world_size * accum
        if dist.is_main and updater.step % cfg.train.log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{updater.lr:.2e}")
            run.log.scalars(updater.step, {"train/loss": loss.item(), "train/lr": updater.lr})
    elapsed = time.perf_counter() - start
    stats = {"train_loss": total_loss / max(counted, 1), "skipped_steps": skipped,
             "clips_per_s": clips_seen / elapsed if elapsed > 0 else 0.0, "epoch_time_s": elapsed}
    if dist.device.type == "cuda":
        stats["gpu_peak_gb"] = torch.cuda.max_memory_allocated(dist.device) / 2**30
    return stats


def train(cfg: Config) -> dict[str, Any]:
    """Run a whole fine-tuning job; returns (and writes, on rank 0) the JSON summary."""
    validate(cfg)
    dist_state = init_distributed(cfg.device)
    try:
        return _train(cfg, dist_state)
    finally:
        cleanup(dist_state)


def _train(cfg: Config, dist: DistState) -> dict[str, Any]:
    run = start_run(cfg, dist)
    for epoch in range(run.start_epoch, run.cfg.train.epochs):
        run.data.sampler.set_epoch(epoch)
        run.data.train_set.set_epoch(epoch)
        stats = train_one_epoch(run, epoch)
        row = {"epoch": epoch, "step": run.updater.step, **stats, "lr": run.updater.lr}
        last = epoch == run.cfg.train.epochs - 1
        if run.data.val_loader is not None and ((epoch + 1) % run.cfg.train.eval_every == 0 or last):
            row.update(monitor(run, epoch))
        end_epoch(run, epoch, row)
    return finish_run(run)


def start_run(cfg: Config, dist: DistState) -> TrainRun:
    """Everything a run needs before its first epoch: the protocol resolved, the model with its backbone, the
    data, the optimizer and schedule, a resumed state, and the header lines."""
    facts = data_facts(cfg)
    cfg = accumulation(resolve_data(cfg, facts), dist.world_size)  # what config.yaml records: the protocol as run
    num_classes = check_config(cfg, facts)
    seed_everything(cfg.train.seed)
    model, load_report = build_model(cfg, num_classes)
    model.to(dist.device)
    sharded = cfg.train.strategy == "fsdp" and dist.enabled
    if sharded:  # before the optimizer: sharding replaces the parameters
        from video_adapt.sharding import shard_model
        shard_model(model)
    data = build_loaders(cfg, dist)
    precision = Precision.create(dist.device, cfg.train.amp)
    cache = None
    if cfg.train.feature_cache:  # linear probing on the frozen backbone's pooled features, computed once
        data, cache = cache_features(model, data, cfg, dist, precision.dtype, Path(cfg.out_dir))
    global_batch = cfg.data.batch_size * cfg.train.accum_steps * dist.world_size
    lr = learning_rate(cfg, global_batch)
    schedule = build_schedule(cfg, lr, global_batch, len(data.loader) // cfg.train.accum_steps)
    updater = Updater(build_optimizer(model, cfg, lr), schedule, precision)
    mixup, loss_fn = build_loss(cfg, num_classes)
    out_dir = Path(cfg.out_dir)
    # counted on the run's own model before it trains (CPU only: a GPU reports its peak allocation)
    step_memory = counted_step_memory(model, cfg, precision.dtype) \
        if dist.is_main and dist.device.type == "cpu" and not sharded else None
    scorer = PooledHead(model) if cache else model
    run = TrainRun(cfg=cfg, dist=dist, model=model, scorer=scorer, net=_distributed(scorer, cfg, dist, sharded),
                   data=data, updater=updater, loss_fn=loss_fn, mixup=mixup, log=RunLog(out_dir, dist.is_main),
                   class_names=list(facts.classes), record=protocol_record(cfg, lr, global_batch),
                   params=parameter_report(model), checkpoint=out_dir / "checkpoints" / CHECKPOINT_NAME,
                   sharded=sharded, cache=cache, step_memory=step_memory)
    resume_path = find_resume(cfg.resume, run.checkpoint)
    if resume_path is not None:
        state = load_training_state(resume_path, model, updater, sharded=sharded)
        run.start_epoch, run.best = state["epoch"] + 1, state["best_top1"]
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        _print_header(run, facts, load_report, resume_path)
        if resume_path is None:
            (out_dir / "metrics.csv").unlink(missing_ok=True)  # a fresh run does not append to an old run's rows
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(dist.device)
    reset_peak_rss()  # this run's peak, not an earlier run's of the same process (a grid, the demo)
    return run


def _print_header(run: TrainRun, facts: DataFacts, load_report: Any, resume_path: Path | None) -> None:
    cfg, params, r = run.cfg, run.params, run.record
    print(f"[video_adapt] {cfg.model.name} / {cfg.model.tuning}: {params['trainable']:,} of "
          f"{params['total']:,} parameters train ({100 * params['trainable_ratio']:.2f}%); recipe "
          f"{cfg.train.recipe}, data protocol {cfg.data.protocol} ({facts.dataset}); lr {r['lr']:.3g} at global batch "
          f"{r['global_batch']}; {len(run.data.train_set)} training videos, "
          f"{len(run.loader) // cfg.train.accum_steps} steps/epoch on {run.dist.world_size} process(es)")
    if load_report is not None:
        print(f"[video_adapt] {load_report.summary()}")
    elif cfg.model.pretrained is None:
        print("[video_adapt] no model.pretrained: full fine-tuning from a random initialisation")
    if run.cache is not None:
        print(f"[video_adapt] {run.cache.line()}")
    if resume_path is not None:
        print(f"[video_adapt] resumed from {resume_path} at epoch {run.start_epoch}")


def monitor(run: TrainRun, epoch: int) -> dict[str, float]:
    """The per-epoch single-view monitoring of the validation split; keeps `best_<split>/` when it improves (never
    on the reported split). Returns the row's columns (top-1/top-5, or mAP for a multi-label task, and the loss)."""
    run.monitored = result = evaluate(run.scorer, run.data.val_loader, run.dist.device, run.updater.precision.dtype,
                                      run.model.num_classes, average=run.cfg.data.view_average,
                                      multilabel=bool(run.cfg.data.multilabel), dist_state=run.dist,
                                      inputs=features_to_device if run.cached else to_model_input)
    if run.keeps_best and result.score > run.best:
        run.best = result.score
        gathered = _gathered(run, optimizer=False)
        if run.dist.is_main:
            split = run.cfg.data.val_split
            save_adapters(run.model, run.out_dir / f"best_{split}", run.class_names,
                          extra={"data": run.record, "epoch": epoch, "chosen_on": split},
                          weights=gathered and gathered["weights"])
    if result.multilabel:
        return {"val_map": result.mean_ap, "val_loss": result.loss}
    return {"val_top1": result.top1, "val_top5": result.top5, "val_loss": result.loss}


def end_epoch(run: TrainRun, epoch: int, row: dict[str, Any]) -> None:
    """The epoch's row in metrics.csv and TensorBoard, the training state saved atomically, one line printed."""
    gathered = _gathered(run)
    if run.dist.is_main:
        run.log.epoch_row(row)
        run.log.scalars(run.updater.step, {f"epoch/{k}": float(v) for k, v in row.items()
                                           if isinstance(v, (int, float))})
        save_training_state(run.checkpoint, run.model, run.updater, gathered=gathered, epoch=epoch,
                            best_top1=run.best, config=run.cfg.as_dict())
        print(f"[video_adapt] epoch {epoch}: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "epoch"))
    barrier(run.dist)


def finish_run(run: TrainRun) -> dict[str, Any]:
    """The reported number, as both papers report it: the final epoch's model on every test view of the test split;
    then the adapter files, the test reports and summary.json (rank 0), every output's path printed."""
    cfg, split, out_dir = run.cfg, run.test_split, run.out_dir
    result, test_set = multi_view_test(run.model, cfg, split, run.dist.device, run.updater.precision.dtype,
                                       dist_state=run.dist) if split else (None, None)
    gathered = _gathered(run, optimizer=False)
    summary: dict[str, Any] = {}
    if run.dist.is_main:
        check_finite_weights(run.model, gathered and gathered["weights"])
        adapters = save_adapters(run.model, out_dir / "adapters", run.class_names, extra={"data": run.record},
                                 weights=gathered and gathered["weights"])
        summary = _summary(run, result)
        summary["outputs"] = {"adapters": str(adapters), "metrics": str(out_dir / "metrics.csv"),
                              "checkpoint": str(run.checkpoint)}
        if result is not None:
            reports = write_test_reports(result, run.class_names, test_set.video_ids, out_dir / f"test_{split}",
                                         extra={"split": split, **run.record})
            summary["outputs"]["test"] = str(reports["metrics"])
        write_json_atomic(out_dir / "summary.json", summary)
        r = run.record
        final = summary["final_map"] if summary["metric"] == "mAP" else summary["final_top1"]
        print(f"[video_adapt] done: final {summary['metric']} {final} on {split} ({r['test_clips']} x "
              f"{r['test_crops']} views, {r['view_average']} averaged), {summary['wall_time_s']:.1f} s")
        for name, path in summary["outputs"].items():
            print(f"[video_adapt] {name}: {path}")
        print(f"[video_adapt] summary: {out_dir / 'summary.json'}")
    run.log.close()
    return summary


def protocol_record(cfg: Config, lr: float, global_batch: int) -> dict[str, Any]:
    """What a number depends on, stored next to it (summary.json, adapter files, comparison tables): the resolved
    data protocol, which inference reads back (`DataProtocol.from_record`), and the training facts."""
    t = cfg.train
    return {"recipe": t.recipe, **DataProtocol.from_config(cfg.data).record(), "global_batch": global_batch,
            "lr": lr, "epochs": t.epochs, "optimizer": t.optimizer, "feature_cache": t.feature_cache}


def _gathered(run: TrainRun, optimizer: bool = True) -> dict[str, Any] | None:
    """The full weights (and optimizer state) of a sharded model on rank 0, for saving in the one-process layout;
    every rank must call it. None when the model is not sharded."""
    if not run.sharded:
        return None
    from video_adapt.sharding import full_optimizer_state, full_state_dict
    weights = full_state_dict(run.model)
    state = full_optimizer_state(run.model, run.updater.optimizer) if optimizer else None
    return {"weights": weights, "optimizer": state}


def _distributed(model: nn.Module, cfg: Config, dist: DistState, sharded: bool = False) -> nn.Module:
    """What runs forward and backward: the model, in DDP across processes (or sharded by FSDP2 already) and
    compiled when asked."""
    net = model
    if dist.enabled and not sharded:
        device = dist.device
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=False)
    if cfg.train.compile:
        net = torch.compile(net)
    return net


def _summary(run: TrainRun, result: EvalResult | None) -> dict[str, Any]:
    """The run's summary.json: what was trained, how well, at what cost, under which protocol."""
    cfg, device, params, monitored = run.cfg, run.dist.device, run.params, run.monitored
    return {
        "model": cfg.model.name, "tuning": cfg.model.tuning, "pretrained": cfg.model.pretrained,
        "num_frames": cfg.data.num_frames, "epochs": cfg.train.epochs, "seed": cfg.train.seed,
        # multi-label tasks report mAP (final_map, monitor_map) in place of top-1/top-5
        "metric": "mAP" if cfg.data.multilabel else "top-1",
        "final_top1": result.top1 if result and not result.multilabel else None,
        "final_top5": result.top5 if result and not result.multilabel else None,
        "final_map": result.mean_ap if result and result.multilabel else None,
        "test_videos": result.num_videos if result else 0,
        # the last epoch's single-view monitoring
        "monitor_top1": monitored.top1 if monitored and not monitored.multilabel else None,
        "monitor_map": monitored.mean_ap if monitored and monitored.multilabel else None,
        "trainable_params": params["trainable"], "total_params": params["total"],
        "trainable_ratio": params["trainable_ratio"],
        "wall_time_s": time.perf_counter() - run.wall_start,
        # the GPU's peak allocation, or the process's peak RSS since the run began (framework included)
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss(),
        "world_size": run.dist.world_size, "device": str(device),
        "step_memory_bytes": run.step_memory,
        "protocol": {**run.record, "test_split": run.test_split},
        "feature_cache": asdict(run.cache) if run.cache else None,
        "best": {"top1" if not cfg.data.multilabel else "map": run.best, "split": cfg.data.val_split,
                 "dir": str(run.out_dir / f"best_{cfg.data.val_split}")} if run.best >= 0 else None,
    }
