"""Step time and peak memory of our ViT (adaptformer / vpt / linear / full) against Hugging Face VideoMAE
with the same configuration and weights, in one run.

    python tools/bench_model.py                      # CPU: tiny and small training steps, base forward
    python tools/bench_model.py --sizes tiny --frames 4 --img-size 64 --steps 2
    python tools/bench_model.py --device cuda --sizes base --forward-only --frames 16 --batch auto --amp bf16 \
        --compile-too --check-flash                 # GPU: ViT-B 16x224, batch filling memory, MFU
    python tools/bench_model.py --sizes small --forward-only small --methods lora lora-merged   # merged LoRA's speed

A step is forward + backward + optimizer step (AdamW, foreach); the measuring code is video_adapt.benchmarks.
Peak memory: CUDA allocator peak on GPU; on CPU each measurement runs in a fresh subprocess and reports the weights
plus the growth of peak RSS over the process's RSS once the model and input were built, through the warm-up step
(gradients, AdamW state) and the timed steps. CPU times come from a second pass that runs all configurations of one
model and mode in one process, in interleaved rounds (`paired_times`): on a shared host, timings of separate
processes drift by +-10%, more than the differences being measured.

FLOPs are counted analytically (`video_adapt.models.flops.clip_flops`, matmuls only, no recomputation); the
"FLOP ratio" column is a method's training FLOPs over full fine-tuning's, the floor its step time can reach on
matmul-bound hardware. MFU = FLOPs per clip x clips/s / peak (`--peak-tflops`, default known for H100/H200/A100).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import subprocess
import sys

import torch

from video_adapt.benchmarks.hardware import check_flash, largest_batch, peak_tflops
from video_adapt.benchmarks.model_step import MERGED_LORA, StepSpec, measure, paired_times, report
from video_adapt.console import command
from video_adapt.files import write_json_atomic
from video_adapt.models.methods import METHODS
from video_adapt.models.vit import SIZE_NAMES

SIZES = {name: SIZE_NAMES[name] for name in ("tiny", "small", "base", "large")}
DEFAULT_METHODS = ["full", "adaptformer", "vpt", "linear"]  # the article's four; --methods adds the others


def run_isolated(args: argparse.Namespace, spec: StepSpec) -> dict:
    """One measurement: in this process on CUDA (or with --in-process), else in a fresh subprocess (CPU memory)."""
    if args.device == "cuda" or args.in_process:
        if args.device == "cuda":  # nothing of the previous configuration may count towards this one's peak
            gc.collect()
            torch.cuda.empty_cache()
        if spec.batch == 0:  # --batch auto: the largest batch that fits, found uncompiled with one step
            batch = largest_batch(lambda b: measure(dataclasses.replace(spec, batch=b, compiled=False), 1))
            spec = dataclasses.replace(spec, batch=batch)
        return measure(spec, args.steps)
    cmd = [sys.executable, __file__, "--one", json.dumps(dataclasses.asdict(spec)), "--steps", str(args.steps),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def plan(args: argparse.Namespace) -> list[StepSpec]:
    batch = 0 if args.batch == "auto" else int(args.batch)
    specs = []
    for size in args.sizes:
        name = SIZES[size]
        modes = ["eval"] if size in args.forward_only else ["train", "eval"]
        for mode in modes:
            for compiled in ([False, True] if args.compile_too else [args.compile]):
                common = dict(name=name, mode=mode, frames=args.frames, img_size=args.img_size, batch=batch,
                              device=args.device, amp=args.amp, compiled=compiled)
                specs.append(StepSpec(impl="hf", method="full", **common))
                trained = [m for m in args.methods if m != MERGED_LORA]
                methods = trained + [f"{m}+ckpt" for m in trained if args.checkpointing]
                forward = ["full"] + [m for m in args.methods if m in ("lora", MERGED_LORA)]
                for method in (methods if mode == "train" else forward):
                    specs.append(StepSpec(impl="ours", method=method, **common))
    return specs


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "base"], choices=list(SIZES))
    parser.add_argument("--forward-only", nargs="*", default=["base"], help="sizes measured for eval only")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", default="2", help="clips per step, or 'auto' (CUDA: the largest that fits)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (CPU: paired rounds)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--in-process", action="store_true",
                        help="no subprocess per measurement (CPU memory is then approximate)")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=[*METHODS, MERGED_LORA])
    parser.add_argument("--checkpointing", action="store_true",
                        help="also train each method with activation checkpointing (rows 'method+ckpt')")
    parser.add_argument("--compile", action="store_true", help="torch.compile both implementations")
    parser.add_argument("--compile-too", action="store_true", help="measure eager and compiled")
    parser.add_argument("--check-flash", action="store_true", help="CUDA: does SDPA pick the flash kernel?")
    parser.add_argument("--peak-tflops", type=float, help="hardware peak for MFU (default: known GPUs)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(StepSpec(**json.loads(args.one)), args.steps)))
        return 0
    if args.batch != "auto" and not args.batch.isdigit():
        parser.error(f"--batch must be a number or 'auto', not {args.batch!r}")
    if args.batch == "auto" and args.device != "cuda":
        parser.error("--batch auto needs --device cuda")
    extra: dict = {}
    if args.check_flash and args.device == "cuda":
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp, torch.bfloat16)
        extra["flash"] = {SIZES[s]: check_flash(SIZES[s], args.frames, args.img_size, 8, dtype) for s in args.sizes}
        print(json.dumps(extra["flash"], indent=1))
    specs = plan(args)
    rows = []
    for spec in specs:
        row = run_isolated(args, spec)
        rows.append(row)
        print(f"{row['model']:<24}{row['mode']:<6}{row['impl']:<5}{row['method']:<12}"
              f"{'compiled ' if row['compiled'] else ''}batch {row['batch']:<5}{row['clips_per_s']:8.2f} clips/s  "
              f"{row['peak_bytes'] / 2**20:8.0f} MB", flush=True)
    if args.device == "cpu" and not args.in_process:  # times from paired rounds; memory stays from the lone runs
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault((r["model"], r["mode"], r["compiled"]), []).append(i)
        for (name, mode, _), members in groups.items():
            print(f"paired timing: {name} {mode} ({len(members)} configurations x {args.steps} rounds)", flush=True)
            times = paired_times([specs[i] for i in members], args.steps)
            for i, t in zip(members, times):
                rows[i].update(median_s=statistics.median(t), clips_per_s=rows[i]["batch"] / statistics.median(t),
                               timing="paired")
    print()
    peak = peak_tflops(args.device, args.peak_tflops)
    print(report(rows, peak))
    if args.json:
        write_json_atomic(args.json, {"rows": rows, "peak_tflops": peak, **extra})
        print(f"rows: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
