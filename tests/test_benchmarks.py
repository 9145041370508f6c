"""The benchmark scripts run in CI-sized configurations (smoke tests; their timings are not asserted)."""
import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT


@pytest.fixture(scope="module")
def bench_sources(tmp_path_factory):
    """3 footage-like VP9 sources of 12 frames at 48 x 64, and a raw and a JPEG store of them."""
    from video_adapt.benchmarks.data_loader import prepare
    from video_adapt.benchmarks.sources import make_sources
    tmp = tmp_path_factory.mktemp("bench")
    sources = make_sources(tmp, 3, 12, 48, 64)
    for codec in ("raw", "jpeg"):
        prepare(sources, tmp / codec, codec)
    return tmp, sources


def test_protocol_views_are_the_official_training_clips():
    from video_adapt.benchmarks.data_loader import protocol_view
    af = protocol_view("adaptformer")
    # AF:datasets/kinetics.py:583-622 + AF:main_video.py:143,188: S-TSN r 4, multi-scale crop only, 8 x 224
    assert (af.sampling, af.stride, af.crop, af.num_frames, af.img_size) == ("tsn", 4, "msc", 8, 224)
    assert (af.flip, af.randaugment, af.reprob, af.num_sample) == (False, None, 0.0, 1)
    vm = protocol_view("videomae")
    # VM:ssv2.py:155-214,250-263 + VM:run_class_finetuning.py:93,105-111: S-SEG, RandAugment, RRC, erasing 0.25,
    # no flip on SSv2, 2 copies (VM:ssv2.py:93-103), 16 frames (the SSv2 scripts)
    assert (vm.sampling, vm.crop, vm.crop_scale, vm.num_frames, vm.flip) == ("seg", "rrc", (0.08, 1.0), 16, False)
    assert (vm.randaugment, vm.reprob, vm.num_sample) == ("rand-m7-n4-mstd0.5-inc1", 0.25, 2)
    hmdb = protocol_view("videomae", dataset="hmdb51")  # VM:kinetics.py:251-272: S-LIN r 4, flip allowed
    assert (hmdb.sampling, hmdb.stride, hmdb.flip) == ("lin", 4, True)
    tube = protocol_view("tube", num_frames=4, img_size=32)  # the removed tube benchmark's clip
    assert (tube.sampling, tube.crop, tube.crop_scale, tube.num_frames, tube.img_size) == ("seg", "rrc", (0.5, 1.0),
                                                                                           4, 32)
    with pytest.raises(ValueError, match="unknown clip protocol"):
        protocol_view("hdf5")


def test_store_and_video_files_serve_the_same_clips(bench_sources):
    """The comparison is like with like: the same rule, draws and augmentation on both sides, so a raw store's
    clips equal the clips decoded from the files, and a JPEG q90 store's differ only by JPEG's error."""
    from video_adapt.benchmarks.data_loader import protocol_view, videos_source
    from video_adapt.data.datasets import StoreSource, TrainClips
    tmp, sources = bench_sources
    for name in ("adaptformer", "videomae"):
        view = protocol_view(name, img_size=32, num_frames=4)
        files = TrainClips(videos_source(sources), view, seed=3)
        other_draw = TrainClips(videos_source(sources), view, seed=4)
        raw = TrainClips(StoreSource(tmp / "raw", "train"), view, seed=3)
        jpeg = TrainClips(StoreSource(tmp / "jpeg", "train"), view, seed=3)
        for i in range(len(sources)):
            clip, label, boxes = files[i]
            assert clip.shape == (view.num_sample, 3, 4, 32, 32)
            assert torch.equal(raw[i][0], clip) and torch.equal(raw[i][2], boxes)
            if view.randaugment is None:  # RandAugment's draws (e.g. posterize) can amplify JPEG's error
                # JPEG's error on these noisy frames is ~3-5 grey levels; another draw differs by ~40
                jpeg_error = (jpeg[i][0].float() - clip.float()).abs().mean()
                assert jpeg_error < 0.25 * (other_draw[i][0].float() - clip.float()).abs().mean()


def test_time_loader_counts_every_copy_after_the_first_batch(bench_sources):
    from video_adapt.benchmarks.data_loader import decode_ms, protocol_view, time_loader
    from video_adapt.data.datasets import StoreSource, TrainClips
    tmp, _ = bench_sources
    vm = protocol_view("videomae", img_size=32, num_frames=4)
    # min 6 clips of 2 copies at batch 2: 3 videos timed + the untimed first batch of 2 = batches 2, 2, 1
    timing = time_loader(TrainClips(StoreSource(tmp / "raw", "train"), vm), 0, 2, 6)
    assert timing.clips == 6 and timing.seconds > 0 and timing.rate == timing.clips / timing.seconds
    af = protocol_view("adaptformer", img_size=32, num_frames=4)
    batched = TrainClips(StoreSource(tmp / "jpeg", "train"), af, decode="batch")
    assert time_loader(batched, 0, 2, 5).clips == 5  # one copy: 5 + 2 videos = batches 2, 2, 2, 1
    assert decode_ms(StoreSource(tmp / "jpeg", "train"), af, 2) > 0


@pytest.mark.slow
def test_bench_data_smoke(tmp_path):
    out = subprocess.run([sys.executable, "tools/bench_data.py", "--smoke", "--json", str(tmp_path / "d.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1000:]
    figures = json.loads((tmp_path / "d.json").read_text())
    src = figures["sources"]
    assert (src["videos"], src["frames"], src["decoded size"]) == (3, 12, [48, 64])
    # raw keeps every decoded frame as H x W x 3 bytes; JPEG q90 is smaller than that, VP9 smaller still
    raw_bytes = figures["stores"]["raw"]["MB"] * 2 ** 20
    assert raw_bytes == pytest.approx(3 * 12 * 48 * 64 * 3)
    assert (figures["stores"]["raw"]["bytes per source byte"] > figures["stores"]["jpeg"]["bytes per source byte"]
            > 1)
    assert raw_bytes / figures["stores"]["raw"]["bytes per source byte"] == pytest.approx(src["KB per video"] * 3e3)
    for name in ("adaptformer", "videomae", "tube"):
        row = figures["loader clips/s"][name]["0 workers"]
        expected = {"jpeg store", "raw store", "videos"}
        if name != "videomae":  # batched decoding needs one copy and no RandAugment
            expected.add("jpeg store, batched decode on cpu")
        assert set(row) == expected and all(v > 0 for v in row.values())
        rounds = figures["loader clips/s, every round"][name]["0 workers"]
        assert all(len(rounds[k]) == 1 and rounds[k][0] == row[k] for k in expected)  # --smoke: one round
        ratios = figures["store / videos"][name]["0 workers"]
        assert ratios["raw store"] == pytest.approx(row["raw store"] / row["videos"])
        assert set(figures["decode ms/clip"][name]) == {"jpeg store", "raw store", "videos"}
    assert "| 0 |" in out.stdout and "bytes per source byte" in out.stdout


def _has_tube_commit() -> bool:
    git = ["git", "-C", str(ROOT), "cat-file", "-e", "b2afcfc^{commit}"]
    return subprocess.run(git, capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_tube_commit(), reason="needs the git history (the tube loader's commit b2afcfc^)")
def test_bench_vs_tube_smoke(tmp_path):
    """Both loaders, the removed one from git and today's, run in one process on the same sources."""
    out = subprocess.run([sys.executable, "tools/bench_vs_tube.py", "--smoke", "--json", str(tmp_path / "t.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1000:]
    figures = json.loads((tmp_path / "t.json").read_text())
    for key in ("jpeg, loader", "jpeg, read", "raw, loader", "raw, read"):
        row = figures[key]
        assert len(row["tube clips/s"]) == len(row["store clips/s"]) == 1 and row["tube median"] > 0
        assert row["ratio median"] == pytest.approx(row["store median"] / row["tube median"])
    assert "store / tube" in out.stdout


def test_bench_vs_tube_without_the_history_is_one_line(monkeypatch, capsys):
    import importlib.util
    from video_adapt.benchmarks import tube_compare
    spec = importlib.util.spec_from_file_location("bench_vs_tube", ROOT / "tools" / "bench_vs_tube.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(tube_compare, "TUBE_COMMIT", "0" * 40)
    assert module.main(["--smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "git cannot give " + "0" * 40 in err and "\n" not in err


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
    assert figures["model only clips/s"] > 0 and figures["prep seconds"] > 0
    row = figures["0 workers"]
    for key in ("store, epoch clips/s", "store, amortised clips/s", "videos clips/s"):
        assert row[key] > 0, key
    # amortising the one-off preparation can only lower the epoch rate
    assert row["store, amortised clips/s"] < row["store, epoch clips/s"]
    assert row["store amortised / videos"] == pytest.approx(row["store, amortised clips/s"] / row["videos clips/s"])
    assert figures["view"]["sampling"] == "tsn" and figures["view"]["crop"] == "msc"
    assert "| 0 |" in out.stdout


@pytest.mark.slow
def test_bench_e2e_reads_a_folder_of_own_videos(tmp_path):
    from video_adapt.benchmarks.sources import make_sources
    for name in ("run", "jump"):
        (tmp_path / name).mkdir()
        make_sources(tmp_path / name, 2, 12, 48, 64)
    # VideoMAE's clip here (2 copies, RandAugment, erasing on the device); the AdaptFormer one in the smoke above
    out = subprocess.run([sys.executable, "tools/bench_e2e.py", "--smoke", "--videos-dir", str(tmp_path),
                          "--protocol", "videomae", "--json", str(tmp_path / "e.json")], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    figures = json.loads((tmp_path / "e.json").read_text())
    assert figures["0 workers"]["videos clips/s"] > 0 and figures["view"]["num_sample"] == "2"
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


def test_tree_bytes_counts_a_hard_linked_shard_once(tmp_path):
    from video_adapt.benchmarks.prep import tree_bytes
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "shard.bin").write_bytes(b"x" * 1000)
    (tmp_path / "b.csv").write_bytes(b"y" * 10)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "shard.bin").hardlink_to(tmp_path / "a" / "shard.bin")  # what data_prep.merge leaves
    assert tree_bytes(tmp_path) == 1010


def test_full_dataset_scales_the_worker_rate_and_adds_the_merge_on_several_machines():
    from video_adapt.benchmarks.prep import KINDS, full_dataset
    ssv2 = KINDS[0]
    m = {"videos/s per worker": 10.0, "store bytes per source byte": 2.0, "store KB per video": 500.0,
         "merge ms per shard file": 5.0}
    one = full_dataset(ssv2, m, workers=16, machines=1, shard_size=500)
    eight = full_dataset(ssv2, m, workers=16, machines=8, shard_size=500)
    assert one["minutes"] == pytest.approx(ssv2.full_videos / 160 / 60) and one["merge s"] == 0
    shards = -(-ssv2.full_videos // 500) + 8
    assert eight["merge s"] == pytest.approx(5e-3 * shards)
    assert eight["minutes"] == pytest.approx((ssv2.full_videos / 1280 + 5e-3 * shards) / 60)
    assert one["store GB"] == eight["store GB"] == pytest.approx(2 * ssv2.full_gb)
    assert one["write MB/s per machine"] == pytest.approx(0.5 * 160)


def test_memory_fit_table_has_a_strategy_column_only_with_sharded_rows():
    from video_adapt.benchmarks.memory_fit import table
    row = {"model": "m", "method": "full", "checkpointing": False, "state_gib": 1.0, "batch_1_gib": 2.0,
           "per_clip_mib": 300.0, "batch @ 24 GB": 7, "cpu_peak_over_count": 1.1, "strategy": "ddp"}
    plain = table([row], [24]).splitlines()
    assert "strategy" not in plain[0] and plain[2].endswith("| 300 | 7 | 1.10 |")
    sharded = table([row, {**row, "strategy": "fsdp", "world_size": 8}], [24]).splitlines()
    assert "strategy" in sharded[0] and "DDP" in sharded[2] and "FSDP x8" in sharded[3]


def test_bench_startup_times_every_probe(tmp_path):
    """tools/bench_startup.py: every probe runs in every round (its timings are not asserted)."""
    out = subprocess.run([sys.executable, "tools/bench_startup.py", "--rounds", "1", "--json", str(tmp_path / "s.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1000:]
    result = json.loads((tmp_path / "s.json").read_text())
    from video_adapt.benchmarks.startup import PROBES
    assert set(result["median_s"]) == set(PROBES) and all(len(t) == 1 for t in result["all_s"].values())


@pytest.mark.slow
def test_bench_export_smoke(tmp_path):
    """Every runtime on the same input, paired; end to end against the Hugging Face pipeline on mp4 files."""
    from video_adapt.benchmarks.deploy import EAGER, RUNTIMES
    import os
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # a script's own folder comes first on sys.path, not the checkout
    out = subprocess.run([sys.executable, "tools/bench_export.py", "--smoke", "--json", str(tmp_path / "x.json")],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-1500:]
    result = json.loads((tmp_path / "x.json").read_text())["results"][0]
    model = result["model only"]
    expected = [name for name in RUNTIMES if not name.startswith("torch.compile")]
    for batch in ("1", "2"):
        rows = model["batches"][batch]
        assert list(rows) == expected and rows[EAGER]["speed-up vs eager fp32"] == 1.0
        for row in rows.values():
            assert len(row["rounds"]) == 1 and row["ms per call"] == pytest.approx(row["rounds"][0])
            assert row["ms per clip"] == pytest.approx(row["ms per call"] / int(batch))
    diffs = model["max abs logit diff vs eager"]
    assert diffs[EAGER] == 0 and max(diffs[n] for n in ("onnxruntime fp32", "openvino fp32",
                                                       "hf videomae sdpa fp32")) < 1e-4
    e2e = result["end to end"]
    assert e2e["videos"] == 2 and set(e2e["ms per video"]) == {EAGER, "onnxruntime fp32", "hf pipeline"}
    ours, hf = e2e["ms per video"][EAGER], e2e["ms per video"]["hf pipeline"]
    assert ours["hf pipeline / ours, 1 video per forward"] == pytest.approx(
        hf["total, 1 video per forward"] / ours["total, 1 video per forward"])
    assert "| onnxruntime int8 |" in out.stdout and "| preprocess (decode + image processor) |" in out.stdout


@pytest.mark.slow
def test_bench_multitask_smoke(tmp_path):
    """One process with two tasks against two processes with one each, on the same videos: a row per side, the
    separate side's memory summed over its two processes (timings not asserted)."""
    import os
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "tools/bench_multitask.py", "--smoke", "--families", "mixed", "--counts", "2",
                          "--out", str(tmp_path / "data"), "--json", str(tmp_path / "m.json")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-1500:]
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert [(r["serving"], r["processes"], r["tasks"], r["failed"]) for r in rows] == [
        ("one process", 1, 2, 0), ("separate processes", 2, 2, 0)]
    assert all(len(r["rounds_s"]) == 1 and r["videos_per_s"] == pytest.approx(3 / r["wall_s"], rel=0.01) for r in rows)
    one, separate = rows
    assert separate["peak_rss_mb"] > 1.5 * one["peak_rss_mb"]  # two interpreters and two copies of torch
    assert sorted(p.name for p in (tmp_path / "data" / "mixed").iterdir()) == ["t0_linear", "t1_adaptformer",
                                                                              "videos", "vit_nano_patch8_32_4f.safetensors"]
    out = subprocess.run([sys.executable, "tools/bench_multitask.py", "--smoke", "--forward", "--families", "mixed",
                          "--counts", "2", "--rounds", "2", "--out", str(tmp_path / "data"),
                          "--json", str(tmp_path / "f.json")], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-1500:]
    forward = json.loads((tmp_path / "f.json").read_text())["forward"]["2 x mixed"]
    # a linear probe and an AdaptFormer: the clips once for the probe, once for the AdaptFormer
    assert list(forward) == ["every task, one mixed forward of 4 rows", "the first task's model, one forward of 4 rows",
                             "each task's own model, 2 rows each"]
    assert all(len(rounds) == 2 for rounds in forward.values())
