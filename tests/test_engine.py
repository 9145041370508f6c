import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, tiny_overrides
from video_adapt import create_model, load_pretrained
from video_adapt.config import ConfigError, load_config
from video_adapt import engine
from video_adapt.engine import TrainingError, builders, loop, train
from video_adapt.engine.state import check_finite_weights


@pytest.mark.slow
def test_adaptformer_run_writes_everything_and_keeps_the_backbone_frozen(synthetic_store, backbone, tmp_path):
    out = tmp_path / "run"
    summary = train(load_config(None, tiny_overrides(synthetic_store, out, "model.tuning=adaptformer",
                                                     f"model.pretrained={backbone}")))
    for name in ("config.yaml", "metrics.csv", "summary.json", "adapters/adapter_model.safetensors",
                 "test_val/metrics.json", "checkpoints/last.pt"):
        assert (out / name).exists(), name
    assert not list(out.glob("best*"))  # the monitored split is the reported one: no best checkpoint chosen on it
    assert list((out / "tensorboard").iterdir())
    assert summary["trainable_params"] < summary["total_params"] * 0.2
    assert 0 <= summary["final_top1"] <= 100 and summary["epochs"] == 2
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_top1" in rows[0]
    adapters = load_file(str(out / "adapters" / "adapter_model.safetensors"))
    assert any("mlp_adapter.up" in k for k in adapters) and not any("attn.qkv" in k for k in adapters)
    # rebuild: the saved adapters on the original backbone give the run's model
    model, cfg, info = engine.load_run(out)
    reference = create_model("vit_nano_patch8_32", num_classes=0)
    load_pretrained(reference, backbone)
    assert torch.equal(model.blocks[1].attn.qkv.weight, reference.blocks[1].attn.qkv.weight)
    assert not torch.equal(model.blocks[1].mlp_adapter.up.weight, torch.zeros_like(model.blocks[1].mlp_adapter.up.weight))
    assert info["class_names"] == ["sliding right", "sliding left", "sliding down", "sliding up"]
    assert info["data"]["num_frames"] == 4


@pytest.mark.slow
def test_reported_number_is_the_final_epochs_multi_view_test(synthetic_store, backbone, tmp_path):
    """Both papers report the final epoch's model on every test view with their averaging (AF:main_video.py:
    409-416,435-442; VM:run_class_finetuning.py:506-519): summary.json's number is that, recomputed here from the
    saved adapters, not the per-epoch single-view monitoring."""
    from video_adapt.engine.runs import evaluate_run
    out = tmp_path / "run"
    summary = train(load_config(None, tiny_overrides(synthetic_store, out, f"model.pretrained={backbone}",
                                                     "data.test_clips=3", "data.test_crops=2", "train.eval_every=1")))
    again = evaluate_run(out, device="cpu")
    assert again.split == "val" and again.views_per_video == 3 * 2 and again.average == "logits"
    assert summary["final_top1"] == pytest.approx(again.result.top1) and summary["test_videos"] == 12
    p = summary["protocol"]
    assert (p["recipe"], p["test_clips"], p["test_crops"], p["view_average"], p["global_batch"]) == \
        ("adaptformer", 3, 2, "logits", 8)
    assert {"lr", "epochs", "sampling", "num_frames", "test_sampling"} <= set(p)
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # the monitoring view is logged every epoch, the reported number is the final test


def _final_weights(out: Path) -> dict:
    return load_file(str(out / "adapters" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_fsdp_full_fine_tuning_on_two_gloo_processes_matches_one_process(synthetic_store, backbone, tmp_path):
    """train.strategy=fsdp (FSDP2, weights/gradients/AdamW state sharded over 2 CPU processes) trains the weights of
    one process, writes them in the one-process layout, and resumes from its own checkpoint."""
    common = ["model.tuning=full", f"model.pretrained={backbone}", "model.head_bn=false", "train.epochs=2",
              "train.optimizer=adamw", "train.lr=1e-3", "train.clip_grad=1.0"]
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "video_adapt", "train", *tiny_overrides(synthetic_store, single, *common)],
                   cwd=ROOT, check=True, capture_output=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sharded = tmp_path / "fsdp"
    dies = tmp_path / "dies_in_epoch_1.py"  # both ranks stop after the first saved epoch, as if killed
    dies.write_text("import sys\nfrom video_adapt.engine import loop\nfrom video_adapt.cli.train import main\n"
                    "real = loop.train_one_epoch\n"
                    "def epoch(run, e):\n    if e == 1:\n        raise SystemExit(3)\n    return real(run, e)\n"
                    "loop.train_one_epoch = epoch\nsys.exit(main(sys.argv[1:]))\n")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = tiny_overrides(synthetic_store, sharded, *common, "data.batch_size=4", "train.strategy=fsdp")
    first = subprocess.run([*launch, str(dies), *args], cwd=ROOT, capture_output=True, text=True, env=env)
    assert first.returncode != 0 and (sharded / "checkpoints" / "last.pt").exists(), first.stderr[-2000:]
    assert not (sharded / "summary.json").exists()
    resumed = subprocess.run([*launch, "-m", "video_adapt", "train", *args, "resume=auto"], cwd=ROOT, capture_output=True,
                             text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    a, b = _final_weights(single), _final_weights(sharded)
    assert set(a) == set(b)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    state = torch.load(sharded / "checkpoints" / "last.pt", weights_only=True)
    assert set(state["weights"]) >= set(a)  # one-process layout: loadable with plain load_state_dict
    with pytest.raises(ConfigError, match="train.strategy=fsdp shards full fine-tuning"):
        train(load_config(None, tiny_overrides(synthetic_store, tmp_path / "x", "train.strategy=fsdp",
                                               f"model.pretrained={backbone}")))


@pytest.mark.slow
def test_killed_run_resumes_to_exactly_the_uninterrupted_weights(synthetic_store, backbone, tmp_path, monkeypatch):
    args = ["model.tuning=adaptformer", f"model.pretrained={backbone}", "train.epochs=3",
            "data.randaugment=rand-m7-n2", "model.adapter_dropout=0.1"]
    straight = tmp_path / "straight"
    train(load_config(None, tiny_overrides(synthetic_store, straight, *args)))

    interrupted = tmp_path / "interrupted"
    real_epoch = loop.train_one_epoch

    def dies_in_epoch_2(run, epoch):
        if epoch == 2:  # the process is killed mid-run after 2 saved epochs
            raise KeyboardInterrupt
        return real_epoch(run, epoch)

    monkeypatch.setattr(loop, "train_one_epoch", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, tiny_overrides(synthetic_store, interrupted, *args)))
    assert not (interrupted / "summary.json").exists()
    monkeypatch.setattr(loop, "train_one_epoch", real_epoch)
    train(load_config(None, tiny_overrides(synthetic_store, interrupted, *args, "resume=auto")))
    a, b = _final_weights(straight), _final_weights(interrupted)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert len((interrupted / "metrics.csv").read_text().splitlines()) == 4


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(synthetic_store, backbone, tmp_path):
    common = ["model.tuning=adaptformer", f"model.pretrained={backbone}", "model.head_bn=false", "train.epochs=1",
              "data.flip=true"]
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "video_adapt", "train", *tiny_overrides(synthetic_store, single, *common)],
                   cwd=ROOT, check=True, capture_output=True)
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "video_adapt", "train", *tiny_overrides(synthetic_store, ddp, *common, "data.batch_size=4")],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = _final_weights(single), _final_weights(ddp)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (single, ddp))
    assert sb["world_size"] == 2 and sa["final_top1"] == sb["final_top1"]


@pytest.mark.slow
def test_nonfinite_loss_skips_or_stops(synthetic_store, tmp_path, monkeypatch):
    real = loop.build_loss

    def poisoned(cfg, num_classes):
        mixup, loss_fn = real(cfg, num_classes)
        calls = {"n": 0}

        def loss(logits, target):
            calls["n"] += 1
            value = loss_fn(logits, target)
            return value * float("nan") if calls["n"] == 2 else value
        return mixup, loss

    monkeypatch.setattr(loop, "build_loss", poisoned)
    summary = train(load_config(None, tiny_overrides(synthetic_store, tmp_path / "skip", "model.tuning=linear")))
    rows = (tmp_path / "skip" / "metrics.csv").read_text().splitlines()
    assert rows[1].split(",")[rows[0].split(",").index("skipped_steps")] == "1"
    assert summary["final_top1"] is not None
    with pytest.raises(TrainingError, match="non-finite loss"):
        train(load_config(None, tiny_overrides(synthetic_store, tmp_path / "stop", "model.tuning=linear",
                                               "train.nonfinite=stop")))


def test_nan_weights_are_never_saved():
    model = create_model("vit_nano_patch8_32", num_classes=3, tuning="linear")
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(TrainingError, match="head.weight"):
        check_finite_weights(model)


@pytest.mark.parametrize("override,message", [
    (["model.num_classes=7"], "model.num_classes=7 but the data has 4 classes"),
    (["model.pretrained=null"], "model.pretrained is not set: adaptformer keeps the backbone frozen"),
    (["train.global_batch=12"], "train.global_batch=12 is not a multiple of data.batch_size=8"),
    (["model.pretrained=/nonexistent.pth"], "model.pretrained=/nonexistent.pth"),
])
def test_bad_configs_fail_before_training(synthetic_store, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(load_config(None, tiny_overrides(synthetic_store, tmp_path / "x", *override)))
    assert not (tmp_path / "x" / "checkpoints").exists()


@pytest.mark.slow
def test_missing_store_is_named(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        train(load_config(None, tiny_overrides(tmp_path / "nowhere", tmp_path / "x")))
    out = subprocess.run([sys.executable, "-m", "video_adapt", "train", f"data.root={tmp_path / 'nowhere'}"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: data.root=") and "Traceback" not in out.stderr


@pytest.mark.slow
def test_videomae_recipe_runs_with_mixup_and_layer_decay(synthetic_store, backbone, tmp_path, monkeypatch):
    targets, optimizers = [], []
    real_loss, real_optimizer = loop.build_loss, loop.build_optimizer

    def recording_loss(cfg, num_classes):
        mixup, loss_fn = real_loss(cfg, num_classes)

        def loss(logits, target):
            targets.append(target.detach().clone())
            return loss_fn(logits, target)
        return mixup, loss

    def recording_optimizer(model, cfg, lr):
        optimizers.append(real_optimizer(model, cfg, lr))
        return optimizers[-1]

    monkeypatch.setattr(loop, "build_loss", recording_loss)
    monkeypatch.setattr(loop, "build_optimizer", recording_optimizer)
    summary = train(load_config(None, tiny_overrides(synthetic_store, tmp_path / "vm", "train.recipe=videomae",
                                                     "model.tuning=full", f"model.pretrained={backbone}",
                                                     "train.epochs=1", "train.lr=null")))
    assert summary["trainable_ratio"] == 1.0
    # mixup/cutmix 0.8/1.0 with label smoothing 0.1: soft targets, smoothed everywhere and mixed somewhere
    assert targets and all(t.ndim == 2 and torch.allclose(t.sum(1), torch.ones(len(t))) for t in targets)
    assert all(t.min() > 0 for t in targets)
    assert any(t.max(1).values.min() < 0.9 for t in targets)
    # layer decay 0.75 over stem + 2 blocks + head: the schedule scales the stem's lr by 0.75^3 against the head's
    lrs = [group["lr"] for group in optimizers[0].param_groups]
    assert max(lrs) / min(lrs) == pytest.approx(0.75 ** -3)


@pytest.mark.slow
def test_test_tool_writes_reports(synthetic_store, tmp_path):
    out = tmp_path / "run"
    train(load_config(None, tiny_overrides(synthetic_store, out, "model.tuning=vpt", "model.vpt_tokens=2")))
    result = subprocess.run([sys.executable, "-m", "video_adapt", "test", str(out), "--split", "val", "--crops", "3"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1000:]
    metrics = json.loads((out / "test_val" / "metrics.json").read_text())
    assert metrics["videos"] == 12 and metrics["views_per_video"] == 2 * 3
    assert (out / "test_val" / "confusion.png").stat().st_size > 1000
    lines = (out / "test_val" / "predictions.csv").read_text().splitlines()
    assert len(lines) == 13 and lines[1].startswith("val_00_00000,sliding right,")


@pytest.mark.slow
@pytest.mark.parametrize("dataset,method,recipe,expected", [
    ("ssv2", "adaptformer", "adaptformer", dict(sampling="tsn", test_sampling="dense", test_clips=4, flip=False,
                                                view_average="logits", train_crop="msc")),
    ("hmdb51_split1", "vpt", "adaptformer", dict(sampling="tsn", test_sampling="dense", test_clips=4, flip=False)),
    ("ssv2", "linear", "videomae", dict(sampling="seg", test_sampling="ssv2", test_clips=2, flip=False, num_sample=2,
                                        view_average="softmax", train_crop="rrc", reprob=0.25)),
    ("hmdb51_split1", "full", "videomae", dict(sampling="lin", test_sampling="dense", test_clips=5, flip=True)),
])
def test_dataset_configs_run_the_official_protocol_on_a_prepared_store(dataset, method, recipe, expected, tmp_path):
    """The shipped SSv2 / HMDB51 configs train on stores made by data_prep from the official layouts, and the run
    records the protocol the recipe and the store's dataset kind resolve to (recipes.DATA_PROTOCOLS)."""
    from videos import make_hmdb51, make_ssv2
    from data_prep import hmdb51, ssv2
    store = tmp_path / "store"
    small = ["--short-side", "32", "--out", str(store)]
    if dataset == "ssv2":
        videos, labels = make_ssv2(tmp_path / "raw")
        assert ssv2.main(["--videos", str(videos), "--labels", str(labels), *small]) == 0
    else:
        videos, splits = make_hmdb51(tmp_path / "raw")
        assert hmdb51.main(["--videos", str(videos), "--splits", str(splits), "--split", "1", *small]) == 0
    cfg = load_config(ROOT / "video_adapt" / "configs" / dataset / f"{method}_4f.yaml", [
        f"data.root={store}", "model.num_classes=3", f"out_dir={tmp_path / 'run'}", "train.epochs=1",
        f"train.recipe={recipe}", "train.global_batch=null", "model.pretrained=none", "model.name=vit_nano_patch8_32",
        "data.img_size=32", "data.batch_size=2", "data.num_workers=0", "data.test_crops=1"])
    assert cfg.model.tuning == method and cfg.train.recipe == recipe
    summary = train(cfg)
    assert summary["num_frames"] == 4 and summary["final_top1"] is not None
    resolved = load_config(tmp_path / "run" / "config.yaml").data
    for key, value in expected.items():
        assert getattr(resolved, key) == value, key
    assert summary["protocol"]["test_sampling"] == expected["test_sampling"]


def test_optimizer_holds_only_trainable_tensors_and_skips_decay_on_1d(tmp_path):
    cfg = load_config(None, tiny_overrides(tmp_path, tmp_path / "run", "model.tuning=adaptformer", "train.optimizer=adamw",
                                           "train.weight_decay=0.05"))
    model = create_model("vit_nano_patch8_32", num_classes=3, tuning="adaptformer", bottleneck=4)
    optimizer = builders.build_optimizer(model, cfg, lr=1e-3)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}
    for group in optimizer.param_groups:
        assert all(p.ndim > 1 for p in group["params"]) or group["weight_decay"] == 0
    assert not optimizer.defaults.get("fused")  # fused AdamW is for CUDA tensors only


def test_summary_counts_each_runs_step_memory_and_its_own_peak(synthetic_store, backbone, tmp_path):
    """On a CPU a grid runs in one process, whose lifetime peak RSS says nothing about the run at hand: the peak
    is reset when a run begins, and the comparable figure is the counted step memory of the run's model and batch."""
    from video_adapt.models.memory import counted_step_bytes
    cfg = load_config(None, tiny_overrides(synthetic_store, tmp_path / "a", "model.tuning=adaptformer",
                                           f"model.pretrained={backbone}", "train.epochs=1"))
    ballast = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB held and touched before the run
    ballast += 1
    before = ballast.numel()
    del ballast
    summary = train(cfg)
    torch.manual_seed(0)
    model = create_model("vit_nano_patch8_32", num_classes=4, num_frames=4, img_size=32, tuning="adaptformer",
                         bottleneck=4, head_bn=True, adapter_input="residual", adapter_init="official")  # the recipe's
    expected = counted_step_bytes(model, torch.randn(8, 3, 4, 32, 32), None)
    assert summary["step_memory_bytes"] == expected
    full = train(load_config(None, tiny_overrides(synthetic_store, tmp_path / "b", "model.tuning=full",
                                                  "train.epochs=1")))
    assert full["step_memory_bytes"] > summary["step_memory_bytes"]  # gradients and moments of every weight
    from video_adapt.models.memory import _status_bytes
    assert summary["peak_memory_bytes"] <= _status_bytes("VmRSS") + before // 2  # not the 64 MiB ballast's peak


def test_metrics_csv_keeps_one_header_when_evaluated_epochs_add_columns(tmp_path):
    """Under train.eval_every > 1 the first rows have no val_* columns: the file is rewritten under the union of the
    columns (earlier rows' new cells empty), and a later row without them leaves them empty."""
    import csv

    from video_adapt.engine.runlog import RunLog
    log = RunLog(tmp_path, enabled=True)
    log.epoch_row({"epoch": 0, "train_loss": 2.0})
    log.epoch_row({"epoch": 1, "train_loss": 1.5, "val_top1": 40.0})
    log.epoch_row({"epoch": 2, "train_loss": 1.2})
    log.close()
    with (tmp_path / "metrics.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["epoch", "train_loss", "val_top1"], ["0", "2.0", ""], ["1", "1.5", "40.0"], ["2", "1.2", ""]]
