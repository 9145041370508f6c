"""The benchmark scripts run in CI-sized configurations (smoke tests; their timings are not asserted)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_data_smoke(tmp_path):
    out = subprocess.run([sys.executable, "tools/bench_data.py", "--smoke", "--json", str(tmp_path / "d.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1000:]
    figures = json.loads((tmp_path / "d.json").read_text())
    assert figures["loader clips/s, 0 workers: on the fly"] > 0
    assert figures["loader clips/s, 0 workers: jpeg, source size"] > 0
    assert set(figures["random tube read+decode ms"]) == {"hdf5 jpeg", "hdf5 raw", "ours jpeg"}


@pytest.mark.slow
def test_bench_model_smoke(tmp_path):
    out = subprocess.run([sys.executable, "tools/bench_model.py", "--sizes", "tiny", "--forward-only", "--frames", "2",
                          "--img-size", "32", "--batch", "1", "--steps", "1", "--in-process", "--json", str(tmp_path / "m.json"),
                          "--methods", "full", "adaptformer", "vpt", "linear", "lora", "lora-merged"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1000:]
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert {(r["impl"], r["method"], r["mode"]) for r in rows} >= {("hf", "full", "train"), ("ours", "adaptformer", "train"),
                                                                   ("ours", "full", "eval")}
    assert "vs HF time" in out.stdout and "FLOP ratio" in out.stdout
    flops = {(r["impl"], r["method"], r["mode"]): r["flops_per_clip"] for r in rows}
    assert flops[("ours", "linear", "train")] < flops[("ours", "adaptformer", "train")] < flops[("ours", "full", "train")]
    assert flops[("hf", "full", "train")] == flops[("ours", "full", "train")]
    # a merged LoRA model is the backbone again: its forward costs what the plain model's does
    assert flops[("ours", "lora-merged", "eval")] == flops[("ours", "full", "eval")] < flops[("ours", "lora", "eval")]
    assert ("ours", "lora-merged", "train") not in flops


def test_bench_model_rejects_auto_batch_without_a_gpu():
    out = subprocess.run([sys.executable, "tools/bench_model.py", "--batch", "auto"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 2 and "--batch auto needs --device cuda" in out.stderr


@pytest.mark.slow
def test_bench_e2e_smoke(tmp_path):
    out = subprocess.run([sys.executable, "tools/bench_e2e.py", "--smoke", "--json", str(tmp_path / "e.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    figures = json.loads((tmp_path / "e.json").read_text())
    for key in ("model only clips/s", "0 workers: tubes, epoch clips/s", "0 workers: tubes, amortised clips/s",
                "0 workers: on the fly clips/s"):
        assert figures[key] > 0, key
    # amortising the one-off preparation can only lower the epoch rate
    assert figures["0 workers: tubes, amortised clips/s"] < figures["0 workers: tubes, epoch clips/s"]
    assert "| 0 |" in out.stdout


@pytest.mark.slow
def test_bench_e2e_reads_a_folder_of_own_videos(tmp_path):
    from video_adapt.benchmarks.sources import make_sources
    for name in ("run", "jump"):
        (tmp_path / name).mkdir()
        make_sources(tmp_path / name, 2, 12, 48, 64)
    out = subprocess.run([sys.executable, "tools/bench_e2e.py", "--smoke", "--videos-dir", str(tmp_path),
                          "--json", str(tmp_path / "e.json")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    assert json.loads((tmp_path / "e.json").read_text())["0 workers: on the fly clips/s"] > 0
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, "tools/bench_e2e.py", "--smoke", "--videos-dir", str(empty)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "no videos" in out.stderr


def test_auto_batch_doubles_until_out_of_memory():
    from video_adapt.benchmarks.hardware import largest_batch
    from video_adapt.errors import VideoAdaptError
    tried = []

    def run(batch: int) -> None:
        tried.append(batch)
        if batch > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert largest_batch(run, start=4) == 32 and tried == [4, 8, 16, 32, 64]
    with pytest.raises(VideoAdaptError, match="does not fit"):
        largest_batch(run, start=64)


def test_mfu_peak_is_known_for_gpus_and_given_on_cpus(monkeypatch):
    from video_adapt.benchmarks.hardware import PEAK_TFLOPS, peak_tflops
    assert peak_tflops("cpu", None) is None and peak_tflops("cpu", 2.5) == 2.5
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    assert peak_tflops("cuda", None) == PEAK_TFLOPS["H200"]
    assert peak_tflops("cuda", 100.0) == 100.0
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA GeForce RTX 4090")
    assert peak_tflops("cuda", None) is None
