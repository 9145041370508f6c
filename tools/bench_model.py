"""Step time and peak memory of our ViT (adaptformer / vpt / linear / full) against Hugging Face VideoMAE
with the same configuration and weights, in one run.

    python tools/bench_model.py                      # CPU: tiny and small training steps, base forward
    python tools/bench_model.py --sizes tiny --frames 4 --img-size 64 --steps 2 --smoke
    python tools/bench_model.py --device cuda --sizes base --frames 16 --batch 8 --amp bf16

A step is forward + backward + optimizer step (AdamW, foreach). Peak memory: CUDA allocator peak on GPU; on CPU
each measurement runs in a fresh subprocess and reports the growth of peak RSS over the process's state after
the model, optimizer and input were created and one warm-up step was run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

SIZES = {"tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224", "base": "vit_base_patch16_224",
         "large": "vit_large_patch16_224"}
METHODS = ["full", "adaptformer", "vpt", "linear"]


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
    from video_adapt import create_model
    from video_adapt.checkpoint import load_pretrained
    hf = hf_model(name, frames, img_size, num_classes)
    if impl == "hf":
        return hf, lambda x: hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
    model = create_model(name, num_classes=num_classes, num_frames=frames, img_size=img_size, tuning=method)
    sd = {k: v for k, v in hf.state_dict().items()}
    import tempfile
    from safetensors.torch import save_file
    with tempfile.TemporaryDirectory() as tmp:  # same weights as the HF model, through our loader
        save_file({k: v.contiguous() for k, v in sd.items()}, f"{tmp}/m.safetensors")
        load_pretrained(model, f"{tmp}/m.safetensors")
    del hf
    return model, model


def measure(impl: str, name: str, method: str, mode: str, frames: int, img_size: int, batch: int, steps: int,
            device: str, amp: str) -> dict:
    torch.manual_seed(0)
    dev = torch.device(device)
    model, forward = build(impl, name, method, frames, img_size, 10)
    model.to(dev)
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

    step()  # warm-up (allocates optimizer state)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_rss = _rss_peak()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = max(_rss_peak() - base_rss, 0) + _state_bytes(model, opt)
    return {"impl": impl, "model": name, "method": method, "mode": mode, "frames": frames, "img_size": img_size,
            "batch": batch, "median_s": statistics.median(times), "clips_per_s": batch / statistics.median(times),
            "peak_bytes": peak, "trainable": sum(p.numel() for p in params)}


def _rss_peak() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _state_bytes(model, opt) -> int:
    """Weights + gradients + optimizer state (held across steps, so invisible to the RSS growth)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    total += sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    if opt is not None:
        total += sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                     if torch.is_tensor(t) and t.ndim > 0)
    return total


def run_isolated(args: argparse.Namespace, impl: str, name: str, method: str, mode: str) -> dict:
    if args.device == "cuda" or args.in_process:
        return measure(impl, name, method, mode, args.frames, args.img_size, args.batch, args.steps, args.device,
                       args.amp)
    cmd = [sys.executable, __file__, "--one", json.dumps([impl, name, method, mode]), "--frames", str(args.frames),
           "--img-size", str(args.img_size), "--batch", str(args.batch), "--steps", str(args.steps),
           "--device", args.device, "--amp", args.amp, "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def plan(args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    jobs = []
    for size in args.sizes:
        name = SIZES[size]
        modes = ["eval"] if size in args.forward_only else ["train", "eval"]
        for mode in modes:
            jobs.append(("hf", name, "full", mode))
            for method in (METHODS if mode == "train" else ["full"]):
                jobs.append(("ours", name, method, mode))
    return jobs


def report(rows: list[dict]) -> str:
    lines = ["| model | mode | impl | method | clips/s | step ms | peak MB | vs HF time | vs our full time | vs our full memory |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same = [q for q in rows if q["model"] == r["model"] and q["mode"] == r["mode"]]
        hf = next((q for q in same if q["impl"] == "hf"), None)
        full = next((q for q in same if q["impl"] == "ours" and q["method"] == "full"), None)
        vs_hf = f"{r['median_s'] / hf['median_s']:.2f}x" if hf and r["impl"] == "ours" and r["method"] == "full" else ""
        vs_full = f"{r['median_s'] / full['median_s']:.2f}x" if full and r["impl"] == "ours" and r["method"] != "full" else ""
        mem_full = (f"{r['peak_bytes'] / full['peak_bytes']:.2f}x" if full and full["peak_bytes"] and r["impl"] == "ours"
                    and r["method"] != "full" else "")
        lines.append(f"| {r['model']} | {r['mode']} | {r['impl']} | {r['method']} | {r['clips_per_s']:.2f} | "
                     f"{1000 * r['median_s']:.1f} | {r['peak_bytes'] / 2**20:.0f} | {vs_hf} | {vs_full} | {mem_full} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "base"], choices=list(SIZES))
    parser.add_argument("--forward-only", nargs="*", default=["base"], help="sizes measured for eval only")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--in-process", action="store_true", help="no subprocess per measurement (CPU memory is then approximate)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for a quick check")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        impl, name, method, mode = json.loads(args.one)
        print(json.dumps(measure(impl, name, method, mode, args.frames, args.img_size, args.batch, args.steps,
                                 args.device, args.amp)))
        return
    rows = []
    for job in plan(args):
        row = run_isolated(args, *job)
        rows.append(row)
        print(f"{row['model']:<24}{row['mode']:<6}{row['impl']:<5}{row['method']:<12}"
              f"{row['clips_per_s']:8.2f} clips/s  {row['peak_bytes'] / 2**20:8.0f} MB", flush=True)
    print()
    print(report(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
        print(f"rows: {args.json}")


if __name__ == "__main__":
    main()
