"""Regenerate the demo backbone video_adapt/assets/demo_backbone.safetensors (BENCHMARKS.md gives its time on 2 CPU
cores).

    python tools/make_demo_backbone.py

1. VideoMAE pretraining of vit_tiny_patch8_32 on a broad unlabelled corpus (configs/pretrain/demo.yaml): half the
   embedded benchmark's generator (video_adapt.data.synthetic), half random scenes (video_adapt.data.scenes: one to
   three polygons or ellipses over textured grounds, each moving, spinning and growing at its own constant rates,
   the camera still or panning). Tube masking 75%, plain pixel targets (per-patch normalisation only amplifies
   noise on the flat synthetic patches); the videos are generated once and kept in memory;
2. a supervised source stage: full fine-tuning from the MAE weights on 14 classes, 6 of the benchmark's (sliding
   x4, approaching, receding; videos disjoint from the benchmark's) and 8 of random scenes (the camera panning
   four ways while objects move at random; one of several objects sliding four ways);
3. the encoder of that model, without its head, is written to the assets folder.
Neither stage sees the benchmark's other six classes (rotations, out-and-back, appear/vanish) nor anything the
transfer suite tests (video_adapt.data.transfer: other paths, textures and object kinds, interacting objects,
zoom and roll). Every step reuses its finished output, so an interrupted run continues; WORK/timings.json records
each step's wall and CPU time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from video_adapt.checkpoint import read_state_dict
from video_adapt.config import load_config
from video_adapt.console import command
from video_adapt.data.scenes import SOURCE_CLASSES, SceneSpec, generate_source_clip
from video_adapt.data.synthetic import CLASSES, SyntheticSpec, class_folders, generate_clip, make_video_store
from video_adapt.engine import train
from video_adapt.files import save_safetensors_atomic, write_json_atomic
from video_adapt.pretraining import load_pretrain_config, pretrain

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "video_adapt" / "assets" / "demo_backbone.safetensors"
BENCHMARK_SOURCE = CLASSES[:6]  # sliding right/left/down/up, approaching, receding
SOURCE = (*BENCHMARK_SOURCE, *SOURCE_CLASSES)


def source_clip(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A clip of the source stage's class `label` (`SOURCE`): the benchmark's generator, then random scenes."""
    if label < len(BENCHMARK_SOURCE):
        return generate_clip(label, rng, SyntheticSpec(size=size))
    return generate_source_clip(label - len(BENCHMARK_SOURCE), rng, SceneSpec(size=size))


class Timer:
    """Wall and CPU seconds of each step, written to a JSON file after every step."""

    def __init__(self, path: Path):
        self.path, self.steps = path, {}

    def step(self, name: str, fn, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args, **kwargs)
        self.steps[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
        write_json_atomic(self.path, self.steps)
        return result


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/demo_backbone", help="working directory for the three steps")
    parser.add_argument("--out", default=str(ASSET))
    parser.add_argument("--mae", nargs="*", default=[], help="key=value overrides of configs/pretrain/demo.yaml")
    parser.add_argument("--source-per-class", type=int, default=300, help="training videos per source class")
    parser.add_argument("--source-epochs", type=int, default=15)
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    timer = Timer(work / "timings.json")
    mae = load_pretrain_config("pretrain/demo", [f"out_dir={work / 'mae'}", *args.mae])
    checkpoint = work / "mae" / "checkpoint.pth"
    if not (work / "mae" / "pretrain_summary.json").exists():
        timer.step("mae", pretrain, mae)
    source = work / "source_data"
    if not (source / "store" / "meta.json").exists():
        timer.step("source_data", make_video_store, source, SOURCE, class_folders(SOURCE, source_clip, seed=7),
                   args.source_per_class, 30, source="demo backbone source stage")
    run = work / "source_run"
    if not (run / "summary.json").exists():
        timer.step("source_run", train, load_config("demo/base", [
            f"data.root={source / 'store'}", f"model.pretrained={checkpoint}", "model.tuning=full", "train.lr=0.001",
            "model.head_bn=true", f"train.epochs={args.source_epochs}", "train.warmup_epochs=2",
            "train.eval_every=5", "data.cache_mb=512", f"out_dir={run}", "resume=auto"]))
    state, _ = read_state_dict(run / "adapters" / "adapter_model.safetensors")
    backbone = {k: v for k, v in state.items() if not k.startswith(("head.", "head_bn."))}
    save_safetensors_atomic(backbone, args.out, {"format": "video_adapt",
                                                 "source": f"MAE (broad corpus) + supervised {len(SOURCE)}-class "
                                                           "source stage"})
    print(f"demo backbone: {args.out} ({len(backbone)} tensors)")
    if timer.steps:
        total = {k: sum(s[k] for s in timer.steps.values()) for k in ("wall_s", "cpu_s")}
        print(f"steps run: {', '.join(timer.steps)}; {total['wall_s'] / 60:.1f} min wall, "
              f"{total['cpu_s'] / 60:.1f} min CPU (WORK/timings.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
