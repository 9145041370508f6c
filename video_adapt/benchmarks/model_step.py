"""Timed model steps: our ViT (any tuning method) against Hugging Face VideoMAE with the same configuration and
the same weights (HF's random init, carried into ours through `load_pretrained`).

A step is forward + backward + optimizer step (AdamW, foreach) in train mode, or a forward under inference mode.
Peak memory: the CUDA allocator peak on a GPU; on the CPU the weights plus the growth of peak RSS over the RSS once
model and input were built (meaningful when the measurement has the process to itself).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from video_adapt.models.memory import peak_rss, reset_peak_rss

NUM_CLASSES = 10


@dataclass(frozen=True)
class StepSpec:
    """One measured configuration. `method` may end in "+ckpt": activation checkpointing (ours only)."""

    impl: str  # "ours" | "hf"
    name: str  # a preset of video_adapt.models.vit
    method: str
    mode: str  # "train" | "eval"
    frames: int
    img_size: int
    batch: int
    device: str = "cpu"
    amp: str = "off"  # off | bf16 | fp16
    compiled: bool = False


def hf_videomae(name: str, frames: int, img_size: int, num_classes: int):
    """transformers' VideoMAEForVideoClassification with the numbers of our preset `name` (SDPA attention)."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    from video_adapt.models.vit import vit_config
    c = vit_config(name)
    config = VideoMAEConfig(image_size=img_size, patch_size=c.patch_size, num_frames=frames,
                            tubelet_size=c.tubelet_size, hidden_size=c.embed_dim, num_hidden_layers=c.depth,
                            num_attention_heads=c.num_heads, intermediate_size=int(c.embed_dim * c.mlp_ratio),
                            qkv_bias=True, use_mean_pooling=True, num_labels=num_classes, layer_norm_eps=1e-6,
                            attn_implementation="sdpa")
    return VideoMAEForVideoClassification(config)


def load_hf_weights(model: torch.nn.Module, hf: torch.nn.Module) -> torch.nn.Module:
    """Give our model the HF model's weights, through the same loader users use for HF checkpoints."""
    import tempfile

    from safetensors.torch import save_file

    from video_adapt.checkpoint import load_pretrained
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, f"{tmp}/m.safetensors")
        load_pretrained(model, f"{tmp}/m.safetensors")
    return model


MERGED_LORA = "lora-merged"  # forward rows only: LoRA folded into the weights by merge_lora


def _ours(spec: StepSpec) -> torch.nn.Module:
    from video_adapt import create_model
    method, _, checkpointing = spec.method.partition("+")
    return create_model(spec.name, num_classes=NUM_CLASSES, num_frames=spec.frames, img_size=spec.img_size,
                        tuning="lora" if method == MERGED_LORA else method, use_checkpoint=checkpointing == "ckpt")


def build(spec: StepSpec) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The model and its forward on (B, 3, T, H, W) clips."""
    from video_adapt import merge_lora
    hf = hf_videomae(spec.name, spec.frames, spec.img_size, NUM_CLASSES)
    if spec.impl == "hf":
        return hf, lambda x: hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
    model = load_hf_weights(_ours(spec), hf)
    if spec.method == MERGED_LORA:
        merge_lora(model)
    return model, model


def clip_flops_of(spec: StepSpec):
    """Analytic FLOPs of our model with this method (the HF model does the same matmuls as our full one)."""
    from video_adapt import merge_lora
    from video_adapt.models.flops import clip_flops
    with torch.device("meta"):
        model = _ours(spec)
        return clip_flops(merge_lora(model) if spec.method == MERGED_LORA else model)


@dataclass
class Runner:
    """One configuration, built and ready to run timed steps."""

    spec: StepSpec
    model: torch.nn.Module
    step: Callable[[], None]
    sync: Callable[[], None]
    flops_per_clip: float

    def timed_step(self) -> float:
        start = time.perf_counter()
        self.step()
        self.sync()
        return time.perf_counter() - start

    def row(self, times: list[float], peak_bytes: int) -> dict:
        s = self.spec
        return {"impl": s.impl, "model": s.name, "method": s.method, "mode": s.mode, "frames": s.frames,
                "img_size": s.img_size, "batch": s.batch, "median_s": statistics.median(times),
                "clips_per_s": s.batch / statistics.median(times), "peak_bytes": peak_bytes,
                "trainable": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
                "compiled": s.compiled, "flops_per_clip": self.flops_per_clip}


def setup(spec: StepSpec, warm: bool = True) -> Runner:
    """Build the model, optimizer and a fixed batch, and (`warm`) run one warm-up step (allocates optimizer state)."""
    torch.manual_seed(0)
    dev = torch.device(spec.device)
    model, forward = build(spec)
    model.to(dev)
    flops = clip_flops_of(spec)
    if spec.compiled:
        forward = torch.compile(forward)
    x = torch.randn(spec.batch, 3, spec.frames, spec.img_size, spec.img_size, device=dev)
    y = torch.randint(0, NUM_CLASSES, (spec.batch,), device=dev)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.amp)

    def autocast():
        return torch.autocast(dev.type, dtype=dtype) if dtype else torch.autocast(dev.type, enabled=False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, foreach=True) if spec.mode == "train" else None

    def step() -> None:
        if opt is not None:
            model.train()
            with autocast():
                loss = torch.nn.functional.cross_entropy(forward(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            model.eval()
            with torch.inference_mode(), autocast():
                forward(x)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    runner = Runner(spec, model, step, sync, flops.train if spec.mode == "train" else flops.forward)
    if warm:
        step()
        sync()
    return runner


def measure(spec: StepSpec, steps: int) -> dict:
    """Time and peak memory of one configuration, alone in this process: a warm-up step, then `steps` timed ones."""
    runner = setup(spec, warm=False)
    if spec.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_rss = reset_peak_rss()  # the high-water mark from here on: warm-up (gradients, AdamW state) and steps
    runner.timed_step()
    times = [runner.timed_step() for _ in range(steps)]
    if spec.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = peak_rss() - base_rss + sum(p.numel() * p.element_size() for p in runner.model.parameters())
    return runner.row(times, peak)


def paired_times(specs: list[StepSpec], steps: int) -> list[list[float]]:
    """Step times of several configurations in one process, in interleaved rounds (a, b, c, a, b, c, ...), so that
    the slow drifts of a shared host fall on all of them alike; the ratios are then steady to a few percent."""
    runners = [setup(spec) for spec in specs]
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(steps):
        for runner, bucket in zip(runners, times):
            bucket.append(runner.timed_step())
    return times


def report(rows: list[dict], peak: float | None = None) -> str:
    """Markdown table of measured rows, with throughput, memory and FLOPs against HF and against our full model."""
    from video_adapt.models.flops import model_flops_utilisation
    lines = ["| model | mode | impl | method | compiled | batch | clips/s | step ms | peak MB | vs HF time "
             "| vs our full time | FLOP ratio | vs our full memory | TFLOP/s | MFU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same = [q for q in rows if q["model"] == r["model"] and q["mode"] == r["mode"]
                and q.get("compiled") == r.get("compiled")]
        hf = next((q for q in same if q["impl"] == "hf"), None)
        full = next((q for q in same if q["impl"] == "ours" and q["method"] == "full"), None)
        ours_full = r["impl"] == "ours" and r["method"] == "full"
        ours_tuned = full and r["impl"] == "ours" and r["method"] != "full"
        # time per clip, so that rows at different batches (--batch auto) compare as throughputs
        vs_hf = f"{hf['clips_per_s'] / r['clips_per_s']:.2f}x" if hf and ours_full else ""
        vs_full = f"{full['clips_per_s'] / r['clips_per_s']:.2f}x" if ours_tuned else ""
        mem_full = f"{r['peak_bytes'] / full['peak_bytes']:.2f}x" if ours_tuned and full["peak_bytes"] else ""
        flop_ratio = f"{r['flops_per_clip'] / full['flops_per_clip']:.2f}x" if ours_tuned else ""
        achieved = r["flops_per_clip"] * r["clips_per_s"] / 1e12
        mfu = (f"{100 * model_flops_utilisation(r['flops_per_clip'], r['clips_per_s'], peak * 1e12):.1f}%"
               if peak else "")
        lines.append(f"| {r['model']} | {r['mode']} | {r['impl']} | {r['method']} | "
                     f"{'yes' if r.get('compiled') else 'no'} | {r['batch']} | {r['clips_per_s']:.2f} | "
                     f"{1000 * r['median_s']:.1f} | {r['peak_bytes'] / 2**20:.0f} | {vs_hf} | {vs_full} | "
                     f"{flop_ratio} | {mem_full} | {achieved:.2f} | {mfu} |")
    return "\n".join(lines)
