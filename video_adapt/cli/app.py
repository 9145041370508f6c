"""A web page for trying a trained model: drop a video, see the top-5 classes, the frames the model looked at and,
for a long video, a timeline of the top class per window.

    video-adapt app                                        # the demo's AdaptFormer run (after video-adapt demo)
    video-adapt app --checkpoint runs/ssv2_adaptformer_8f   # any training run directory
    video-adapt app --backbone videomae_b.pth --adapters runs/x/adapters --port 8080
    video-adapt app --checkpoint exports/x --runtime onnx    # an export directory (video-adapt export)
    video-adapt app --backbone videomae_b.pth --adapters actions=runs/a scenes=runs/b   # several tasks, side by side

The page has a tab for video files and one for the webcam (live: a label every stride, as infer --stream).

The page is served on http://127.0.0.1:PORT, reachable from this machine only. --share-on-network binds to
0.0.0.0 instead, so anyone who can reach this machine on PORT can use the page (and upload files to it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from video_adapt.console import command
from video_adapt.errors import CheckpointError, ConfigError

DEMO_RUN = Path("runs/demo/runs/adaptformer/8f/seed0")  # what `video-adapt demo` trains, where it writes it
DEMO_COMMAND = "video-adapt demo --variants adaptformer --frames 8"


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help=f"training run or export directory (default: {DEMO_RUN}, if it exists)")
    parser.add_argument("--backbone", help="pretrained backbone the adapters were trained on")
    parser.add_argument("--adapters", nargs="+", metavar="[TASK=]DIR",
                        help="adapter directory written by training (adapters/ or best/); several tasks on one "
                             "backbone as TASK=DIR TASK=DIR (adapter or run directories)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share-on-network", action="store_true",
                        help="listen on every network interface (0.0.0.0), not only 127.0.0.1: anyone who can reach "
                             "this machine can use the page")
    parser.add_argument("--max-mb", type=float, default=200, help="largest upload accepted, in MB")
    parser.add_argument("--window", type=float, default=2.0, help="timeline window in seconds (settable on the page)")
    parser.add_argument("--stride", type=float, default=1.0, help="timeline stride in seconds (settable on the page)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="multi-label models: the page lists the classes at or above this probability")
    parser.add_argument("--crops", type=int, default=None, help="spatial crops per clip (default: as trained)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--runtime", default="torch",
                        help="torch | onnx | openvino (onnx and openvino run an export directory)")
    parser.add_argument("--precision", default="fp32", help="fp32; int8 (onnx); bf16 (openvino)")
    args = parser.parse_args(argv)
    from video_adapt.app import build_app, launch
    from video_adapt.serving import load_served, parse_tasks
    tasks, extra = parse_tasks(args.adapters or [])
    if extra:
        raise ConfigError(f"--adapters {extra[0]}: give one adapter directory, or several as TASK=DIR")
    checkpoint = args.checkpoint
    if not checkpoint and not args.adapters:
        if not DEMO_RUN.exists():
            raise ConfigError(f"no model given and {DEMO_RUN} does not exist: train it with `{DEMO_COMMAND}` "
                              f"(or the whole `video-adapt demo`), or pass --checkpoint RUN_DIR")
        checkpoint = str(DEMO_RUN)
    for given in (checkpoint, args.backbone, *(tasks.values() if tasks else args.adapters or [])):
        if given and not Path(given).exists():
            raise CheckpointError(f"{given}: no such file or directory")
    predictor = load_served(tasks, checkpoint=checkpoint, backbone=args.backbone,
                            adapters=args.adapters[0] if args.adapters else None, device=args.device,
                            crops=args.crops, runtime=args.runtime, precision=args.precision,
                            threshold=args.threshold)
    shown = ", ".join(tasks) if tasks else checkpoint or args.adapters[0]
    page = build_app(predictor, title=f"video_adapt: {shown}", max_mb=args.max_mb, window_s=args.window,
                     stride_s=args.stride)
    host = "0.0.0.0" if args.share_on_network else "127.0.0.1"
    print(f"serving {shown} on http://{host}:{args.port} (Ctrl+C stops)", flush=True)
    launch(page, args.port, args.share_on_network)
    return 0


if __name__ == "__main__":
    sys.exit(main())
