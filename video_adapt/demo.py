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
from video_adapt.resources import demo_backbone, shipped_config

DEMO_CONFIG = shipped_config("demo/base")
DEMO_GRID = shipped_config("demo/grid")
BACKBONE = demo_backbone()
PRETRAIN_COMMAND = "python tools/make_demo_backbone.py (in a checkout of the repository)"


def prepare_data(out: Path, grid: dict[str, Any], progress: bool = True) -> Path:
    """Generate the videos and their frame store (both resume if interrupted)."""
    from video_adapt.data.synthetic import SyntheticSpec, make_synthetic_store
    data = grid["data"]
    spec = SyntheticSpec(size=data["size"], frames=data["video_frames"], num_classes=data["classes"])
    report = make_synthetic_store(out, spec, data["train_per_class"], data["val_per_class"], data["seed"],
                                  shard_size=5000, source="video_adapt synthetic benchmark", progress=progress)
    print(f"[demo] {report.summary()}")
    return report.out


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
    p = best_run.summary["protocol"]
    print(f"[demo] {best_run.variant} at {best_run.frames} frames, its final multi-view test: top-1 "
          f"{best_run.summary['final_top1']:.1f}, top-5 {best_run.summary['final_top5']:.1f} on "
          f"{best_run.summary['test_videos']} videos ({p['test_clips']} clips x {p['test_crops']} crop, "
          f"{p['view_average']} averaged)")
    fresh = classify_fresh_videos(Path(best_run.run_dir), out / "fresh", grid)
    for item in fresh["videos"]:
        mark = "right" if item["predicted"] == item["true"] else "wrong"
        print(f"[demo] {item['path']}: true {item['true']:<26} predicted {item['predicted']} ({item['prob']:.2f}, {mark})")
    print(f"[demo] fresh videos: {fresh['right']} of {len(fresh['videos'])} right")
    summary = {"wall_time_s": time.perf_counter() - start, "outputs": {k: str(v) for k, v in paths.items()},
               "fresh_videos": fresh}
    write_json_atomic(out / "demo_summary.json", summary)
    print_outputs(paths, prefix="[demo] ")
    print(f"[demo] runs: {out / 'runs'}")
    print(f"[demo] done in {summary['wall_time_s'] / 60:.1f} min")
    return summary


def classify_fresh_videos(run_dir: Path, out: Path, grid: dict[str, Any]) -> dict[str, Any]:
    """One freshly generated video per class (never seen in training or testing), written as mp4 files and
    classified through `video_adapt.predict` like a user's own files."""
    from video_adapt.data.synthetic import CLASSES, SyntheticSpec, generate_clip, write_video
    from video_adapt.inference import predict
    data = grid["data"]
    spec = SyntheticSpec(size=data["size"], frames=data["video_frames"])
    rng = np.random.default_rng(12345)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for label in range(data["classes"]):
        path = out / f"{CLASSES[label].replace(' ', '_')}.mp4"
        write_video(str(path), generate_clip(label, rng, spec))
        paths.append(str(path))
    results = predict(paths, checkpoint=str(run_dir), topk=3)
    videos = [{"path": r.path, "true": CLASSES[label], "predicted": r.top[0][0] if r.top else None,
               "prob": r.top[0][1] if r.top else 0.0, "top": r.top, "error": r.error}
              for label, r in enumerate(results)]
    return {"videos": videos, "right": sum(v["predicted"] == v["true"] for v in videos)}
