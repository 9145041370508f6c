"""The fine-tuning loop: AMP, DDP, gradient accumulation, exact resume, non-finite guards, logging.

`train(cfg)` runs a whole job from a `Config`, top to bottom: data, model, optimizer, resume, epochs, summary.
`train_one_epoch(run, epoch)` is one pass over the training loader with the `TrainRun` that `train` built.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, replace
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
from video_adapt.engine.data import (
    DataFacts,
    batch_to_device,
    build_loaders,
    data_facts,
    eval_sampler,
    make_loader,
    resolve_data,
    test_dataset,
    to_model_input,
    view_average,
)
from video_adapt.engine.evaluation import EvalResult, evaluate
from video_adapt.engine.feature_cache import PooledHead, cache_features, check_feature_cache, features_to_device
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
from video_adapt.models.tuning import parameter_report
from video_adapt.schema import validate


@dataclass(kw_only=True)
class TrainRun:
    """What every epoch of a run works with, built once by `train`."""

    cfg: Config
    dist: DistState
    model: nn.Module  # the bare model: evaluated and saved
    net: nn.Module  # what runs forward and backward: the model, DDP-wrapped and/or compiled
    loader: DataLoader
    updater: Updater
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    mixup: VideoMixup | None
    log: RunLog
    test_ids: list[str] | None = None
    cached: bool = False  # train.feature_cache: batches are pooled features on the device, `net` wraps PooledHead

    @property
    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def check_config(cfg: Config, facts: DataFacts) -> int:
    """Fail before training on a config that cannot work with this data; returns the class count."""
    num_classes = len(facts.classes)
    if cfg.model.num_classes is not None and cfg.model.num_classes != num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the data has {num_classes} classes")
    check_backbone(cfg)
    if cfg.train.strategy == "fsdp" and cfg.model.tuning != "full":
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
    wall_start = time.perf_counter()
    out_dir, device = Path(cfg.out_dir), dist.device
    facts = data_facts(cfg)
    cfg = accumulation(resolve_data(cfg, facts), dist.world_size)  # what config.yaml records: the protocol as run
    num_classes = check_config(cfg, facts)
    seed_everything(cfg.train.seed)

    model, load_report = build_model(cfg, num_classes)
    model.to(device)
    sharded = cfg.train.strategy == "fsdp" and dist.enabled
    if sharded:  # before the optimizer: sharding replaces the parameters
        from video_adapt.sharding import shard_model
        shard_model(model)
    data = build_loaders(cfg, dist)
    precision = Precision.create(device, cfg.train.amp)
    cache = None
    if cfg.train.feature_cache:  # linear probing on the frozen backbone's pooled features, computed once
        data, cache = cache_features(model, data, cfg, dist, precision.dtype, out_dir)
    scorer = PooledHead(model) if cache else model  # what a batch goes through
    accum = cfg.train.accum_steps
    global_batch = cfg.data.batch_size * accum * dist.world_size
    lr = learning_rate(cfg, global_batch)
    optimizer = build_optimizer(model, cfg, lr)
    schedule = build_schedule(cfg, lr, global_batch, len(data.loader) // accum)
    updater = Updater(optimizer, schedule, precision)
    mixup, loss_fn = build_loss(cfg, num_classes)
    params = parameter_report(model)
    protocol = protocol_record(cfg, lr, global_batch)

    start_epoch, best = 0, -1.0
    checkpoint = out_dir / "checkpoints" / CHECKPOINT_NAME
    resume_path = find_resume(cfg.resume, checkpoint)
    if resume_path is not None:
        state = load_training_state(resume_path, model, updater, sharded=sharded)
        start_epoch, best = state["epoch"] + 1, state["best_top1"]

    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        print(f"[video_adapt] {cfg.model.name} / {cfg.model.tuning}: {params['trainable']:,} of "
              f"{params['total']:,} parameters train ({100 * params['trainable_ratio']:.2f}%); recipe "
              f"{cfg.train.recipe}, data protocol {cfg.data.protocol} ({facts.dataset}); lr {lr:.3g} at global batch "
              f"{global_batch}; {len(data.train_set)} training videos, {len(data.loader) // accum} steps/epoch on "
              f"{dist.world_size} process(es)")
        if load_report is not None:
            print(f"[video_adapt] {load_report.summary()}")
        elif cfg.model.pretrained is None:
            print("[video_adapt] no model.pretrained: full fine-tuning from a random initialisation")
        if cache is not None:
            print(f"[video_adapt] {cache.line()}")
        if resume_path is not None:
            print(f"[video_adapt] resumed from {resume_path} at epoch {start_epoch}")
        else:
            (out_dir / "metrics.csv").unlink(missing_ok=True)  # a fresh run does not append to an old run's rows
    run = TrainRun(cfg=cfg, dist=dist, model=model, net=_distributed(scorer, cfg, dist, sharded), loader=data.loader,
                   updater=updater, loss_fn=loss_fn, mixup=mixup, log=RunLog(out_dir, dist.is_main),
                   cached=cache is not None)
    step_memory = counted_step_memory(cfg, num_classes, precision.dtype) if dist.is_main and device.type == "cpu" \
        else None
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()  # this run's peak, not an earlier run's of the same process (a grid, the demo)
    class_names = list(facts.classes)
    test_split = cfg.data.test_split or cfg.data.val_split
    # a best checkpoint chosen on the split that is reported would be a test-set choice: only for another split
    best_dir = out_dir / f"best_{cfg.data.val_split}"
    keep_best = cfg.train.keep_best and data.val_loader is not None and cfg.data.val_split != test_split

    monitored = None
    for epoch in range(start_epoch, cfg.train.epochs):
        data.sampler.set_epoch(epoch)
        data.train_set.set_epoch(epoch)
        stats = train_one_epoch(run, epoch)
        row: dict[str, Any] = {"epoch": epoch, "step": updater.step, **stats, "lr": updater.lr}
        last = epoch == cfg.train.epochs - 1
        if data.val_loader is not None and ((epoch + 1) % cfg.train.eval_every == 0 or last):
            monitored = evaluate(scorer, data.val_loader, device, updater.precision.dtype, num_classes, dist_state=dist,
                                 inputs=features_to_device if cache else to_model_input)
            row.update(val_top1=monitored.top1, val_top5=monitored.top5, val_loss=monitored.loss)
            improved = keep_best and monitored.top1 > best
            if improved:
                best = monitored.top1
            gathered = _gathered(run, sharded, optimizer=False) if improved else None
            if dist.is_main and improved:
                save_adapters(model, best_dir, class_names, extra={"data": protocol, "epoch": epoch,
                                                                    "chosen_on": cfg.data.val_split},
                              weights=gathered and gathered["weights"])
        gathered = _gathered(run, sharded)
        if dist.is_main:
            run.log.epoch_row(row)
            run.log.scalars(updater.step, {f"epoch/{k}": float(v) for k, v in row.items() if isinstance(v, (int, float))})
            save_training_state(checkpoint, model, updater, gathered=gathered, epoch=epoch, best_top1=best,
                                config=cfg.as_dict())
            print(f"[video_adapt] epoch {epoch}: " + ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "epoch"))
        barrier(dist)

    # the reported number, as both papers report it: the final epoch's model on every test view of the test split
    result = final_test(run, test_split, num_classes) if test_split else None
    gathered = _gathered(run, sharded, optimizer=False)
    summary: dict[str, Any] = {}
    if dist.is_main:
        check_finite_weights(model, gathered and gathered["weights"])
        final_dir = save_adapters(model, out_dir / "adapters", class_names, extra={"data": protocol},
                                  weights=gathered and gathered["weights"])
        summary = _summary(cfg, dist, params, result, monitored, wall_start)
        summary["step_memory_bytes"] = step_memory
        summary["protocol"] = {**protocol, "test_split": test_split}
        summary["feature_cache"] = asdict(cache) if cache else None
        summary["best"] = {"top1": best, "split": cfg.data.val_split, "dir": str(best_dir)} if best >= 0 else None
        summary["outputs"] = {"adapters": str(final_dir), "metrics": str(out_dir / "metrics.csv"),
                              "checkpoint": str(checkpoint)}
        if result is not None:
            summary["outputs"]["test"] = str(write_test_reports(result, class_names, run.test_ids,
                                                                out_dir / f"test_{test_split}",
                                                                extra={"split": test_split, **protocol})["metrics"])
        write_json_atomic(out_dir / "summary.json", summary)
        views = f"{protocol['test_clips']} x {protocol['test_crops']} views"
        print(f"[video_adapt] done: final top-1 {summary['final_top1']} on {test_split} ({views}, "
              f"{protocol['view_average']} averaged), {summary['wall_time_s']:.1f} s")
        for name, path in summary["outputs"].items():
            print(f"[video_adapt] {name}: {path}")
        print(f"[video_adapt] summary: {out_dir / 'summary.json'}")
    run.log.close()
    return summary


def protocol_record(cfg: Config, lr: float, global_batch: int) -> dict[str, Any]:
    """What a number depends on, stored next to it (summary.json, adapter files, comparison tables), and what
    inference needs to make the same test views."""
    d, t = cfg.data, cfg.train
    return {"recipe": t.recipe, "protocol": d.protocol, "dataset": d.dataset, "num_frames": d.num_frames,
            "img_size": d.img_size, "sampling": d.sampling, "stride": d.stride, "train_crop": d.train_crop,
            "test_sampling": d.test_sampling, "test_clips": d.test_clips, "test_crops": d.test_crops,
            "test_short_side": d.test_short_side, "view_average": d.view_average, "global_batch": global_batch,
            "lr": lr, "epochs": t.epochs, "optimizer": t.optimizer, "feature_cache": t.feature_cache}


def final_test(run: TrainRun, split: str, num_classes: int) -> EvalResult:
    """The multi-view test of the trained model on `split` with the protocol's views and averaging."""
    cfg, dist = run.cfg, run.dist
    dataset = test_dataset(cfg, split)
    run.test_ids = list(dataset.video_ids)
    loader = make_loader(dataset, max(1, cfg.data.batch_size // dataset.views_per_video), eval_sampler(dataset, dist),
                         cfg.data.num_workers, dist.device, drop_last=False)
    return evaluate(run.model, loader, dist.device, run.updater.precision.dtype, num_classes, dist_state=dist,
                    average=view_average(cfg.data))


def _gathered(run: TrainRun, sharded: bool, optimizer: bool = True) -> dict[str, Any] | None:
    """The full weights (and optimizer state) of a sharded model on rank 0, for saving in the one-process layout;
    every rank must call it. None when the model is not sharded."""
    if not sharded:
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


def _summary(cfg: Config, dist: DistState, params: dict[str, Any], result: EvalResult | None,
             monitored: EvalResult | None, wall_start: float) -> dict[str, Any]:
    """The run's summary.json: what was trained, how well, at what cost."""
    device = dist.device
    return {
        "model": cfg.model.name, "tuning": cfg.model.tuning, "pretrained": cfg.model.pretrained,
        "num_frames": cfg.data.num_frames, "epochs": cfg.train.epochs, "seed": cfg.train.seed,
        "final_top1": result.top1 if result else None, "final_top5": result.top5 if result else None,
        "test_videos": result.num_videos if result else 0,
        "monitor_top1": monitored.top1 if monitored else None,  # the last epoch's single-view monitoring
        "trainable_params": params["trainable"], "total_params": params["total"],
        "trainable_ratio": params["trainable_ratio"],
        "wall_time_s": time.perf_counter() - wall_start,
        # the GPU's peak allocation, or the process's peak RSS since the run began (framework included)
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss(),
        "world_size": dist.world_size, "device": str(device),
    }

