import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, tiny_overrides
from videos import make_broken, write
from video_adapt import predict
from video_adapt.config import load_config
from video_adapt.data.synthetic import SyntheticSpec, generate_clip
from video_adapt.engine import train
from video_adapt.inference import WindowPrediction, segments


@pytest.fixture(scope="module")
def trained_run(synthetic_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("infer_run")
    train(load_config(None, tiny_overrides(synthetic_store, out, "model.tuning=full", "train.epochs=1")))
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    spec = SyntheticSpec(size=32, frames=16)
    for i, suffix in enumerate([".mp4", ".webm", ".avi"]):
        write(folder / f"clip{i}{suffix}", generate_clip(i, np.random.default_rng(i), spec))
    return folder


@pytest.mark.slow
def test_predict_mp4_webm_avi_and_a_folder(trained_run, clips):
    files = sorted(str(p) for p in clips.iterdir())
    results = predict(files, checkpoint=str(trained_run), topk=3)
    assert [r.error for r in results] == [None] * 3
    for r in results:
        assert len(r.top) == 3 and 0 < sum(p for _, p in r.top) <= 1.0001
        assert r.top[0][0] in ("sliding right", "sliding left", "sliding down", "sliding up")
        assert r.top[0][1] >= r.top[1][1]
    from_folder = predict(str(clips), checkpoint=str(trained_run), topk=3)
    assert [r.top for r in from_folder] == [r.top for r in results]


@pytest.mark.slow
def test_corrupt_file_among_good_ones_gets_a_one_line_error(trained_run, clips, tmp_path, capsys):
    bad = make_broken(tmp_path)["garbage"]
    out = subprocess.run([sys.executable, "-m", "video_adapt", "infer", str(clips / "clip0.mp4"), str(bad), str(clips / "clip2.avi"),
                          "--checkpoint", str(trained_run), "--json", str(tmp_path / "r.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-800:]
    assert out.stderr.count("error:") == 1 and str(bad) in out.stderr and "Traceback" not in out.stderr
    assert "2 of 3 videos classified" in out.stdout
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [r["error"] is None for r in rows] == [True, False, True]


@pytest.mark.slow
def test_window_timeline(trained_run, tmp_path):
    spec = SyntheticSpec(size=32, frames=16)
    long = np.concatenate([generate_clip(c, np.random.default_rng(c), spec) for c in (0, 1, 2)])
    path = write(tmp_path / "long.mp4", long, fps=8)  # 48 frames = 6 s
    out = subprocess.run([sys.executable, "-m", "video_adapt", "infer", str(path), "--checkpoint", str(trained_run), "--window", "2",
                          "--stride", "1", "--json", str(tmp_path / "t.json")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-800:]
    result = json.loads((tmp_path / "t.json").read_text())[0]
    assert [w["start_s"] for w in result["windows"]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(w["end_s"] - w["start_s"] == 2.0 for w in result["windows"])
    assert result["segments"][0]["start_s"] == 0.0 and result["segments"][-1]["end_s"] == 6.0


def test_segments_merge_equal_neighbours():
    w = [WindowPrediction(0, 2, "a", 0.5), WindowPrediction(1, 3, "a", 0.7), WindowPrediction(2, 4, "b", 0.9)]
    assert [(s.start_s, s.end_s, s.label, s.prob) for s in segments(w)] == [(0, 3, "a", 0.7), (2, 4, "b", 0.9)]


@pytest.mark.slow
def test_adapters_without_their_backbone_are_refused(synthetic_store, tmp_path, clips):
    import torch
    from video_adapt import create_model
    backbone = tmp_path / "bb.pth"
    torch.save({"model": create_model("vit_nano_patch8_32", num_classes=0).state_dict()}, backbone)
    out = tmp_path / "run"
    train(load_config(None, tiny_overrides(synthetic_store, out, "model.tuning=adaptformer", f"model.pretrained={backbone}",
                                           "train.epochs=1")))
    ok = predict(str(clips / "clip0.mp4"), backbone=str(backbone), adapters=str(out / "adapters"))
    assert ok[0].error is None
    res = subprocess.run([sys.executable, "-m", "video_adapt", "infer", str(clips / "clip0.mp4"), "--adapters", str(out / "adapters")],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "need their backbone" in res.stderr


@pytest.mark.slow
def test_tsne_tool_writes_plot_and_separability(trained_run, synthetic_store, tmp_path):
    from video_adapt.analysis import separability
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    clustered = np.eye(3)[labels] * 5 + rng.normal(0, 0.1, (30, 3))
    assert separability(clustered, labels)["knn_accuracy"] == 100.0
    assert separability(rng.normal(0, 1, (30, 3)), labels)["silhouette"] < 0.2
    out = subprocess.run([sys.executable, "-m", "video_adapt", "tsne", str(trained_run), str(trained_run), "--names", "a", "b",
                          "--out", str(tmp_path / "t.png")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-800:]
    numbers = json.loads((tmp_path / "t.json").read_text())
    assert set(numbers) == {"a", "b"} and numbers["a"] == numbers["b"]
    assert (tmp_path / "t.png").stat().st_size > 5000
