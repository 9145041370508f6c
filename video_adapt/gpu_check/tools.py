"""The benchmark tools, run as a user runs them (subprocesses of their command lines), their JSON kept whole:

- `tools/bench_model.py`: ours against Hugging Face VideoMAE, each method: clips/s, TFLOP/s, MFU, peak memory
  (and the forced-flash check on CUDA);
- `tools/bench_data.py --device cuda`: the loaders, nvJPEG batched decoding among them;
- `tools/bench_e2e.py --device cuda`: a training epoch from videos on disk, store against decoding on the fly.
The data tools write their source videos with PyAV; where it is missing they are skipped, naming the wheel recipe.
"""
from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path
from typing import Any, Sequence

from video_adapt.gpu_check.runner import CheckFailure, Context, Skip
from video_adapt.gpu_check.training import needs_package


def _run_tool(ctx: Context, tool: str, args: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Run tools/<tool> with `args` and --json; returns its command line and its JSON."""
    out = ctx.work / f"{Path(tool).stem}.json"
    argv = [f"tools/{tool}", *args, "--json", str(out)]
    ctx.run(argv)
    return "python " + " ".join(shlex.quote(a) for a in argv[:-2]), json.loads(out.read_text())


def bench_model(ctx: Context) -> dict[str, Any]:
    """`tools/bench_model.py` at the run's sizes, every method this Python can build (LoRA needs peft)."""
    s = ctx.sizes
    methods = [m for m in s.bench_model_methods if not needs_package(m)]
    left_out = {m: f"{needs_package(m)} is not installed" for m in s.bench_model_methods if m not in methods}
    args = [*s.bench_model, "--device", ctx.device.type, "--methods", *methods]
    if not ctx.cuda and "--check-flash" in args:
        args.remove("--check-flash")
    command, data = _run_tool(ctx, "bench_model.py", args)
    figures = {"command": command, "rows": data.get("rows", []), "peak_tflops": data.get("peak_tflops"),
               "flash": data.get("flash"), "methods_left_out": left_out}
    if not figures["rows"]:
        raise CheckFailure("tools/bench_model.py wrote no rows", figures)
    return figures


def _needs_pyav(tool: str) -> None:
    if importlib.util.find_spec("av") is None:
        raise Skip(f"tools/{tool} writes its source videos with PyAV, which is not installed here: install the av "
                   "wheel (docs/GPU_CHECK.md)")


def bench_data(ctx: Context) -> dict[str, Any]:
    """`tools/bench_data.py --device <device>` at the run's sizes."""
    _needs_pyav("bench_data.py")
    command, data = _run_tool(ctx, "bench_data.py", [*ctx.sizes.bench_data, "--device", ctx.device.type])
    return {"command": command, "results": data}


def bench_e2e(ctx: Context) -> dict[str, Any]:
    """`tools/bench_e2e.py --device <device>` at the run's sizes."""
    _needs_pyav("bench_e2e.py")
    command, data = _run_tool(ctx, "bench_e2e.py", [*ctx.sizes.bench_e2e, "--device", ctx.device.type])
    return {"command": command, "results": data}
