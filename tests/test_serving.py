"""Several tasks on one backbone (video_adapt/serving.py, video_adapt/models/multitask.py): each task's result equals
its own single-task Predictor on real mp4 files, one batch mixes tasks, the backbone is in memory once, and what
cannot share a backbone is refused in one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from videos import write
from video_adapt.benchmarks.multitask import random_adapters
from video_adapt.data.protocol import DataProtocol
from video_adapt.data.synthetic import SyntheticSpec, generate_clip
from video_adapt.errors import CheckpointError, ConfigError
from video_adapt.inference import Predictor
from video_adapt.serving import MultiTaskPredictor, parse_tasks

ROOT = Path(__file__).resolve().parents[1]
MODEL = "vit_nano_patch8_32"
PROTOCOL = DataProtocol(num_frames=4, img_size=32, test_clips=2, test_crops=1, view_average="logits")
# every method that can share a backbone, with options that make each one do real work
METHODS = {"linear": dict(head_bn=True), "adaptformer": dict(bottleneck=4), "lora": dict(lora_targets=["qkv", "fc1"]),
           "st_adapter": dict(bottleneck=4), "vpt": dict(vpt_tokens=2), "bitfit": {}}


@pytest.fixture(scope="module")
def tasks(backbone, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("tasks")
    return {method: str(random_adapters(backbone, out / method, MODEL, method, 3 + i, PROTOCOL, seed=i, **options))
            for i, (method, options) in enumerate(METHODS.items())}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("serving_clips")
    spec = SyntheticSpec(size=32, frames=16)
    return [str(write(folder / f"clip{i}.mp4", generate_clip(i, np.random.default_rng(i), spec), fps=8))
            for i in range(3)]


@pytest.fixture(scope="module")
def multi(tasks, backbone) -> MultiTaskPredictor:
    return MultiTaskPredictor.load(tasks, str(backbone), device="cpu")


@pytest.fixture(scope="module")
def singles(tasks, backbone) -> dict[str, Predictor]:
    return {name: Predictor.load(backbone=str(backbone), adapters=d, device="cpu") for name, d in tasks.items()}


def test_every_task_equals_its_single_task_predictor_on_mp4_files(multi, singles, files):
    assert (multi.model.plain, multi.model.mixed, multi.model.grouped) == ([0], [1, 2, 3], [4, 5])
    results = multi.predict(files, topk=3, batch_videos=2)  # a full batch and a partial one
    for name, single in singles.items():
        expected = single.predict(files, topk=3)
        for got, want in zip(results, expected):
            assert got.error is None and got.path == want.path
            assert [label for label, _ in got.tasks[name].top] == [label for label, _ in want.top], name
            assert np.allclose([p for _, p in got.tasks[name].top], [p for _, p in want.top], atol=1e-5), name


def test_one_mixed_batch_gives_each_row_its_tasks_logits(multi, singles):
    """Rows of six tasks in one call, in mixed order and with repeats, each equal to its task's own model."""
    order = ["adaptformer", "vpt", "linear", "lora", "adaptformer", "st_adapter", "bitfit", "linear", "lora"]
    x = torch.randn(len(order), 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        rows = multi.model(x, order)
        for i, name in enumerate(order):
            expected = singles[name].model(x[i:i + 1])[0]
            assert rows[i].shape == expected.shape
            assert torch.allclose(rows[i], expected, atol=1e-5), name
        for name in ("adaptformer", "lora", "st_adapter"):  # a batch of one task: its modules on every row
            alone = multi.model.every_task(x[:3], [name])[name]
            assert torch.allclose(alone, singles[name].model(x[:3]), atol=1e-5), name


def test_tasks_differ_from_each_other_and_from_the_plain_backbone(multi):
    """The adapters change the features: a routing mistake that skipped them could not pass the tests above."""
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain = multi.model.backbone.forward_pooled(x)
        for name in ("adaptformer", "lora", "st_adapter", "vpt", "bitfit"):
            assert (multi.model.tasks[name].forward_pooled(x) - plain).abs().max() > 1e-3, name
        assert torch.allclose(multi.model.tasks["linear"].forward_pooled(x), plain)


def test_backbone_weights_exist_once_in_memory(multi, tasks, backbone):
    """Every task's frozen backbone tensor is the same storage, and all tasks together hold the backbone file's bytes
    plus their adapter files' bytes: no copy of the backbone."""
    from safetensors import safe_open
    from video_adapt.models.tuning import backbone_key

    def frozen(model):
        return {backbone_key(n): p.untyped_storage().data_ptr() for n, p in model.named_parameters()
                if not p.requires_grad}
    reference = frozen(multi.model.tasks["linear"])
    for name, model in multi.model.tasks.items():
        own = frozen(model)
        assert own and all(reference[k] == ptr for k, ptr in own.items()), name
    held = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in multi.model.parameters()}
    backbone_bytes = sum(t.numel() * 4 for t in torch.load(backbone)["module"].values())
    tuned = 0
    for directory in tasks.values():
        with safe_open(f"{directory}/adapter_model.safetensors", "pt") as f:
            tuned += sum(f.get_tensor(k).numel() * 4 for k in f.keys() if not k.startswith("head_bn."))
    assert sum(held.values()) == backbone_bytes + tuned


def test_linear_tasks_share_one_backbone_forward(tasks, backbone):
    """Three linear probes and an AdaptFormer: the first block runs once, on the clips plus one AdaptFormer copy."""
    out = Path(tasks["linear"]).parent
    probes = {f"probe{i}": str(random_adapters(backbone, out / f"probe{i}", MODEL, "linear", 4, PROTOCOL, seed=10 + i))
              for i in range(3)}
    multi = MultiTaskPredictor.load({**probes, "af": tasks["adaptformer"]}, str(backbone), device="cpu")
    seen = []
    multi.model.backbone.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    x = torch.randn(5, 3, 4, 32, 32)
    with torch.inference_mode():
        logits = multi.model.every_task(x)
    assert seen == [10] and set(logits) == {"probe0", "probe1", "probe2", "af"}
    assert [logits[f"probe{i}"].shape for i in range(3)] == [(5, 4)] * 3 and logits["af"].shape == (5, 4)


def test_timeline_of_every_task_equals_the_single_task_timelines(multi, singles, files):
    result = multi.timeline(files[0], 1.0, "4f", topk=2)
    for name in ("linear", "adaptformer", "vpt"):
        expected = singles[name].timeline(files[0], 1.0, "4f", topk=2)
        got = result.tasks[name]
        assert [(w.start_s, w.end_s, w.label) for w in got.windows] == [(w.start_s, w.end_s, w.label)
                                                                         for w in expected.windows]
        assert [w.start_s for w in got.windows] == [0.0, 0.5, 1.0]  # 16 frames at 8 fps: 8-frame windows every 4
        assert np.allclose([w.prob for w in got.windows], [w.prob for w in expected.windows], atol=1e-5)


def test_tasks_that_cannot_share_the_backbone_are_refused_in_one_line(tasks, backbone, tmp_path):
    from video_adapt import create_model
    other = tmp_path / "other.pth"
    torch.manual_seed(99)
    torch.save({"model": create_model(MODEL, num_classes=0).state_dict()}, other)
    cases = {
        "trained on another backbone": random_adapters(other, tmp_path / "other", MODEL, "adaptformer", 3, PROTOCOL),
        "test views differ from task a's (num_frames 4 vs 8": random_adapters(
            backbone, tmp_path / "frames8", MODEL, "adaptformer", 3, DataProtocol(num_frames=8, img_size=32)),
        "full fine-tuning carries its own backbone": random_adapters(backbone, tmp_path / "full", MODEL, "full", 3,
                                                                     PROTOCOL),
    }
    for reason, directory in cases.items():
        with pytest.raises(CheckpointError) as err:
            MultiTaskPredictor.load({"a": tasks["linear"], "b": str(directory)}, str(backbone), device="cpu")
        assert reason in str(err.value) and f"task b={directory}" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="pass --backbone FILE"):
        MultiTaskPredictor.load({"a": tasks["linear"]}, None)


def test_adapters_values_name_tasks_or_one_directory(tmp_path):
    assert parse_tasks(["runs/a"]) == (None, [])
    (tmp_path / "lr=0.1").mkdir()
    assert parse_tasks([str(tmp_path / "lr=0.1")]) == (None, [])  # an existing directory, not a task
    assert parse_tasks(["runs/a", "clip.mp4"]) == (None, ["clip.mp4"])  # a file after --adapters DIR is an input
    assert parse_tasks(["x=runs/a", "y=runs/b", "clip.mp4"]) == ({"x": "runs/a", "y": "runs/b"}, ["clip.mp4"])
    for bad, message in ((["x=a", "x=b"], "given twice"), (["=a"], "expected TASK=DIR"),
                         (["x=a", "clip.mp4", "y=b"], "give the tasks together")):
        with pytest.raises(ConfigError, match=message):
            parse_tasks(bad)


@pytest.mark.slow
def test_infer_prints_and_writes_every_task(tasks, backbone, files, multi, tmp_path):
    out = subprocess.run([sys.executable, "-m", "video_adapt", "infer", files[0], files[1], "--backbone", str(backbone),
                          "--adapters", f"probe={tasks['linear']}", f"af={tasks['adaptformer']}", "--topk", "2",
                          "--json", str(tmp_path / "r.json")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-800:]
    expected = MultiTaskPredictor.load({"probe": tasks["linear"], "af": tasks["adaptformer"]}, str(backbone),
                                       device="cpu").predict(files[:2], topk=2)
    lines = out.stdout.splitlines()
    assert lines[0] == f"{files[0]}:"
    assert lines[1] == "  probe: " + ", ".join(f"{label} {p:.3f}" for label, p in expected[0].tasks["probe"].top)
    assert lines[2] == "  af: " + ", ".join(f"{label} {p:.3f}" for label, p in expected[0].tasks["af"].top)
    assert "2 of 2 videos classified" in out.stdout
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [set(r["tasks"]) for r in rows] == [{"probe", "af"}] * 2 and rows[1]["error"] is None
    assert [t["label"] for t in rows[1]["tasks"]["af"]["top"]] == [label for label, _ in expected[1].tasks["af"].top]


@pytest.mark.slow
def test_infer_serves_two_trained_runs_on_their_configured_backbone(synthetic_store, backbone, files, tmp_path):
    """Run directories as tasks, no --backbone: the runs' model.pretrained is the shared backbone."""
    from video_adapt.config import load_config
    from video_adapt.engine import train
    runs = {}
    for method in ("linear", "adaptformer"):
        runs[method] = tmp_path / method
        train(load_config(None, tiny_overrides(synthetic_store, runs[method], f"model.tuning={method}",
                                               f"model.pretrained={backbone}", "train.epochs=1")))
    out = subprocess.run([sys.executable, "-m", "video_adapt", "infer", files[2], "--adapters",
                          *[f"{m}={d}" for m, d in runs.items()], "--window", "1", "--stride", "0.5",
                          "--json", str(tmp_path / "r.json")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-800:]
    row = json.loads((tmp_path / "r.json").read_text())[0]
    for method, run in runs.items():
        single = Predictor.load(str(run), device="cpu").timeline(files[2], 1.0, 0.5)
        assert row["tasks"][method]["top"][0]["label"] == single.top[0][0]
        assert [w["label"] for w in row["tasks"][method]["windows"]] == [w.label for w in single.windows]


@pytest.mark.slow
def test_page_shows_every_tasks_top5_side_by_side_and_a_timeline_panel_each(multi, singles, tmp_path):
    from video_adapt.app import build_app, classify_file
    spec = SyntheticSpec(size=32, frames=16)
    long = write(tmp_path / "long.mp4", np.concatenate([generate_clip(c, np.random.default_rng(c), spec)
                                                         for c in (0, 1, 2)]), fps=8)  # 6 s
    result = classify_file(multi, str(long), 2.0, 1.0, 10**7)
    assert result.ok and list(result.tasks) == list(METHODS)
    for name, single in singles.items():
        want = single.predict([str(long)])[0].top
        assert list(result.tasks[name]) == [label for label, _ in want]
        assert f"{name}: top class **{want[0][0]}**" in result.message
    axes = result.timeline.axes
    assert [ax.get_title(loc="left") for ax in axes] == list(METHODS)
    assert all(len(ax.patches) == 5 for ax in axes)  # windows at 0, 1, 2, 3, 4 s in every panel
    page = build_app(multi)
    ids = {getattr(b, "elem_id", None) for b in page.blocks.values()}
    assert {f"top5-{name}" for name in METHODS} <= ids and "top5" not in ids


def test_app_command_refuses_several_tasks_with_an_export_runtime(tasks, backbone, capsys):
    from video_adapt.cli.app import main
    assert main(["--backbone", str(backbone), "--adapters", f"a={tasks['linear']}", f"b={tasks['lora']}",
                 "--runtime", "onnx"]) == 2
    assert "several tasks run on the torch runtime" in capsys.readouterr().err
