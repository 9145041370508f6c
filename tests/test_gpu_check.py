"""tools/gpu_check.py: the quick CPU run passes or skips every check with a reason and writes the
report; each check's criterion can fail; the full (GPU) plan fits its budget and calls the tools as they are."""
import dataclasses
import json
import re
import subprocess
import sys

import pytest
import torch

from video_adapt.gpu_check import data, kernels, report, training
from video_adapt.gpu_check.command import FULL_BUDGET_S, all_checks, main
from video_adapt.gpu_check.runner import Check, CheckFailure, Context, Result, Skip, run_checks
from video_adapt.gpu_check.sizes import FULL, QUICK
from conftest import ROOT


def _ctx(tmp_path, sizes=QUICK, **kwargs) -> Context:
    return Context(torch.device("cpu"), sizes, tmp_path, **kwargs)


@pytest.mark.slow
def test_quick_run_passes_or_skips_every_check_with_a_reason(tmp_path):
    assert main(["--prepare", str(tmp_path / "data"), "--quick"]) == 0
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "tools/gpu_check.py", "--quick", "--store", str(tmp_path / "data" / "store"),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert [c["name"] for c in result["checks"]] == [c.name for c in all_checks(QUICK)]
    for check in result["checks"]:
        assert check["status"] in ("pass", "skip"), (check["name"], check["reason"])
        assert check["seconds"] >= 0 and (check["status"] == "pass" or check["reason"]), check["name"]
    assert result["summary"] == {"pass": len(result["checks"]) - result["summary"]["skip"], "fail": 0,
                                 "skip": result["summary"]["skip"]}
    assert result["quick"] and result["command"].startswith("python tools/gpu_check.py --quick")
    assert result["environment"]["torch"] == torch.__version__ and "peft" in result["environment"]["packages"]
    figures = {c["name"]: c["figures"] for c in result["checks"]}
    # the kernel check profiles a real step on the CPU too, and is skipped naming what ran
    sdpa = next(c for c in result["checks"] if c["name"] == "sdpa")
    assert sdpa["status"] == "skip" and "CUDA only" in sdpa["reason"] and figures["sdpa"]["backends"]["forward"]
    assert set(figures["ddp"]["processes"]) == {"1", "2"} and figures["fsdp"]["full_state_round_trip_exact"]
    assert figures["decode"]["max_grey_diff"] <= 1 and figures["train_cli fp16"]["train_loss"]
    assert {(r["impl"], r["method"]) for r in figures["bench_model"]["rows"]} >= {("hf", "full"), ("ours", "adaptformer")}
    assert [g["target"] for g in result["goals"]] == [">= 45% (H100/H200)", ">= 1.2x", ">= 1000", ">= 1.0x", ">= 3x"]
    md = (out / "gpu_check.md").read_text()
    assert "| check | status | seconds | result |" in md and "### Goals against these figures" in md
    for check in result["checks"]:
        assert f"| {check['name']} | {check['status']} |" in md
    assert "report: " in done.stdout


def test_a_failing_check_stops_nothing_and_keeps_its_figures(tmp_path):
    def fails(ctx):
        raise CheckFailure("loss did not fall", {"losses": [1.0, 1.0]})

    def crashes(ctx):
        raise RuntimeError("CUDA error: an illegal memory access\nmore lines")

    def skips(ctx):
        raise Skip("no GPU here", {"seen": 1})
    seen = []
    results = run_checks([Check("a", "fails", fails), Check("b", "crashes", crashes), Check("c", "skips", skips),
                          Check("d", "passes", lambda ctx: {"ok": True})], _ctx(tmp_path),
                         after_each=lambda done: seen.append(len(done)), log=lambda line: None)
    assert [r.status for r in results] == ["fail", "fail", "skip", "pass"] and seen == [1, 2, 3, 4]
    assert results[0].reason == "loss did not fall" and results[0].figures == {"losses": [1.0, 1.0]}
    assert results[1].reason.startswith("RuntimeError: CUDA error") and results[1].figures["traceback"]
    assert results[2].reason == "no GPU here" and results[2].figures == {"seen": 1}
    assert results[3].figures == {"ok": True}


def test_a_check_that_no_longer_fits_the_budget_is_skipped_naming_it(tmp_path):
    sizes = dataclasses.replace(QUICK, expected_s={"compile": 50.0})
    ctx = _ctx(tmp_path, sizes, budget_s=30.0)
    results = run_checks([Check("ddp", "fast", lambda c: {}), Check("compile", "slow", lambda c: {})], ctx,
                         log=lambda line: None)
    assert [r.status for r in results] == ["pass", "skip"]
    assert results[1].reason.startswith("time budget:") and "takes about 50 s" in results[1].reason


def test_a_subprocess_failure_names_the_tool_and_its_last_words(tmp_path):
    with pytest.raises(CheckFailure, match=r"^video-adapt train: exit 2: error: unknown config key .no_such."):
        _ctx(tmp_path).run(["-m", "video_adapt", "train", "no_such.key=1"])


def _frozen_weight_moves(build):
    def broken(*args, **kwargs):
        model = build(*args, **kwargs)
        weight = model.blocks[0].attn.qkv.weight

        def bump(module, inputs):
            with torch.no_grad():
                weight.add_(1e-3)
        model.register_forward_pre_hook(bump)
        return model
    return broken


def test_method_steps_pass_and_fail_when_a_frozen_weight_moves(tmp_path, monkeypatch):
    figures = training.method_steps(_ctx(tmp_path), "adaptformer", "fp16")
    assert figures["losses"][-1] < figures["losses"][0] and not figures["frozen_changed"]
    monkeypatch.setattr(training, "build", _frozen_weight_moves(training.build))
    with pytest.raises(CheckFailure, match="frozen tensors changed"):
        training.method_steps(_ctx(tmp_path), "adaptformer", "bf16")


def test_method_steps_fail_when_nothing_trains(tmp_path):
    with pytest.raises(CheckFailure, match="did not fall.*tuned tensors unchanged") as err:
        training.method_steps(_ctx(tmp_path, dataclasses.replace(QUICK, lr=0.0)), "vpt", "bf16")
    assert err.value.figures["tuned_unchanged"]


def test_lora_is_skipped_without_peft(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(Skip, match="peft is not installed"):
        training.method_steps(_ctx(tmp_path), "lora", "bf16")
    assert training.needs_package("adaptformer") is None


def test_decode_compares_the_batch_with_the_workers_and_fails_beyond_one_grey_level(synthetic_store, tmp_path,
                                                                                 monkeypatch):
    figures = data.decode(_ctx(tmp_path, store=synthetic_store))
    assert figures["max_grey_diff"] == 0 and figures["engine_decode"] == "worker" and figures["decoded_on"] == "cpu"
    from video_adapt.data import datasets
    real = datasets.decode_batch

    def off_by_two(clips, device):
        frames, boxes = real(clips, device)
        return frames.clamp(max=250) + 2, boxes
    monkeypatch.setattr(datasets, "decode_batch", off_by_two)
    with pytest.raises(CheckFailure, match="up to 2 grey levels"):
        data.decode(_ctx(tmp_path, store=synthetic_store))


def test_without_a_store_or_pyav_the_data_checks_skip_naming_prepare(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "av" else real(name, *a))
    with pytest.raises(Skip, match="--prepare"):
        data.train_cli(_ctx(tmp_path), "bf16")
    from video_adapt.gpu_check import tools
    with pytest.raises(Skip, match="av wheel"):
        tools.bench_e2e(_ctx(tmp_path))


def test_sdpa_backends_are_read_from_the_profiled_ops():
    cuda = ["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention",
            "aten::_scaled_dot_product_flash_attention_backward", "void pytorch_flash::flash_fwd_kernel<Flash_fwd>"]
    used = kernels.sdpa_backends(cuda)
    assert used == {"forward": ["flash"], "backward": ["flash"]} and kernels.sdpa_problem(used) is None
    assert kernels.attention_kernels(cuda) == ["void pytorch_flash::flash_fwd_kernel<Flash_fwd>"]
    efficient = kernels.sdpa_backends(["aten::_scaled_dot_product_efficient_attention",
                                       "aten::_scaled_dot_product_efficient_attention_backward"])
    assert kernels.sdpa_problem(efficient) is None
    cpu = kernels.sdpa_backends(["aten::_scaled_dot_product_flash_attention_for_cpu",
                                 "aten::_scaled_dot_product_flash_attention_for_cpu_backward"])
    assert cpu == {"forward": ["flash"], "backward": ["flash"]}
    math_ = kernels.sdpa_backends(["aten::_scaled_dot_product_attention_math", "aten::bmm"])
    assert math_ == {"forward": ["math"], "backward": []}
    assert "forward math, backward none" in kernels.sdpa_problem(math_)
    cudnn = kernels.sdpa_backends(["aten::_scaled_dot_product_cudnn_attention",
                                   "aten::_scaled_dot_product_cudnn_attention_backward"])
    assert "not only flash or memory-efficient" in kernels.sdpa_problem(cudnn)
    assert "none" in kernels.sdpa_problem(kernels.sdpa_backends([]))


def _rows(af_clips: float, hf_clips: float, eval_clips: float) -> list[dict]:
    common = {"model": "vit_base_patch16_224", "frames": 16, "img_size": 224, "batch": 32, "compiled": False}
    return [{**common, "impl": "hf", "method": "full", "mode": "train", "clips_per_s": hf_clips, "flops_per_clip": 1e12},
            {**common, "impl": "ours", "method": "adaptformer", "mode": "train", "clips_per_s": af_clips,
             "flops_per_clip": 0.8e12},
            {**common, "impl": "ours", "method": "full", "mode": "eval", "clips_per_s": eval_clips,
             "flops_per_clip": 0.36e12}]


def test_goals_compare_the_figures_without_asserting_them():
    figures = {
        "bench_model": {"rows": _rows(af_clips=600.0, hf_clips=400.0, eval_clips=900.0), "peak_tflops": 989.0},
        "bench_data": {"results": {"loader clips/s": {"adaptformer": {
            "0 workers": {"jpeg store": 80.0, "jpeg store, batched decode on cuda": 300.0},
            "8 workers": {"jpeg store": 400.0, "jpeg store, batched decode on cuda": 1500.0}}}}},
        "bench_e2e": {"results": {"backend": "decord", "model only clips/s": 1000.0,
                                  "8 workers": {"store amortised / videos": 4.2, "store epoch / model only": 0.9}}},
    }
    mfu, vs_hf, inference, loader, e2e = report.goals(figures, torch.device("cuda"))
    assert mfu["measured"] == pytest.approx(0.8e12 * 600 / 989e12) and mfu["met"] is True and mfu["shown"] == "48.5%"
    assert vs_hf["measured"] == pytest.approx(1.5) and vs_hf["met"] is True
    assert inference["measured"] == 900.0 and inference["met"] is False
    assert loader["measured"] == pytest.approx(1.5) and "8 workers" in loader["source"] and loader["met"] is True
    assert e2e["measured"] == 4.2 and e2e["met"] is True and e2e["note"] == ""
    missing = report.goals({}, torch.device("cpu"))
    assert [g["met"] for g in missing] == [None] * 5 and {g["shown"] for g in missing} == {"not measured"}


def test_update_difference_is_zero_for_the_same_training_and_scale_free_otherwise():
    start = {"w": torch.zeros(3)}
    same = training.update_difference(start, {"w": torch.tensor([1.0, 2.0, 2.0])}, {"w": torch.tensor([1.0, 2.0, 2.0])})
    assert same["max_abs_diff"] == 0 and same["max_relative_update_diff"] == 0
    off = training.update_difference(start, {"w": torch.tensor([1.0, 2.0, 2.3])}, {"w": torch.tensor([1.0, 2.0, 2.0])})
    assert off["max_relative_update_diff"] == pytest.approx(0.1) and off["worst_tensor"] == "w"


def test_the_report_renders_every_section_from_figures(tmp_path):
    results = [Result("steps vpt fp16", "t", "pass", 1.0, figures={
        "method": "vpt", "amp": "fp16", "batch": 4, "losses": [2.3, 1.1], "scaler_skipped_steps": 2,
        "tuned_tensors": 5, "frozen_tensors": 20, "step_ms_median": 3.0, "optimizer_fused": True}),
        Result("compile", "t", "fail", 2.0, "compiled logits differ", {
            "backend": "inductor", "batch": 8, "compile_s": 40.0, "eager_ms": 50.0, "compiled_ms": 40.0,
            "speedup": 1.25, "relative_logit_diff": 0.2}),
        Result("bench_e2e", "t", "skip", 0.0, "PyAV missing")]
    env = report.environment(torch.device("cpu"))
    doc = {"command": "python tools/gpu_check.py", "started": "2026-12-01T00:00:00+00:00", "seconds": 3.0,
           "quick": False, "budget_s": 360.0, "sizes": FULL.as_dict(), "environment": env,
           "summary": {"pass": 1, "fail": 1, "skip": 1}, "checks": [r.as_dict() for r in results],
           "goals": report.goals({}, torch.device("cpu"))}
    json_path, md_path = report.write(tmp_path, doc)
    md = md_path.read_text()
    assert json.loads(json_path.read_text())["summary"] == doc["summary"]
    assert "| steps vpt fp16 | pass | 1.0 | loss 2.300 -> 1.100" in md
    assert "| compile | fail | 2.0 | compiled logits differ |" in md and "| bench_e2e | skip | 0.0 | PyAV missing |" in md
    assert "| vpt | fp16 | 4 | 2.3 | 1.1 | 2 |" in md and "| inductor | 8 | 40 | 50 | 40 | 1.25 | 0.2 |" in md
    assert "budget 360 s" in md and "CPU only" in md


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["--store", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "no meta.json" in capsys.readouterr().err
    assert main(["--only", "nothing", "--out", str(tmp_path)]) == 2
    assert "no check is named so" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["--device", "cuda", "--out", str(tmp_path)]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_the_full_plan_fits_its_budget_and_its_training_config_is_valid(tmp_path):
    """The GPU run is one shot: every check has an estimate, they fit the budget, and video-adapt train accepts the
    full run's overrides."""
    from video_adapt.config import load_config
    estimates = [FULL.expected(c.name) for c in all_checks(FULL)]
    assert all(e > 0 for e in estimates) and sum(estimates) <= FULL_BUDGET_S
    cfg = load_config(None, data.cli_overrides(_ctx(tmp_path, FULL), tmp_path, tmp_path / "run", "fp16"))
    assert (cfg.model.name, cfg.data.num_frames, cfg.data.img_size, cfg.train.amp) == (
        FULL.cli_model, 16, 224, "fp16") and cfg.data.gpu_decode


@pytest.mark.slow
@pytest.mark.parametrize("tool, args", [("bench_model.py", FULL.bench_model), ("bench_data.py", FULL.bench_data),
                                        ("bench_e2e.py", FULL.bench_e2e)])
def test_the_full_run_calls_each_tool_with_options_it_has(tool, args):
    done = subprocess.run([sys.executable, f"tools/{tool}", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1000:]
    options = set(re.findall(r"--[a-z][a-z0-9-]*", done.stdout))
    assert {a for a in args if a.startswith("--")} | {"--device", "--json"} <= options
