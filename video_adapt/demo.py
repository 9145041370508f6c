"""The embedded benchmark, end to end: synthetic videos -> frame store -> fine-tuning grid -> multi-view test ->
comparison table -> classification of a fresh video file. Everything printed is measured in this run.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from video_adapt.console import print_outputs
from video_adapt.errors import ConfigError
from video_adapt.experiments import aggregate, load_grid, run_grid, write_comparison
from video_adapt.files import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo" / "base.yaml"
DEMO_GRID = REPO / "configs" / "demo" / "grid.yaml"
BACKBONE = REPO / "video_adapt" / "assets" / "demo_backbone.safetensors"
PRETRAIN_COMMAND = "python tools/make_demo_backbone.py"


def prepare_data(out: Path, grid: dict[str, Any], progress: bool = True) -> Path:
    """Generate the videos and their frame store (both resume if interrupted)."""
    from data_prep.synthetic import write_dataset
    from video_adapt.data.prepare import PrepOptions, SplitSpec, prepare_store
    from video_adapt.data.synthetic import CLASSES, SyntheticSpec
    data = grid["data"]
    spec = SyntheticSpec(size=data["size"], frames=data["video_frames"], num_classes=data["classes"])
    lists = write_dataset(out, spec, data["train_per_class"], data["val_per_class"], data["seed"], progress)
    report = prepare_store(out / "store", list(CLASSES[:data["classes"]]),
                           [SplitSpec("train", lists["train"]), SplitSpec("val", lists["val"])],
                           PrepOptions(short_side=0, shard_size=5000), source="video_adapt synthetic benchmark",
                           flip=False, progress=progress, extra_meta={"dataset": "synthetic"})
    print(f"[demo] {report.summary()}")
    return out / "store"


def run_demo(out: str | Path = "runs/demo", seeds: list[int] | None = None, frames: list[int] | None = None,
             variants: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    start = time.perf_counter()
    out = Path(out)
    grid = load_grid(DEMO_GRID)
    if not BACKBONE.exists():
        raise ConfigError(f"{BACKBONE}: the demo backbone is missing; regenerate it with: {PRETRAIN_COMMAND}")
    store = prepare_data(out / "data", grid, progress)
    chosen = [v for v in grid["variants"] if variants is None or v.name in variants]
    frames = frames or grid["frames"]
    seeds = seeds or grid["seeds"]

    def done(result) -> None:
        s = result.summary
        print(f"[demo] {result.variant:<28} {result.frames} frames  seed {result.seed}: top-1 {s['final_top1']:.1f}  "
              f"({s['trainable_params']:,} trainable, {s['wall_time_s']:.0f} s)", flush=True)

    results = run_grid(DEMO_CONFIG, [f"data.root={store}", f"model.pretrained={BACKBONE}"], chosen, frames, seeds,
                       out / "runs", on_done=done)
    table, paths = write_comparison(aggregate(results), out, title="synthetic benchmark: top-1 against frames")
    print("\n" + table + "\n")

    best_run = next((r for r in results if r.variant == "adaptformer" and r.frames == max(frames)), results[-1])
    test_metrics = multi_view_test(Path(best_run.run_dir))
    print(f"[demo] multi-view test of {best_run.variant} at {best_run.frames} frames (2 clips x "
          f"{test_metrics['crops']} crops): top-1 {test_metrics['top1']:.1f}, top-5 {test_metrics['top5']:.1f}")
    prediction = classify_fresh_video(Path(best_run.run_dir), out, grid)
    print(f"[demo] classified {prediction['path']} (true class: {prediction['true']}): "
          + ", ".join(f"{l} {p:.2f}" for l, p in prediction["top"]))
    summary = {"wall_time_s": time.perf_counter() - start, "outputs": {k: str(v) for k, v in paths.items()},
               "multi_view_test": test_metrics, "prediction": prediction}
    write_json_atomic(out / "demo_summary.json", summary)
    print_outputs(paths, prefix="[demo] ")
    print(f"[demo] runs: {out / 'runs'}")
    print(f"[demo] done in {summary['wall_time_s'] / 60:.1f} min")
    return summary


def multi_view_test(run_dir: Path) -> dict[str, Any]:
    """The run's multi-view test on its validation split: 2 clips x 3 crops, on the CPU as the demo trains."""
    from video_adapt.engine.runs import evaluate_run
    test = evaluate_run(run_dir, crops=3, batch_size=16, device="cpu")
    return {"top1": test.result.top1, "top5": test.result.top5, "videos": test.result.num_videos, "crops": test.crops,
            "reports": str(test.paths["metrics"].parent)}


def classify_fresh_video(run_dir: Path, out: Path, grid: dict[str, Any]) -> dict[str, Any]:
    from video_adapt.data.synthetic import CLASSES, SyntheticSpec, generate_clip, write_video
    from video_adapt.inference import predict
    data = grid["data"]
    rng = np.random.default_rng(12345)
    label = int(rng.integers(0, data["classes"]))
    path = out / "fresh_video.mp4"
    write_video(str(path), generate_clip(label, rng, SyntheticSpec(size=data["size"], frames=data["video_frames"])))
    result = predict(str(path), checkpoint=str(run_dir), topk=3)[0]
    return {"path": str(path), "true": CLASSES[label], "top": result.top, "error": result.error}
