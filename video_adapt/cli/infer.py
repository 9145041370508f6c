"""Classify your own video files with a trained model: top-k classes with probabilities.

    video-adapt infer clip.mp4 other.webm --checkpoint runs/demo/run          # a training run directory
    video-adapt infer videos/ --backbone videomae_b.pth --adapters runs/x/adapters --json out.json
    video-adapt infer long.mp4 --checkpoint runs/x --window 2 --stride 1      # a timeline of actions
    video-adapt infer clip.mp4 --checkpoint exports/x --runtime onnx          # an export (video-adapt export)
    video-adapt infer videos/ --backbone videomae_b.pth --adapters actions=runs/a/adapters scenes=runs/b
                                                        # several tasks on one backbone, loaded once

    video-adapt infer --stream 0 --checkpoint runs/x                           # a webcam, live (docs/SERVING.md)
    video-adapt infer --stream rtsp://cam/live --checkpoint runs/x --window 2 --stride 0.5 --jsonl labels.jsonl
    ffmpeg -i clip.mp4 -f matroska - | video-adapt infer --stream - --checkpoint runs/x

Class names come from the checkpoint. A multi-label model (trained on label sets) gives each class its own
probability and lists the classes at or above --threshold. An unreadable file gets a one-line error; the others
still run. With several tasks (TASK=DIR, adapter or training run directories trained on the same backbone and test
views) every file gets every task's result; linear probing tasks share one backbone forward per clip, adapter tasks
run as one mixed batch (docs/SERVING.md).
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
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="multi-label models: list the classes at or above this probability")
    parser.add_argument("--crops", type=int, default=None, help="spatial crops per clip (default: as trained)")
    parser.add_argument("--window", type=span, help="classify windows of this many seconds (2, 0.5s) or frames (16f)"
                                                   "; with --stream 2 s unless given")
    parser.add_argument("--stride", type=span, help="seconds or frames between windows (default: --window)")
    live = parser.add_argument_group("a live stream (instead of files)")
    live.add_argument("--stream", metavar="SOURCE",
                      help="a webcam index (0), an rtsp:// or http:// URL, a file that may still be growing "
                           "(followed until --idle-timeout), or - for stdin (an encoded stream: matroska, mpegts, "
                           "nut, y4m ...; or bare frames with --raw)")
    live.add_argument("--raw", metavar="WxH[:FMT]", help="bare frames of this size, rgb24 (default), bgr24 or gray")
    live.add_argument("--fps", type=float, help="the stream's frame rate (needed with --raw; overrides the stated one)")
    live.add_argument("--format", help="the container when probing cannot tell (e.g. mpegts)")
    live.add_argument("--jsonl", help="append one JSON line per window to this file (flushed per line)")
    live.add_argument("--idle-timeout", type=float, default=10.0,
                      help="end a followed file or URL after this many seconds without new data (default 10)")
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
    from video_adapt.inference import expand_inputs, segments
    from video_adapt.serving import load_served, parse_tasks
    if args.runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {args.runtime}: unknown runtime; one of {', '.join(RUNTIMES)}")
    tasks, more_inputs = parse_tasks(args.adapters or [])
    args.inputs += more_inputs
    if args.stream is not None and args.inputs:
        raise ConfigError(f"--stream {args.stream} classifies a stream; give it or video files ({args.inputs[0]}), "
                          "not both")
    if args.stream is None and not args.inputs:
        raise ConfigError("give video files or folders to classify, or --stream SOURCE")
    if args.stream is None and (args.raw or args.jsonl):
        raise ConfigError(f"{'--raw' if args.raw else '--jsonl'} is for --stream")
    predictor = load_served(tasks, checkpoint=args.checkpoint, backbone=args.backbone,
                            adapters=args.adapters[0] if args.adapters else None, device=args.device,
                            crops=args.crops, runtime=args.runtime, precision=args.precision, force=args.force,
                            threshold=args.threshold)
    if args.stream is not None:
        return _stream(args, predictor)
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
            if pred.labels is not None:
                print(f"  {name + ' ' if name else ''}labels >= {args.threshold:g}: "
                      + (", ".join(label for label, _ in pred.labels) or "none"))
            if pred.windows is not None:
                for s in segments(pred.windows):
                    print(f"  {'  ' if name else ''}{s.start_s:7.2f}-{s.end_s:7.2f} s  {s.label} ({s.prob:.2f})")
    if args.json:
        write_json_atomic(args.json, [r.as_dict() for r in results])
        print(f"results: {args.json}")
    print(f"{len(results) - failed} of {len(results)} videos classified")
    return 1 if failed == len(results) else 0


def _stream(args: argparse.Namespace, predictor) -> int:
    """Classify the live source window by window, a line per window, the summary at the end (also after Ctrl-C)."""
    from video_adapt.files import write_json_atomic
    from video_adapt.serving import MultiTaskPredictor
    from video_adapt.data.sampling import span_text
    from video_adapt.stream import open_stream, run_stream
    tasks = predictor if isinstance(predictor, MultiTaskPredictor) else MultiTaskPredictor.single(predictor)
    window = args.window or 2.0
    name = "stdin" if args.stream == "-" else args.stream
    print(f"waiting for {name}: windows of {span_text(window)} every {span_text(args.stride or window)} (Ctrl-C ends)",
          file=sys.stderr, flush=True)
    source = open_stream(args.stream, raw=args.raw, fps=args.fps, fmt=args.format, idle_timeout=args.idle_timeout)
    windows = []

    def show(result) -> None:
        windows.append(result.as_dict())
        print(result.line(), flush=True)
    summary = run_stream(tasks, source, window, args.stride or window, topk=args.topk, on_window=show,
                         jsonl=args.jsonl)
    print(summary.text(), flush=True)
    if args.jsonl:
        print(f"windows: {args.jsonl}")
    if args.json:
        write_json_atomic(args.json, {"summary": summary.as_dict(), "windows": windows})
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
