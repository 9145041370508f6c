"""CPU inference of one model in every runtime, in one process, on the same input (what tools/bench_export.py runs).

Model only: eager PyTorch fp32, eager under bf16 autocast, torch.compile (inductor), onnxruntime fp32 and int8,
OpenVINO fp32 and bf16, and Hugging Face's VideoMAEForVideoClassification (SDPA attention) with the same weights
(the `hf` export of the model). Every runtime is warmed at batch 1 (torch.compile compiles there, its batch axis
marked dynamic), then each batch size runs in paired rounds (every runtime once per round, in turn), so that the
drifts of a shared host fall on all of them alike; the speed-ups are medians of per-round ratios to eager fp32.

End to end on mp4 files: per video, one at a time, open + decode, test views (resize, crop, normalise) and the
model, with the functions `Predictor` calls; then the whole `Predictor.predict` call on all files, 8 videos per
forward. Against it, `transformers.pipeline("video-classification")` on the same files, stage by stage as its
`__call__` runs them (preprocess: decode + image processor; forward; postprocess). Both sides classify one view of
the model's frame count per video: our protocol set to 1 clip x 1 crop, the pipeline's own sampling.
"""
from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from video_adapt.data.protocol import DataProtocol

Logits = Callable[[torch.Tensor], torch.Tensor]
EAGER = "eager fp32"
RUNTIMES = (EAGER, "eager bf16 autocast", "torch.compile fp32", "onnxruntime fp32", "onnxruntime int8",
            "openvino fp32", "openvino bf16", "hf videomae sdpa fp32")
DEMO_BACKBONE = Path(__file__).resolve().parents[1] / "assets" / "demo_backbone.safetensors"


@dataclass
class BenchModel:
    """What is measured: a name, the model in eval mode, its class names and the data section of its test views."""

    name: str
    model: torch.nn.Module
    class_names: list[str]
    data: dict[str, Any]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (3, int(self.data["num_frames"]), int(self.data["img_size"]), int(self.data["img_size"]))


def one_view_data(frames: int, size: int) -> dict[str, Any]:
    """Test views of one clip x one crop (segment centres), so that a video costs one forward, as in the pipeline."""
    return {"num_frames": frames, "img_size": size, "test_sampling": "ssv2", "test_clips": 1, "test_crops": 1,
            "test_short_side": size, "view_average": "logits", "stride": 4}


def vit_model(name: str, frames: int, size: int, classes: int, seed: int = 0) -> BenchModel:
    """A fully fine-tuned preset with seeded random weights (the speed does not depend on their values)."""
    from video_adapt import create_model
    torch.manual_seed(seed)
    model = create_model(name, num_classes=classes, num_frames=frames, img_size=size).eval()
    return BenchModel(f"{name} {frames}x{size}", model, [f"class {i}" for i in range(classes)],
                      one_view_data(frames, size))


def demo_model(run_dir: str | None = None, classes: int = 12) -> BenchModel:
    """The demo's model: a trained run when given (its own views set to one), else the committed demo backbone
    (vit_tiny_patch8_32, 8 frames at 32 px) with a seeded head for the synthetic task's 12 classes."""
    if run_dir:
        from video_adapt.inference import Predictor
        predictor = Predictor.load(run_dir, device="cpu")
        data = one_view_data(int(predictor.info["data"]["num_frames"]), int(predictor.info["data"]["img_size"]))
        return BenchModel(f"demo run {Path(run_dir).name}", predictor.model, predictor.class_names, data)
    from video_adapt import create_model, load_pretrained
    from video_adapt.data.synthetic import CLASSES
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch8_32", num_classes=classes)
    load_pretrained(model, DEMO_BACKBONE)
    return BenchModel("demo vit_tiny_patch8_32 8x32", model.eval(), list(CLASSES[:classes]), one_view_data(8, 32))


# ----------------------------------------------------------------------------------------------- runtimes
def runtimes(bench: BenchModel, work: Path, names: list[str] | None = None) -> dict[str, Logits]:
    """Every runtime of the model, ready to call (export files written, self-checked, loaded); `names` a subset."""
    from video_adapt.export import export_model, load_runtime
    from video_adapt.export.hf import hf_logits, load_hf
    model = bench.model
    export_model(model, bench.class_names, bench.data, ["onnx", "openvino", "hf"], work, int8=True)

    def eager(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    def bf16(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
            return model(x).float()

    compiled = torch.compile(model)

    def compile_(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return compiled(x)

    table: dict[str, Callable[[], Logits]] = {
        EAGER: lambda: eager, "eager bf16 autocast": lambda: bf16, "torch.compile fp32": lambda: compile_,
        "onnxruntime fp32": lambda: load_runtime(work, "onnx"),
        "onnxruntime int8": lambda: load_runtime(work, "onnx", "int8"),
        "openvino fp32": lambda: load_runtime(work, "openvino"),
        "openvino bf16": lambda: load_runtime(work, "openvino", "bf16"),
        "hf videomae sdpa fp32": lambda: hf_logits(load_hf(work)),
    }
    chosen = names or list(table)
    return {name: table[name]() for name in chosen}


def warm(fns: dict[str, Logits], shape: tuple[int, ...]) -> dict[str, float]:
    """One untimed call each at batch 1 (torch.compile also at batch 2 with the batch axis dynamic, so batch 8
    does not compile again); returns each warm-up's seconds (compilation, session set-up)."""
    out = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        if name.startswith("torch.compile"):
            two = torch.zeros(2, *shape)
            torch._dynamo.mark_dynamic(two, 0)
            fn(two)
        fn(torch.zeros(1, *shape))
        out[name] = time.perf_counter() - start
    return out


def paired_rounds(fns: dict[str, Logits], x: torch.Tensor, rounds: int) -> tuple[dict[str, list[float]], dict]:
    """Seconds per call of every runtime on `x`, in `rounds` interleaved rounds, and each runtime's first logits."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    logits: dict[str, torch.Tensor] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn(x)
            times[name].append(time.perf_counter() - start)
            logits.setdefault(name, out.float())
    return times, logits


def model_table(bench: BenchModel, fns: dict[str, Logits], batches: list[int], rounds: dict[int, int],
                seed: int = 0) -> dict[str, Any]:
    """Per batch: median ms per call and per clip, and the median per-round speed-up over eager fp32; the max abs
    logit difference of each runtime to eager fp32 on the same input."""
    g = torch.Generator().manual_seed(seed)
    result: dict[str, Any] = {"warm-up s": warm(fns, bench.shape), "batches": {}, "max abs logit diff vs eager": {}}
    for batch in batches:
        x = torch.randn(batch, *bench.shape, generator=g)
        times, logits = paired_rounds(fns, x, rounds[batch])
        rows = {}
        for name, t in times.items():
            ratios = [e / s for e, s in zip(times[EAGER], t)]
            rows[name] = {"ms per call": 1e3 * statistics.median(t), "ms per clip": 1e3 * statistics.median(t) / batch,
                          "speed-up vs eager fp32": statistics.median(ratios), "rounds": [1e3 * v for v in t]}
            diff = float((logits[name] - logits[EAGER]).abs().max())
            result["max abs logit diff vs eager"][name] = max(diff, result["max abs logit diff vs eager"].get(name, 0))
        result["batches"][str(batch)] = rows
    return result


# ----------------------------------------------------------------------------------------------- end to end
class _TimedReader:
    """A VideoReader whose reads are timed: the decode share of making the views."""

    def __init__(self, reader):
        self.reader, self.seconds = reader, 0.0
        self.num_frames, self.fps = reader.num_frames, reader.fps

    def read(self, indices):
        start = time.perf_counter()
        try:
            return self.reader.read(indices)
        finally:
            self.seconds += time.perf_counter() - start


@dataclass
class Stages:
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def add(self, stage: str, value: float) -> None:
        self.seconds.setdefault(stage, []).append(value)

    def ms(self) -> dict[str, float]:
        return {k: 1e3 * statistics.median(v) for k, v in self.seconds.items()}


def ours_one_video(fn: Logits, protocol: DataProtocol, path: Path, stages: Stages) -> None:
    """Our path for one video, with Predictor's functions, its stages timed: open + decode, views, model."""
    from video_adapt.data.datasets import views_of
    from video_adapt.data.decode import open_video
    from video_adapt.data.transforms import normalize_clips
    view = protocol.eval_view()
    start = time.perf_counter()
    reader = _TimedReader(open_video(path))
    opened = time.perf_counter()
    x = normalize_clips(views_of(reader, view, view.stride))
    made = time.perf_counter()
    fn(x).softmax(-1)
    done = time.perf_counter()
    stages.add("open + decode", opened - start + reader.seconds)
    stages.add("views (resize, crop, normalise)", made - opened - reader.seconds)
    stages.add("model", done - made)
    stages.add("total, 1 video per forward", done - start)


def ours_batched(fn: Logits, bench: BenchModel, files: list[Path], stages: Stages) -> None:
    """The whole `Predictor.predict` call on all files, 8 videos per forward: per video."""
    from video_adapt.inference import Predictor
    predictor = Predictor(fn, bench.class_names, DataProtocol.from_record(bench.data), "cpu")
    start = time.perf_counter()
    predictor.predict([str(p) for p in files], topk=5, batch_videos=8)
    stages.add("Predictor.predict, 8 videos per forward (per video)", (time.perf_counter() - start) / len(files))


def hf_pipeline(folder: Path) -> tuple[Any, str]:
    """transformers' video-classification pipeline on the export; the decoder it uses: its video processor reads
    files with torchcodec; without a usable torchcodec, its image-processor path reads them with PyAV."""
    import warnings
    from transformers import pipeline
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = pipeline("video-classification", model=str(folder), device="cpu")
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
        return pipe, "torchcodec (video processor)"
    except Exception:
        pipe.video_processor = None
        return pipe, "pyav (image processor, the first num_frames frames)"


def hf_one_video(pipe, path: Path, stages: Stages) -> None:
    """The pipeline's `__call__` for one video, stage by stage: preprocess, forward, postprocess."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        inputs = pipe.preprocess(str(path))
        pre = time.perf_counter()
        out = pipe.forward(inputs)
        fwd = time.perf_counter()
        pipe.postprocess(out, top_k=5)
        done = time.perf_counter()
    stages.add("preprocess (decode + image processor)", pre - start)
    stages.add("model", fwd - pre)
    stages.add("postprocess", done - fwd)
    stages.add("total, 1 video per forward", done - start)


def make_videos(folder: Path, count: int, frames: int, height: int, width: int, footage: bool) -> list[Path]:
    """mp4 (H.264) files: footage-like frames at SSv2's bit rate (benchmarks.sources) or the synthetic task's."""
    from video_adapt.benchmarks.sources import SSV2_BIT_RATE, footage_like
    from video_adapt.data.synthetic import SyntheticSpec, generate_clip, write_video
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        if footage:
            clip = footage_like(i, frames, height, width)
        else:
            clip = generate_clip(i % 12, np.random.default_rng(i), SyntheticSpec(size=height, frames=frames))
        path = folder / f"video{i:02d}.mp4"
        write_video(str(path), clip, fps=12, bit_rate=SSV2_BIT_RATE if footage else None)
        paths.append(path)
    return paths


def e2e_table(bench: BenchModel, fns: dict[str, Logits], work: Path, files: list[Path],
              ours: list[str]) -> dict[str, Any]:
    """Per-video milliseconds by stage: ours with each runtime in `ours`, and the Hugging Face pipeline. The first
    video once as a warm-up (untimed); then video by video, every configuration in turn (paired, as the model-only
    rounds), then the batched Predictor.predict of each runtime in turn."""
    protocol = DataProtocol.from_record(bench.data)
    pipe, decoder = hf_pipeline(work)
    results: dict[str, Stages] = {name: Stages() for name in [*ours, "hf pipeline"]}
    for i, path in enumerate([files[0], *files]):
        timed = i > 0  # the first call, on files[0], warms up
        for name in ours:
            ours_one_video(fns[name], protocol, path, results[name] if timed else Stages())
        hf_one_video(pipe, path, results["hf pipeline"] if timed else Stages())
    for name in ours:
        ours_batched(fns[name], bench, files, results[name])
    table = {name: stages.ms() for name, stages in results.items()}
    hf_ms = table["hf pipeline"]["total, 1 video per forward"]
    for name in ours:
        table[name]["hf pipeline / ours, 1 video per forward"] = hf_ms / table[name]["total, 1 video per forward"]
        table[name]["hf pipeline / ours, 8 videos per forward"] = (
            hf_ms / table[name]["Predictor.predict, 8 videos per forward (per video)"])
    return {"videos": len(files), "hf decoder": decoder, "ms per video": table}


# ----------------------------------------------------------------------------------------------- the run
@dataclass
class BenchPlan:
    bench: BenchModel
    batches: list[int]
    rounds: dict[int, int]
    videos: int
    video_size: tuple[int, int]
    video_frames: int
    footage: bool
    e2e_runtimes: list[str]
    runtimes: list[str] | None = None  # model-only runtimes; None = all


def run_plan(plan: BenchPlan, progress: Callable[[str], None] = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        fns = runtimes(plan.bench, work / "export", plan.runtimes)
        progress(f"[bench_export] {plan.bench.name}: exported, checked and loaded in "
                 f"{time.perf_counter() - start:.0f} s")
        model = model_table(plan.bench, fns, plan.batches, plan.rounds)
        progress(f"[bench_export] {plan.bench.name}: model-only rounds done")
        files = make_videos(work / "videos", plan.videos, plan.video_frames, *plan.video_size, plan.footage)
        e2e = e2e_table(plan.bench, fns, work / "export", files, plan.e2e_runtimes)
        progress(f"[bench_export] {plan.bench.name}: end to end done")
        with contextlib.suppress(Exception):
            torch._dynamo.reset()  # the next model compiles afresh
    return {"model": plan.bench.name, "input": list(plan.bench.shape), "model only": model, "end to end": e2e,
            "video files": {"count": plan.videos, "frames": plan.video_frames, "size": list(plan.video_size),
                            "content": "footage-like" if plan.footage else "synthetic task"}}


def report(results: list[dict[str, Any]]) -> str:
    """Markdown: per model, the model-only table (ms per clip and speed-up per batch) and the end-to-end stages."""
    out = []
    for r in results:
        batches = list(r["model only"]["batches"])
        out.append(f"**{r['model']}** (input {' x '.join(map(str, r['input']))}), model only, ms per clip "
                   "(speed-up over eager fp32, median of paired rounds):\n")
        head = "| runtime | " + " | ".join(f"batch {b}" for b in batches) + " | max abs logit diff | warm-up s |"
        out += [head, "|---" * (len(batches) + 3) + "|"]
        for name in r["model only"]["batches"][batches[0]]:
            cells = [f"{r['model only']['batches'][b][name]['ms per clip']:.1f} "
                     f"({r['model only']['batches'][b][name]['speed-up vs eager fp32']:.2f}x)" for b in batches]
            diff = r["model only"]["max abs logit diff vs eager"][name]
            warmup = r["model only"]["warm-up s"][name]
            out.append(f"| {name} | " + " | ".join(cells) + f" | {diff:.2g} | {warmup:.1f} |")
        e2e = r["end to end"]
        out.append(f"\nEnd to end, ms per video ({e2e['videos']} mp4 files, {r['video files']['content']}, "
                   f"{r['video files']['frames']} frames at {r['video files']['size'][0]} x "
                   f"{r['video files']['size'][1]}; pipeline decoder: {e2e['hf decoder']}):\n")
        stages = list(dict.fromkeys(k for v in e2e["ms per video"].values() for k in v))
        out += ["| stage | " + " | ".join(e2e["ms per video"]) + " |", "|---" * (len(e2e["ms per video"]) + 1) + "|"]
        for stage in stages:
            cells = [(f"{v[stage]:.2f}x" if "/" in stage else f"{v[stage]:.1f}") if stage in v else ""
                     for v in e2e["ms per video"].values()]
            out.append(f"| {stage} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)
