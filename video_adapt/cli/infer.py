"""Classify your own video files with a trained model: top-k classes with probabilities.

    video-adapt infer clip.mp4 other.webm --checkpoint runs/demo/run          # a training run directory
    video-adapt infer videos/ --backbone videomae_b.pth --adapters runs/x/adapters --json out.json
    video-adapt infer long.mp4 --checkpoint runs/x --window 2 --stride 1      # a timeline of actions
    video-adapt infer clip.mp4 --checkpoint exports/x --runtime onnx          # an export (video-adapt export)
    video-adapt infer videos/ --backbone videomae_b.pth --adapters actions=runs/a/adapters scenes=runs/b
                                                        # several tasks on one backbone, loaded once

Class names come from the checkpoint. An unreadable file gets a one-line error; the others still run.
With several tasks (TASK=DIR, adapter or training run directories trained on the same backbone and test views)
every file gets every task's result; linear probing tasks share one backbone forward per clip, adapter tasks run as
one mixed batch (docs/SERVING.md).
"""
from __future__ import annotations

import argparse
import sys

from video_adapt.console import command
from video_adapt.data.sampling import parse_span
from video_adapt.errors import ConfigError
from video_adapt.export.manifest import RUNTIMES


def span(text: str) -> float | str:
    try:
        return parse_span(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help="video files or folders of videos")
    parser.add_argument("--checkpoint", help="training run directory, adapter directory of a full fine-tune, or an "
                                             "export directory (video-adapt export)")
    parser.add_argument("--backbone", help="pretrained backbone the adapters were trained on")
    parser.add_argument("--adapters", nargs="+", metavar="[TASK=]DIR",
                        help="adapter directory written by training (adapters/ or best/); several tasks on one "
                             "backbone as TASK=DIR TASK=DIR (adapter or run directories)")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--crops", type=int, default=None, help="spatial crops per clip (default: as trained)")
    parser.add_argument("--window", type=span, help="classify windows of this many seconds (2, 0.5s) or frames (16f)")
    parser.add_argument("--stride", type=span, help="seconds or frames between windows (default: --window)")
    parser.add_argument("--batch", type=int, default=8, help="videos per forward pass")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", help="write all results to this JSON file")
    parser.add_argument("--force", action="store_true", help="load adapters on another backbone anyway")
    parser.add_argument("--runtime", default="torch",
                        help=f"{' | '.join(RUNTIMES)}: onnx and openvino run an export directory; torch runs a run "
                             "directory (or an export's .pt2)")
    parser.add_argument("--precision", default="fp32",
                        help="fp32; int8 (onnx, an export written with --int8); bf16 (openvino)")
    args = parser.parse_args(argv)
    from video_adapt.files import write_json_atomic
    from video_adapt.inference import Predictor, expand_inputs, segments
    from video_adapt.serving import parse_tasks
    if args.runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {args.runtime}: unknown runtime; one of {', '.join(RUNTIMES)}")
    tasks, more_inputs = parse_tasks(args.adapters or [])
    args.inputs += more_inputs
    if not args.inputs:
        raise ConfigError("give video files or folders to classify")
    if tasks:
        predictor = _multi_task(args, tasks)
    else:
        predictor = Predictor.load(args.checkpoint, args.backbone, args.adapters[0] if args.adapters else None,
                                   args.device, args.crops, args.force, runtime=args.runtime,
                                   precision=args.precision)
    paths = expand_inputs(args.inputs)
    if not paths:
        raise ConfigError("no video files found in the inputs")
    if args.window:
        results = [predictor.timeline(p, args.window, args.stride or args.window, args.topk) for p in paths]
    else:
        results = predictor.predict(paths, args.topk, args.batch)
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(f"error: {r.error}", file=sys.stderr)
            continue
        named = getattr(r, "tasks", None)
        if named is None:
            print(f"{r.path}: " + ", ".join(f"{label} {prob:.3f}" for label, prob in r.top))
        else:
            print(f"{r.path}:")
        for name, pred in (named or {None: r}).items():
            if name is not None:
                print(f"  {name}: " + ", ".join(f"{label} {prob:.3f}" for label, prob in pred.top))
            if pred.windows is not None:
                for s in segments(pred.windows):
                    print(f"  {'  ' if name else ''}{s.start_s:7.2f}-{s.end_s:7.2f} s  {s.label} ({s.prob:.2f})")
    if args.json:
        write_json_atomic(args.json, [r.as_dict() for r in results])
        print(f"results: {args.json}")
    print(f"{len(results) - failed} of {len(results)} videos classified")
    return 1 if failed == len(results) else 0


def _multi_task(args: argparse.Namespace, tasks: dict[str, str]):
    """Several tasks on one backbone: refuse what only a single model can do, then load them together."""
    from video_adapt.serving import MultiTaskPredictor
    if args.checkpoint:
        raise ConfigError("--checkpoint with several --adapters: name the run as one of them (TASK=RUN_DIR)")
    if args.runtime != "torch" or args.precision != "fp32":
        raise ConfigError(f"--runtime {args.runtime} --precision {args.precision}: several tasks run on the torch "
                          "runtime in fp32 (an export holds one task)")
    return MultiTaskPredictor.load(tasks, args.backbone, args.device, args.crops, args.force)


if __name__ == "__main__":
    sys.exit(main())
