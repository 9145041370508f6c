"""Step time and peak memory of our ViT (adaptformer / vpt / linear / full) against Hugging Face VideoMAE
with the same configuration and weights, in one run.

    python tools/bench_model.py                      # CPU: tiny and small training steps, base forward
    python tools/bench_model.py --sizes tiny --frames 4 --img-size 64 --steps 2 --smoke
    python tools/bench_model.py --device cuda --sizes base --forward-only --frames 16 --batch auto --amp bf16 \
        --compile-too --check-flash                 # GPU: ViT-B 16x224, batch filling memory, MFU
    python tools/bench_model.py --sizes small --forward-only small --methods lora lora-merged   # merged LoRA's speed

A step is forward + backward + optimizer step (AdamW, foreach). Peak memory: CUDA allocator peak on GPU; on CPU
each measurement runs in a fresh subprocess and reports the weights plus the growth of peak RSS over the process's
RSS once the model and input were built, through the warm-up step (gradients, AdamW state) and the timed steps. CPU times come from a second pass that
runs all configurations of one model and mode in one process, in interleaved rounds (see `paired_times`): on a
shared host, timings of separate processes drift by +-10%, more than the differences being measured.

FLOPs are counted analytically (`video_adapt.models.flops.clip_flops`, matmuls only, no recomputation); the
"FLOP ratio" column is a method's training FLOPs over full fine-tuning's, the floor its step time can reach on
matmul-bound hardware. MFU = FLOPs per clip x clips/s / peak (`--peak-tflops`, default known for H100/H200/A100).
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

SIZES = {"tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224", "base": "vit_base_patch16_224",
         "large": "vit_large_patch16_224"}
METHODS = ["full", "adaptformer", "vpt", "linear"]
MORE_METHODS = ["lora", "bitfit", "st_adapter", "lora-merged"]  # "lora-merged": forward rows only, after merge_lora


def hf_model(name: str, frames: int, img_size: int, num_classes: int):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification
    from video_adapt.models.vit import vit_config
    c = vit_config(name)
    config = VideoMAEConfig(image_size=img_size, patch_size=c.patch_size, num_frames=frames, tubelet_size=c.tubelet_size,
                            hidden_size=c.embed_dim, num_hidden_layers=c.depth, num_attention_heads=c.num_heads,
                            intermediate_size=int(c.embed_dim * c.mlp_ratio), qkv_bias=True, use_mean_pooling=True,
                            num_labels=num_classes, layer_norm_eps=1e-6, attn_implementation="sdpa")
    return VideoMAEForVideoClassification(config)


def build(impl: str, name: str, method: str, frames: int, img_size: int, num_classes: int):
    """The model and its forward; `method` may end in "+ckpt" (activation checkpointing, ours only)."""
    method, _, checkpointing = method.partition("+")
    from video_adapt import create_model, merge_lora
    from video_adapt.checkpoint import load_pretrained
    hf = hf_model(name, frames, img_size, num_classes)
    if impl == "hf":
        return hf, lambda x: hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
    merged = method == "lora-merged"
    model = create_model(name, num_classes=num_classes, num_frames=frames, img_size=img_size,
                         tuning="lora" if merged else method, use_checkpoint=checkpointing == "ckpt")
    sd = {k: v for k, v in hf.state_dict().items()}
    import tempfile
    from safetensors.torch import save_file
    with tempfile.TemporaryDirectory() as tmp:  # same weights as the HF model, through our loader
        save_file({k: v.contiguous() for k, v in sd.items()}, f"{tmp}/m.safetensors")
        load_pretrained(model, f"{tmp}/m.safetensors")
    del hf
    if merged:
        merge_lora(model)
    return model, model


@dataclass
class Runner:
    """One implementation x method x mode, ready to run timed steps."""

    impl: str
    name: str
    method: str
    mode: str
    model: torch.nn.Module
    step: Callable[[], None]
    sync: Callable[[], None]
    optimizer: torch.optim.Optimizer | None
    batch: int
    flops_per_clip: float
    compiled: bool

    def timed_step(self) -> float:
        start = time.perf_counter()
        self.step()
        self.sync()
        return time.perf_counter() - start

    def row(self, times: list[float], peak_bytes: int, frames: int, img_size: int) -> dict:
        return {"impl": self.impl, "model": self.name, "method": self.method, "mode": self.mode, "frames": frames,
                "img_size": img_size, "batch": self.batch, "median_s": statistics.median(times),
                "clips_per_s": self.batch / statistics.median(times), "peak_bytes": peak_bytes,
                "trainable": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
                "compiled": self.compiled, "flops_per_clip": self.flops_per_clip}


def setup(impl: str, name: str, method: str, mode: str, frames: int, img_size: int, batch: int, device: str,
          amp: str, compile_model: bool = False, warm: bool = True) -> Runner:
    """Build the model, optimizer and a fixed batch, and (`warm`) run one warm-up step (allocates optimizer state)."""
    torch.manual_seed(0)
    dev = torch.device(device)
    model, forward = build(impl, name, method, frames, img_size, 10)
    model.to(dev)
    flops = _flops(name, method, frames, img_size)
    if compile_model:
        forward = torch.compile(forward)
    x = torch.randn(batch, 3, frames, img_size, img_size, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    ctx = (lambda: torch.autocast(dev.type, dtype=dtype)) if dtype else (lambda: torch.autocast(dev.type, enabled=False))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, foreach=True) if mode == "train" else None

    def step() -> None:
        if mode == "train":
            model.train()
            with ctx():
                loss = torch.nn.functional.cross_entropy(forward(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            model.eval()
            with torch.inference_mode(), ctx():
                forward(x)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    runner = Runner(impl, name, method, mode, model, step, sync, opt, batch,
                    flops.train if mode == "train" else flops.forward, compile_model)
    if warm:
        step()
        sync()
    return runner


def measure(impl: str, name: str, method: str, mode: str, frames: int, img_size: int, batch: int, steps: int,
            device: str, amp: str, compile_model: bool = False) -> dict:
    """Time and peak memory of one configuration, alone in this process."""
    runner = setup(impl, name, method, mode, frames, img_size, batch, device, amp, compile_model, warm=False)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_rss = _reset_peak_rss()  # the high-water mark from here on: warm-up (gradients, AdamW state) and steps
    runner.timed_step()
    times = [runner.timed_step() for _ in range(steps)]
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _peak_rss() - base_rss + sum(p.numel() * p.element_size() for p in runner.model.parameters())
    return runner.row(times, peak, frames, img_size)


def paired_times(args: argparse.Namespace, jobs: list[tuple]) -> list[list[float]]:
    """Step times of several configurations in one process, in interleaved rounds (a, b, c, a, b, c, ...), so that
    the slow drifts of a shared host fall on all of them alike; the ratios are then steady to a few percent."""
    runners = [setup(impl, name, method, mode, args.frames, args.img_size, int(args.batch), args.device, args.amp,
                     compiled) for impl, name, method, mode, compiled in jobs]
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(args.steps):
        for runner, bucket in zip(runners, times):
            bucket.append(runner.timed_step())
    return times


def _flops(name: str, method: str, frames: int, img_size: int):
    """Analytic FLOPs of our model with this method (the HF model does the same matmuls as our full one)."""
    from video_adapt import create_model, merge_lora
    from video_adapt.models.flops import clip_flops
    method = method.partition("+")[0]
    with torch.device("meta"):
        model = create_model(name, num_classes=10, num_frames=frames, img_size=img_size,
                             tuning="lora" if method == "lora-merged" else method)
        return clip_flops(merge_lora(model) if method == "lora-merged" else model)


def largest_batch(run, start: int = 4, limit: int = 4096) -> int:
    """Double the batch until CUDA runs out of memory; the last batch that ran ("batch filling memory")."""
    good, batch = 0, start
    while batch <= limit:
        try:
            run(batch)
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        good, batch = batch, batch * 2
    if not good:
        raise SystemExit(f"batch {start} does not fit on this GPU")
    return good


def check_flash(name: str, frames: int, img_size: int, batch: int, dtype: torch.dtype) -> dict:
    """Does SDPA run the flash kernel for this model's attention shapes? Forced flash must run, and a
    profile of the default dispatch must show a flash kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile
    from video_adapt.models.vit import vit_config
    c = vit_config(name)
    tokens = (frames // c.tubelet_size) * (img_size // c.patch_size) ** 2
    q = torch.randn(batch, c.num_heads, tokens, c.embed_dim // c.num_heads, device="cuda", dtype=dtype)
    out: dict = {"shape": list(q.shape), "dtype": str(dtype)}
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
        out["flash_runs"] = True
    except RuntimeError as error:
        out["flash_runs"], out["flash_error"] = False, str(error).splitlines()[0]
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
        torch.cuda.synchronize()
    kernels = sorted({e.key for e in prof.key_averages() if "attention" in e.key.lower() or "fmha" in e.key.lower()
                      or "flash" in e.key.lower()})
    out["kernels"] = kernels
    out["default_is_flash"] = any("flash" in k.lower() for k in kernels)
    return out


PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks (SXM)


def peak_tflops(device: str, given: float | None) -> float | None:
    if given:
        return given
    if device == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
        return next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
    return None


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the process's peak RSS (Linux: clear_refs 5) and return the current RSS, so that building the models
    (which briefly holds two copies of the weights) is not mistaken for the step's peak."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def _peak_rss() -> int:
    return _status_kib("VmHWM")


def run_isolated(args: argparse.Namespace, impl: str, name: str, method: str, mode: str,
                 compile_model: bool = False) -> dict:
    if args.device == "cuda" or args.in_process:
        if args.device == "cuda":  # nothing of the previous configuration may count towards this one's peak
            gc.collect()
            torch.cuda.empty_cache()

        def run(batch: int) -> dict:
            return measure(impl, name, method, mode, args.frames, args.img_size, batch, args.steps, args.device,
                           args.amp, compile_model)
        if args.batch == "auto":
            return run(largest_batch(lambda b: measure(impl, name, method, mode, args.frames, args.img_size, b, 1,
                                                       args.device, args.amp, False)))
        return run(int(args.batch))
    cmd = [sys.executable, __file__, "--one", json.dumps([impl, name, method, mode]), "--frames", str(args.frames),
           "--img-size", str(args.img_size), "--batch", str(args.batch), "--steps", str(args.steps),
           "--device", args.device, "--amp", args.amp, "--threads", str(args.threads)]
    if compile_model:
        cmd.append("--compile")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def plan(args: argparse.Namespace) -> list[tuple[str, str, str, str, bool]]:
    jobs = []
    for size in args.sizes:
        name = SIZES[size]
        modes = ["eval"] if size in args.forward_only else ["train", "eval"]
        for mode in modes:
            for compiled in ([False, True] if args.compile_too else [args.compile]):
                jobs.append(("hf", name, "full", mode, compiled))
                trained = [m for m in args.methods if m != "lora-merged"]
                methods = trained + [f"{m}+ckpt" for m in trained if args.checkpointing]
                forward = ["full"] + [m for m in args.methods if m in ("lora", "lora-merged")]
                for method in (methods if mode == "train" else forward):
                    jobs.append(("ours", name, method, mode, compiled))
    return jobs


def report(rows: list[dict], peak: float | None = None) -> str:
    from video_adapt.models.flops import model_flops_utilisation
    lines = ["| model | mode | impl | method | compiled | batch | clips/s | step ms | peak MB | vs HF time | vs our full time "
             "| FLOP ratio | vs our full memory | TFLOP/s | MFU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same = [q for q in rows if q["model"] == r["model"] and q["mode"] == r["mode"]
                and q.get("compiled") == r.get("compiled")]
        hf = next((q for q in same if q["impl"] == "hf"), None)
        full = next((q for q in same if q["impl"] == "ours" and q["method"] == "full"), None)
        # time per clip, so that rows at different batches (--batch auto) compare as throughputs
        vs_hf = (f"{hf['clips_per_s'] / r['clips_per_s']:.2f}x" if hf and r["impl"] == "ours" and r["method"] == "full"
                 else "")
        vs_full = (f"{full['clips_per_s'] / r['clips_per_s']:.2f}x" if full and r["impl"] == "ours"
                   and r["method"] != "full" else "")
        mem_full = (f"{r['peak_bytes'] / full['peak_bytes']:.2f}x" if full and full["peak_bytes"] and r["impl"] == "ours"
                    and r["method"] != "full" else "")
        flop_ratio = (f"{r['flops_per_clip'] / full['flops_per_clip']:.2f}x" if full and r["impl"] == "ours"
                      and r["method"] != "full" else "")
        achieved = r["flops_per_clip"] * r["clips_per_s"] / 1e12
        mfu = (f"{100 * model_flops_utilisation(r['flops_per_clip'], r['clips_per_s'], peak * 1e12):.1f}%"
               if peak else "")
        lines.append(f"| {r['model']} | {r['mode']} | {r['impl']} | {r['method']} | {'yes' if r.get('compiled') else 'no'} | "
                     f"{r['batch']} | {r['clips_per_s']:.2f} | {1000 * r['median_s']:.1f} | {r['peak_bytes'] / 2**20:.0f} | "
                     f"{vs_hf} | {vs_full} | {flop_ratio} | {mem_full} | {achieved:.2f} | {mfu} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
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
    parser.add_argument("--in-process", action="store_true", help="no subprocess per measurement (CPU memory is then approximate)")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS + MORE_METHODS)
    parser.add_argument("--checkpointing", action="store_true",
                        help="also train each method with activation checkpointing (rows 'method+ckpt')")
    parser.add_argument("--compile", action="store_true", help="torch.compile both implementations")
    parser.add_argument("--compile-too", action="store_true", help="measure eager and compiled")
    parser.add_argument("--check-flash", action="store_true", help="CUDA: does SDPA pick the flash kernel?")
    parser.add_argument("--peak-tflops", type=float, help="hardware peak for MFU (default: known GPUs)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for a quick check")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch != "auto" and not args.batch.isdigit():
        parser.error(f"--batch must be a number or 'auto', not {args.batch!r}")
    if args.batch == "auto" and args.device != "cuda":
        parser.error("--batch auto needs --device cuda")
    if args.one:
        impl, name, method, mode = json.loads(args.one)
        print(json.dumps(measure(impl, name, method, mode, args.frames, args.img_size, int(args.batch), args.steps,
                                 args.device, args.amp, args.compile)))
        return
    extra: dict = {}
    if args.check_flash and args.device == "cuda":
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp, torch.bfloat16)
        extra["flash"] = {SIZES[s]: check_flash(SIZES[s], args.frames, args.img_size, 8, dtype) for s in args.sizes}
        print(json.dumps(extra["flash"], indent=1))
    rows = []
    for job in plan(args):
        row = run_isolated(args, *job)
        rows.append(row)
        print(f"{row['model']:<24}{row['mode']:<6}{row['impl']:<5}{row['method']:<12}{'compiled ' if row['compiled'] else ''}"
              f"batch {row['batch']:<5}{row['clips_per_s']:8.2f} clips/s  {row['peak_bytes'] / 2**20:8.0f} MB", flush=True)
    if args.device == "cpu" and not args.in_process:  # times from paired rounds; memory stays from the lone runs
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault((r["model"], r["mode"], r["compiled"]), []).append(i)
        for (name, mode, _), members in groups.items():
            print(f"paired timing: {name} {mode} ({len(members)} configurations x {args.steps} rounds)", flush=True)
            times = paired_times(args, [(rows[i]["impl"], name, rows[i]["method"], mode, rows[i]["compiled"])
                                        for i in members])
            for i, t in zip(members, times):
                rows[i].update(median_s=statistics.median(t), clips_per_s=rows[i]["batch"] / statistics.median(t),
                               timing="paired")
    print()
    peak = peak_tflops(args.device, args.peak_tflops)
    print(report(rows, peak))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "peak_tflops": peak, **extra}, indent=2))
        print(f"rows: {args.json}")


if __name__ == "__main__":
    main()
