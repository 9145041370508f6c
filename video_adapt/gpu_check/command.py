"""`python tools/gpu_check.py`: every check in order, a failure stopping nothing, and the report rewritten after
each check (so a run cut short still leaves one). Exit code 1 when a check failed."""
from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch

from video_adapt.console import command
from video_adapt.errors import ConfigError
from video_adapt.gpu_check import data, kernels, report, tools, training
from video_adapt.gpu_check.runner import STATUSES, Check, Context, Result, run_checks
from video_adapt.gpu_check.sizes import AMPS, FULL, QUICK, Sizes
from video_adapt.models.methods import METHODS
from video_adapt.resources import repository_root

FULL_BUDGET_S = 360.0  # the full run's checks; with a machine's start and the transfers, under 8 minutes


def all_checks(sizes: Sizes) -> list[Check]:
    """The sequence of checks; FSDP runs before the benchmarks, so that a tight budget drops a benchmark, not it."""
    steps = [Check(f"steps {m} {a}", f"{m}: {sizes.steps} steps of {sizes.model} {sizes.frames}x{sizes.img_size} in "
                   f"{a}", functools.partial(training.method_steps, method=m, amp=a)) for m in METHODS for a in AMPS]
    return steps + [
        Check("decode", "the device's JPEG batches against the CPU workers' clips", data.decode),
        *(Check(f"train_cli {a}", f"video-adapt train, data.gpu_decode, {a}", functools.partial(data.train_cli, amp=a))
          for a in AMPS),
        Check("ddp", "DDP through torchrun against one process", training.ddp),
        Check("sdpa", "the SDPA kernel of a bf16 training step", kernels.sdpa),
        Check("compile", "torch.compile on and off: logits and speed", kernels.compile_check),
        Check("fsdp", "FSDP2 step and full-state round trip on one process", training.fsdp),
        Check("bench_model", "tools/bench_model.py: ours against Hugging Face, each method", tools.bench_model),
        Check("largest_batch", "the largest bf16 training batch per method", kernels.largest_batch),
        Check("bench_data", "tools/bench_data.py", tools.bench_data),
        Check("bench_e2e", "tools/bench_e2e.py", tools.bench_e2e),
    ]


def build_report(argv: Sequence[str], started: str, ctx: Context, env: dict[str, Any],
                 results: list[Result]) -> dict[str, Any]:
    out = {"tool": "tools/gpu_check.py", "command": shlex.join(["python", "tools/gpu_check.py", *argv]),
           "started": started, "seconds": time.monotonic() - ctx.start, "device": str(ctx.device),
           "quick": ctx.sizes.name == QUICK.name, "budget_s": ctx.budget_s, "sizes": ctx.sizes.as_dict(),
           "environment": env, "summary": {s: sum(r.status == s for r in results) for s in STATUSES},
           "checks": [r.as_dict() for r in results],
           "goals": report.goals({r.name: r.figures for r in results}, ctx.device)}
    return json.loads(json.dumps(out, default=str))  # numbers and strings only, whatever a figure held


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__ + "\n\nSee docs/GPU_CHECK.md.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the default on the CPU): the CI run")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="where gpu_check.md/.json go")
    parser.add_argument("--store", type=Path, help="a frame store made by --prepare (the GPU machine has no PyAV)")
    parser.add_argument("--prepare", type=Path, metavar="DIR",
                        help="only write the generated videos and the store for a run (DIR/store) and exit")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only the checks whose names start so")
    parser.add_argument("--budget-s", type=float,
                        help=f"skip checks that no longer fit (default {FULL_BUDGET_S:.0f} s for the full run)")
    parser.add_argument("--work", type=Path, help="scratch folder to keep (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    repository_root("the GPU check")
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible here")
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    sizes = QUICK if args.quick or device.type == "cpu" else FULL
    if args.prepare:
        store = data.make_store(args.prepare, FULL if not args.quick else QUICK)
        print(f"store for a {'quick' if args.quick else 'full'} run: {store}  (pass --store {store})")
        return 0
    if args.store and not (args.store / "meta.json").is_file():
        raise ConfigError(f"--store {args.store}: not a finished frame store (no meta.json); make one with --prepare")
    checks = all_checks(sizes)
    if args.only:
        checks = [c for c in checks if c.name.startswith(tuple(args.only))]
        if not checks:
            raise ConfigError(f"--only {' '.join(args.only)}: no check is named so")
    budget = args.budget_s if args.budget_s is not None else (FULL_BUDGET_S if sizes is FULL else None)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    env = report.environment(device)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ctx = Context(device, sizes, work, args.store, budget)
        paths = report.write(args.out, build_report(argv, started, ctx, env, []))
        results = run_checks(checks, ctx, lambda done: report.write(args.out, build_report(argv, started, ctx, env, done)))
    final = build_report(argv, started, ctx, env, results)
    paths = report.write(args.out, final)
    print(f"[gpu_check] {final['summary']['pass']} passed, {final['summary']['fail']} failed, "
          f"{final['summary']['skip']} skipped in {final['seconds']:.0f} s")
    for path in paths:
        print(f"[gpu_check] report: {path}")
    return 1 if final["summary"]["fail"] else 0
