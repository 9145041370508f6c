"""The report of a run: the machine and versions, every check's outcome and figures, and the goals set
against the figures (compared, never asserted), as one JSON file and one markdown file."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable

import torch

from video_adapt.files import write_json_atomic, write_text_atomic
from video_adapt.gpu_check.runner import Result

PACKAGES = ("torchvision", "timm", "transformers", "peft", "av", "decord", "opencv-python-headless", "numpy",
            "triton", "safetensors")
JSON_NAME, MARKDOWN_NAME = "gpu_check.json", "gpu_check.md"


def environment(device: torch.device) -> dict[str, Any]:
    """The machine, the GPU (name, count, capability, memory, driver) and the versions that matter."""
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "cpu_count": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                           "packages": packages, "gpu": None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        nccl = torch.cuda.nccl.version()
        env["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
        env["gpu"] = {"name": props.name, "count": torch.cuda.device_count(),
                      "capability": f"{props.major}.{props.minor}", "memory_gib": round(props.total_memory / 2**30, 1),
                      "multiprocessors": props.multi_processor_count, "driver": _driver()}
    return env


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


# ----------------------------------------------------------------------------------------------- goals
def flatten(tree: Any, prefix: str = "") -> dict[str, float]:
    """Every number of a nested JSON figure, keyed by its path ("loader clips/s / adaptformer / 8 workers")."""
    if isinstance(tree, dict):
        out: dict[str, float] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix} / {key}" if prefix else str(key)))
        return out
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix: float(tree)}
    return {}


def best(flat: dict[str, float], *parts: str) -> tuple[str, float] | None:
    """The largest figure whose path contains every part (case-insensitive), with its path."""
    found = [(v, k) for k, v in flat.items() if all(p.lower() in k.lower() for p in parts)]
    return (max(found)[1], max(found)[0]) if found else None


def _row(rows: list[dict], impl: str, method: str, mode: str) -> dict | None:
    return next((r for r in rows if r["impl"] == impl and r["method"] == method and r["mode"] == mode
                 and not r.get("compiled")), None)


def _goal(goal: str, target: str, threshold: float, value: float | None, *, source: str, note: str = "",
          percent: bool = False) -> dict[str, Any]:
    shown = "" if value is None else (f"{100 * value:.1f}%" if percent else f"{value:.3g}")
    return {"goal": goal, "target": target, "measured": value, "shown": shown or "not measured",
            "met": None if value is None else value >= threshold, "source": source, "note": note}


def goals(figures: dict[str, dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    """The goals against this run's figures. `figures` maps check names to their figures."""
    rows = figures.get("bench_model", {}).get("rows", [])
    peak = figures.get("bench_model", {}).get("peak_tflops")
    ours_af, hf = _row(rows, "ours", "adaptformer", "train"), _row(rows, "hf", "full", "train")
    ours_eval = _row(rows, "ours", "full", "eval")

    def where(r: dict[str, Any] | None) -> str:
        return f"bench_model: {r['model']}, {r['frames']}x{r['img_size']}, batch {r['batch']}, eager" if r else \
            "bench_model"
    mfu = ours_af["flops_per_clip"] * ours_af["clips_per_s"] / (peak * 1e12) if ours_af and peak else None
    out = [
        _goal("ViT-B 16x224 AdaptFormer bf16 training, MFU", ">= 45% (H100/H200)", 0.45, mfu, source=where(ours_af),
              note="" if peak else "no peak FLOP/s known for this device", percent=True),
        _goal("AdaptFormer training clips/s over Hugging Face VideoMAE's (same GPU and batch)", ">= 1.2x", 1.2,
              ours_af["clips_per_s"] / hf["clips_per_s"] if ours_af and hf else None, source=where(hf),
              note="HF fine-tunes fully (it has no AdaptFormer); both eager, not compiled"),
        _goal("Inference clips/s, our ViT-B 16x224 in bf16", ">= 1000", 1000.0,
              ours_eval["clips_per_s"] if ours_eval else None, source=where(ours_eval)),
    ]
    data = flatten(figures.get("bench_data", {}).get("results", {}))
    e2e = flatten(figures.get("bench_e2e", {}).get("results", {}))
    loader = best(data, "loader", f"batched decode on {device.type}", "adaptformer") or \
        best(data, "loader", f"batched decode on {device.type}")
    model_rate = best(e2e, "model only clips/s")
    out.append(_goal("nvJPEG store loader over the model's training rate (data never the bottleneck)", ">= 1.0x",
                     1.0, loader[1] / model_rate[1] if loader and model_rate else None,
                     source=f"bench_data '{loader[0] if loader else '?'}' over bench_e2e "
                            f"'{model_rate[0] if model_rate else '?'}'",
                     note="the loader's best nvJPEG rate (AdaptFormer's clip) over bench_e2e's model-only rate"))
    ratio = best(e2e, "amortised /", "videos") or best(e2e, "amortised /", "on the fly")
    backend = figures.get("bench_e2e", {}).get("results", {}).get("backend")
    out.append(_goal("End to end, prepared store over decoding on the fly, ViT-S at 8 frames", ">= 3x", 3.0,
                     ratio[1] if ratio else None, source=f"bench_e2e '{ratio[0]}'" if ratio else "bench_e2e",
                     note=f"on-the-fly decoder: {backend}" if backend and backend != "decord" else ""))
    return out


# ----------------------------------------------------------------------------------------------- markdown
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return "" if value is None else str(value)


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_fmt(c).replace("|", "/") for c in row) + " |" for row in rows)]


def summary_line(result: Result) -> str:
    """One line per check for the overview table."""
    f, name = result.figures, result.name
    if result.status != "pass":
        return result.reason
    if name.startswith("steps "):
        return (f"loss {f['losses'][0]:.3f} -> {f['losses'][-1]:.3f}; {f['tuned_tensors']} tuned tensors changed, "
                f"{f['frozen_tensors']} frozen unchanged")
    if name == "decode":
        return f"max {f['max_grey_diff']} grey level(s) from the workers' clips; decoded on {f['decoded_on']}"
    if name.startswith("train_cli"):
        return f"loss {_fmt(f['train_loss'])}, {f['clips_per_s']:.1f} clips/s"
    if name == "ddp":
        return "; ".join(f"{w} process(es), {r['backend']}: relative update diff {r['max_relative_update_diff']:.1e}"
                         for w, r in f["processes"].items())
    if name == "sdpa":
        return f"forward {'+'.join(f['backends']['forward'])}, backward {'+'.join(f['backends']['backward'])}"
    if name == "compile":
        return f"logits within {f['relative_logit_diff']:.1e}; {f['speedup']:.2f}x ({f['backend']})"
    if name == "fsdp":
        return (f"one step {f['one_step_vs_unsharded']['max_abs_diff']:.1e} from unsharded; full-state round trip "
                f"{'exact' if f['full_state_round_trip_exact'] else 'NOT exact'}")
    if name == "largest_batch":
        return "; ".join(f"{r['impl']} {r['method']} {r.get('largest_batch', r.get('skipped'))}" for r in f["rows"])
    if name == "bench_model":
        left_out = f["methods_left_out"]
        return f"{len(f['rows'])} rows" + (f"; left out: {', '.join(left_out)}" if left_out else "")
    return f.get("command", "")


def _sections(results: list[Result]) -> list[str]:
    by = {r.name: r.figures for r in results}
    lines: list[str] = []
    steps = [r.figures for r in results if r.name.startswith("steps ") and r.figures]
    if steps:
        lines += ["", "### Every method, bf16 and fp16 (fixed batch)", ""]
        lines += table(["method", "amp", "batch", "first loss", "last loss", "fp16 scaler skips", "step ms",
                        "peak MiB", "fused AdamW"],
                       [[f["method"], f["amp"], f["batch"], f["losses"][0], f["losses"][-1], f["scaler_skipped_steps"],
                         f["step_ms_median"], f.get("peak_memory_mib"), f["optimizer_fused"]] for f in steps])
    cli = [r.figures for r in results if r.name.startswith("train_cli") and r.figures]
    if cli or by.get("decode"):
        lines += ["", "### video-adapt train with data.gpu_decode, and the device's JPEG batches", ""]
        if by.get("decode"):
            d = by["decode"]
            lines.append(f"`decode_batch` on {d['decoded_on']} against the workers' clips ({d['clips']} clips, "
                         f"{_fmt(d['shape'])}): max {d['max_grey_diff']} grey levels, mean {d['mean_grey_diff']:.4f}, "
                         f"{100 * d['share_above_1']:.4f}% of values off by more than 1; the training set decodes "
                         f"'{d['engine_decode']}'; {d['decode_batch_ms']:.1f} ms per batch.")
        if cli:
            lines += [""] + table(["amp", "model", "train loss", "clips/s", "final top-1", "peak MiB", "wall s"],
                                  [[f["amp"], f["model"], f["train_loss"], f["clips_per_s"], f["final_top1"],
                                    f["peak_memory_mib"], f["wall_time_s"]] for f in cli])
    if by.get("ddp"):
        lines += ["", "### DDP against one process", ""]
        lines += table(["processes", "backend", "NCCL", "max abs diff", "relative update diff", "worst tensor"],
                       [[w, r["backend"], r["nccl"], r["max_abs_diff"], r["max_relative_update_diff"],
                         r["worst_tensor"]] for w, r in by["ddp"]["processes"].items()])
    if by.get("sdpa") or by.get("compile"):
        lines += ["", "### SDPA kernel and torch.compile", ""]
        if by.get("sdpa"):
            f = by["sdpa"]
            lines.append(f"SDPA in a bf16 training step: forward {_fmt(f['backends']['forward'])}, backward "
                         f"{_fmt(f['backends']['backward'])}; kernels: {_fmt(f['kernels']) or '-'}.")
        if by.get("compile"):
            f = by["compile"]
            lines += [""] + table(["backend", "batch", "compile s", "eager ms", "compiled ms", "speed-up",
                                   "relative logit diff"],
                                  [[f["backend"], f["batch"], f["compile_s"], f["eager_ms"], f["compiled_ms"],
                                    f["speedup"], f["relative_logit_diff"]]])
    if by.get("fsdp"):
        f = by["fsdp"]
        lines += ["", "### FSDP, one process", "",
                  f"Sharded ({f['parameters']}) step of {f['model']}: {f['one_step_vs_unsharded']['max_abs_diff']:.2e} "
                  f"from the unsharded step; full state round trip exact: {f['full_state_round_trip_exact']}; the "
                  f"step after it: {f['resumed_step_vs_unsharded']['max_abs_diff']:.2e}."]
    if by.get("bench_model"):
        from video_adapt.benchmarks.model_step import report as model_table
        f = by["bench_model"]
        lines += ["", "### Model step: ours against Hugging Face (tools/bench_model.py)", "", f"`{f['command']}`", "",
                  model_table(f["rows"], f["peak_tflops"])]
        if f.get("flash"):
            lines += ["", f"Forced flash and default dispatch: `{_fmt(list(f['flash'].values()))}`"]
    if by.get("largest_batch"):
        f = by["largest_batch"]
        lines += ["", f"### Largest bf16 training batch (doubling from {f['start']}, up to {f['limit']})", ""]
        lines += table(["impl", "method", "largest batch", "stopped by memory"],
                       [[r["impl"], r["method"], r.get("largest_batch", r.get("skipped")), r.get("stopped_by_memory")]
                        for r in f["rows"]])
    for name, title in (("bench_data", "Data loaders (tools/bench_data.py)"),
                        ("bench_e2e", "End to end (tools/bench_e2e.py)")):
        if by.get(name):
            lines += ["", f"### {title}", "", f"`{by[name]['command']}`", ""]
            lines += table(["figure", "value"], sorted((k, v) for k, v in flatten(by[name]["results"]).items()
                                                       if not k.startswith("args")))  # the command says those
    return lines


def markdown(report: dict[str, Any]) -> str:
    env, gpu = report["environment"], report["environment"]["gpu"]
    machine = (f"{gpu['count']} x {gpu['name']} ({gpu['memory_gib']} GiB, compute {gpu['capability']}, driver "
               f"{gpu['driver']})" if gpu else f"CPU only ({env['cpu_count']} cores)")
    counts = report["summary"]
    lines = [f"## GPU check: {gpu['name'] if gpu else 'CPU'}, {report['started'][:10]}", "",
             f"Command: `{report['command']}`", "",
             f"Machine: {machine}; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}"
             + (f", NCCL {env['nccl']}" if env.get("nccl") else "") + "; "
             + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v) + ".", "",
             f"Run: {report['sizes']['name']} sizes, {report['seconds']:.0f} s"
             + (f" (budget {report['budget_s']:.0f} s)" if report["budget_s"] else "")
             + f"; {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped."
             + (" A quick run: tiny models and sizes, which proves that every check runs; its figures are not the "
                "goals' ViT-B on an H100/H200." if report["quick"] else ""), "",
             "| check | status | seconds | result |", "|---|---|---|---|"]
    for r in report["checks"]:
        result = Result(**r)
        lines.append(f"| {r['name']} | {r['status']} | {r['seconds']:.1f} | {summary_line(result).replace('|', '/')} |")
    lines += ["", "### Goals against these figures (compared, not asserted)", ""]
    lines += table(["goal", "target", "measured", "met", "from", "note"],
                   [[g["goal"], g["target"], g["shown"], {True: "yes", False: "no", None: "-"}[g["met"]], g["source"],
                     g["note"]] for g in report["goals"]])
    lines += _sections([Result(**r) for r in report["checks"]])
    return "\n".join(lines) + "\n"


def write(out: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """The JSON and the markdown report, each written whole (rewritten after every check)."""
    return write_json_atomic(out / JSON_NAME, report), write_text_atomic(out / MARKDOWN_NAME, markdown(report))
