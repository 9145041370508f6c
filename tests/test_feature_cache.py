"""Linear probing from cached features (train.feature_cache, video_adapt/engine/feature_cache.py): the cached head
computes what the whole model computes, view k is epoch k's clip and epochs cycle through K views, the run's adapter
files test and predict as any linear probe's, a killed run resumes to the uninterrupted weights, other methods are
refused."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import default_collate

from conftest import ROOT, tiny_overrides
from video_adapt import create_model
from video_adapt.config import ConfigError, load_config
from video_adapt.data.datasets import MonitorClips, StoreSource, TrainClips
from video_adapt.distributed import DistState
from video_adapt.engine import load_run, loop, train
from video_adapt.data.protocol import DataProtocol
from video_adapt.engine.data import batch_to_device, build_loaders, data_facts, resolve_data, to_model_input
from video_adapt.engine.feature_cache import CACHE_FILE, PooledHead, cache_features

TOL = dict(rtol=1e-5, atol=1e-5)  # batch composition may change BLAS blocking, hence the float32 rounding


def _args(backbone: Path, *extra: str) -> list[str]:
    return ["model.tuning=linear", f"model.pretrained={backbone}", *extra]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapters" / "adapter_model.safetensors"))


@pytest.mark.parametrize("pooling", [True, False])
def test_pooled_head_on_pooled_features_is_the_model_on_the_clip(pooling):
    """What is cached is everything before fc_norm (which trains): the cached head gives the model's logits, with
    head_bn on batch statistics (training) and on running statistics (eval)."""
    torch.manual_seed(0)
    model = create_model("vit_nano_patch8_32", num_classes=5, tuning="linear", head_bn=True, use_mean_pooling=pooling)
    x = torch.randn(6, 3, 4, 32, 32)
    head = PooledHead(model)
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            pooled = model.forward_pooled(x)
            assert torch.equal(head(pooled), model(x))
    assert [n for n, p in head.named_parameters() if p.requires_grad] == [
        f"model.{n}" for n, p in model.named_parameters() if p.requires_grad]


def test_view_k_is_the_clip_of_epoch_k_and_epochs_cycle_through_k_views(synthetic_store, backbone, tmp_path):
    cfg = load_config(None, tiny_overrides(synthetic_store, tmp_path, *_args(backbone, "train.feature_cache=2")))
    cfg = resolve_data(cfg, data_facts(cfg))
    dist = DistState()
    torch.manual_seed(0)
    model = create_model("vit_nano_patch8_32", num_classes=4, tuning="linear", num_frames=4, img_size=32)
    data = build_loaders(cfg, dist)
    cached, report = cache_features(model, data, cfg, dist, None, tmp_path)
    assert (report.views, report.videos, report.monitored, report.reused) == (2, 24, 12, False)
    assert report.bytes == (2 * 24 + 12) * 32 * 4  # K x videos (+ monitoring views) x D x float32
    clips = TrainClips(StoreSource(synthetic_store, "train"), DataProtocol.from_config(cfg.data).train_view(), seed=cfg.train.seed)
    for view in (0, 1):
        clips.set_epoch(view)
        x, _ = batch_to_device(default_collate([clips[3], clips[17]]), torch.device("cpu"))
        model.train()
        with torch.no_grad():
            expected = model.forward_pooled(x)
        assert torch.allclose(cached.train_set.features[view, [3, 17], 0], expected, **TOL)
    assert not torch.allclose(cached.train_set.features[0], cached.train_set.features[1])  # two draws
    for epoch, view in ((0, 0), (1, 1), (2, 0), (5, 1)):  # epoch e trains on view e % K
        cached.train_set.set_epoch(epoch)
        data.sampler.set_epoch(epoch)
        x, y = next(iter(cached.loader))
        first = list(data.sampler)[:cfg.data.batch_size]
        assert torch.equal(x, cached.train_set.features[view, first, 0])  # the uncached run's order and batch
        assert y.tolist() == [data.train_set.labels[i] for i in first]
    assert len(cached.loader) == len(data.loader)
    monitor = MonitorClips(StoreSource(synthetic_store, "val"), DataProtocol.from_config(cfg.data).train_view(), seed=cfg.train.seed)
    views, _, index = next(iter(cached.val_loader))
    model.eval()
    with torch.no_grad():
        expected = model.forward_pooled(to_model_input(monitor[int(index[1])][0], torch.device("cpu")))
    assert torch.allclose(views[1], expected, **TOL)
    # the same key loads the saved features; another seed draws other views and recomputes them
    assert cache_features(model, data, cfg, dist, None, tmp_path)[1].reused
    other = load_config(None, tiny_overrides(synthetic_store, tmp_path, *_args(backbone, "train.feature_cache=2",
                                                                              "train.seed=1")))
    assert not cache_features(model, data, resolve_data(other, data_facts(other)), dist, None, tmp_path)[1].reused


@pytest.fixture(scope="module")
def runs(synthetic_store, backbone, tmp_path_factory) -> dict[str, Path]:
    """An uncached linear probe and a cached one with K = epochs = 2: the same clips in the same batches."""
    root = tmp_path_factory.mktemp("cache_runs")
    out = {"uncached": root / "uncached", "cached": root / "cached"}
    train(load_config(None, tiny_overrides(synthetic_store, out["uncached"], *_args(backbone))))
    train(load_config(None, tiny_overrides(synthetic_store, out["cached"], *_args(backbone, "train.feature_cache=2"))))
    return out


def test_cached_run_with_k_equal_to_epochs_trains_the_uncached_weights(runs):
    a, b = _weights(runs["uncached"]), _weights(runs["cached"])
    assert a.keys() == b.keys() == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias",
                                    "head_bn.running_mean", "head_bn.running_var", "head_bn.num_batches_tracked"}
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), **TOL), key
    summary = json.loads((runs["cached"] / "summary.json").read_text())
    assert summary["feature_cache"]["views"] == 2 and not summary["feature_cache"]["reused"]
    assert summary["protocol"]["feature_cache"] == 2
    assert json.loads((runs["uncached"] / "summary.json").read_text())["feature_cache"] is None
    assert (runs["cached"] / CACHE_FILE).exists() and not (runs["uncached"] / CACHE_FILE).exists()


def test_cached_run_adapters_test_and_predict_on_clips_as_the_cached_head_did(runs, synthetic_store):
    """The adapter files of a cached run, on the backbone, give on a clip the logits the cached head gave on that
    clip's cached feature; the multi-view test and inference run from them as for any run."""
    from video_adapt import predict
    from video_adapt.cli.test import main as multi_view_test
    run = runs["cached"]
    model, cfg, _ = load_run(run)
    model.eval()
    saved = torch.load(run / CACHE_FILE, weights_only=True)
    monitor = MonitorClips(StoreSource(synthetic_store, "val"), DataProtocol.from_config(cfg.data).train_view(), seed=cfg.train.seed)
    clips = torch.cat([monitor[i][0] for i in range(4)])
    with torch.no_grad():
        on_clips = model(to_model_input(clips, torch.device("cpu")))
        on_cache = PooledHead(model)(saved["monitor"][:4, 0])
    assert torch.allclose(on_clips, on_cache, **TOL)
    assert multi_view_test([str(run), "--split", "val", "--crops", "3", "--workers", "0"]) == 0
    metrics = json.loads((run / "test_val" / "metrics.json").read_text())
    assert metrics["videos"] == 12 and metrics["views_per_video"] == 2 * 3
    video = next((synthetic_store.parent / "videos").rglob("*.mp4"))
    [prediction] = predict(str(video), checkpoint=str(run), device="cpu")
    assert prediction.error is None and prediction.top


def test_killed_cached_run_resumes_to_exactly_the_uninterrupted_weights(synthetic_store, backbone, tmp_path,
                                                                        monkeypatch):
    args = _args(backbone, "train.feature_cache=2", "train.epochs=3", "train.eval_every=2")
    straight = tmp_path / "straight"
    train(load_config(None, tiny_overrides(synthetic_store, straight, *args)))
    interrupted = tmp_path / "interrupted"
    real_epoch = loop.train_one_epoch

    def dies_in_epoch_2(run, epoch):
        if epoch == 2:  # killed after two saved epochs, on the second pass over view 0
            raise KeyboardInterrupt
        return real_epoch(run, epoch)

    monkeypatch.setattr(loop, "train_one_epoch", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, tiny_overrides(synthetic_store, interrupted, *args)))
    assert not (interrupted / "summary.json").exists() and (interrupted / CACHE_FILE).exists()
    monkeypatch.setattr(loop, "train_one_epoch", real_epoch)
    summary = train(load_config(None, tiny_overrides(synthetic_store, interrupted, *args, "resume=auto")))
    assert summary["feature_cache"]["reused"]  # the resumed run loads the features, it does not recompute them
    a, b = _weights(straight), _weights(interrupted)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert len((interrupted / "metrics.csv").read_text().splitlines()) == 4


@pytest.mark.parametrize("override, message", [
    ("model.tuning=adaptformer", "train.feature_cache is for linear probing: model.tuning=adaptformer"),
    ("train.mixup=0.8", "mixup/cutmix mix clips"),
])
def test_cache_is_refused_where_it_would_change_what_trains(synthetic_store, backbone, tmp_path, override, message):
    cfg = load_config(None, tiny_overrides(synthetic_store, tmp_path, *_args(backbone, "train.feature_cache=2",
                                                                             override)))
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert not (tmp_path / CACHE_FILE).exists()
    result = subprocess.run([sys.executable, "-m", "video_adapt", "train", *tiny_overrides(
        synthetic_store, tmp_path, *_args(backbone, "train.feature_cache=2", override))], cwd=ROOT,
        capture_output=True, text=True)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_two_gloo_processes_cache_and_train_as_one_process(synthetic_store, backbone, tmp_path):
    """Each process caches its share of the videos and gathers the rest; training then matches one process."""
    ddp = tmp_path / "ddp"
    args = tiny_overrides(synthetic_store, ddp, *_args(backbone, "train.feature_cache=2", "model.head_bn=false"),
                          "data.batch_size=4")
    single = tmp_path / "single"
    train(load_config(None, tiny_overrides(synthetic_store, single,
                                           *_args(backbone, "train.feature_cache=2", "model.head_bn=false"))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "video_adapt", "train", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = _weights(single), _weights(ddp)
    for key in a:
        assert torch.allclose(a[key], b[key], **TOL), key
    cached_single = torch.load(single / CACHE_FILE, weights_only=True)
    cached_ddp = torch.load(ddp / CACHE_FILE, weights_only=True)
    assert torch.allclose(cached_single["train"], cached_ddp["train"], **TOL)
    assert torch.allclose(cached_single["monitor"], cached_ddp["monitor"], **TOL)


def test_cached_grid_compares_the_uncached_probe_with_k_4_and_8():
    from video_adapt.experiments import load_grid
    root = ROOT / "video_adapt" / "configs" / "demo"
    grid = load_grid(root / "grid_cached.yaml")
    configs = [load_config(root / "base.yaml", v.overrides) for v in grid["variants"]]
    assert {c.model.tuning for c in configs} == {"linear"}
    assert [c.train.feature_cache for c in configs] == [None, 4, 8]
    assert grid["frames"] == [8] and grid["seeds"] == [0, 1, 2]


def test_bench_cache_times_both_kinds_of_epoch_in_one_process(synthetic_store, backbone, tmp_path):
    """tools/bench_cache.py on the tiny store (its timings are not asserted, only that both are measured)."""
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "tools/bench_cache.py", "--views", "2", "--rounds", "2", "--json", str(out),
                             *tiny_overrides(synthetic_store, tmp_path / "unused", f"model.pretrained={backbone}")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(out.read_text())
    assert len(measured["clips_s"]) == len(measured["cached_s"]) == 2 and measured["views"] == 2
    assert measured["videos"] == 24 and measured["cache_s"] > 0 and "x; caching 2 views" in result.stdout
    assert not (tmp_path / "unused").exists()  # the cache went to a temporary directory
