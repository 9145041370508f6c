"""Multi-view test of a trained run: temporal clips x spatial crops, top-1/top-5, per-class accuracy,
confusion matrix (CSV + PNG) and a predictions file.

    python tools/test.py runs/ssv2_adaptformer_8f --split val --crops 3
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torch.utils.data import DataLoader

from video_adapt.checkpoint import CheckpointError
from video_adapt.config import ConfigError
from video_adapt.distributed import resolve_device
from video_adapt.engine import autocast_dtype, evaluate, load_run
from video_adapt.reports import write_test_reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="training run directory (holds config.yaml and adapters/)")
    parser.add_argument("--weights", default="adapters", choices=["adapters", "best"])
    parser.add_argument("--split", default="val")
    parser.add_argument("--crops", type=int, default=None, help="spatial crops per clip (default: config's test_crops)")
    parser.add_argument("--average", default="prob", choices=["prob", "logit"], help="how views are combined")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", help="output directory (default: RUN/test_<split>)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides (e.g. data.root=...)")
    args = parser.parse_args(argv)
    try:
        from video_adapt.data.datasets import TubeTestDataset
        model, cfg, info = load_run(args.run, args.weights, args.overrides)
        device = resolve_device(args.device)
        model.to(device)
        crops = args.crops or cfg.data.test_crops
        dataset = TubeTestDataset(cfg.data.root, split=args.split, num_frames=cfg.data.num_frames,
                                  img_size=cfg.data.img_size, num_crops=crops)
        loader = DataLoader(dataset, batch_size=args.batch_size or max(1, cfg.data.batch_size // crops),
                            num_workers=cfg.data.num_workers if args.workers is None else args.workers)
        result = evaluate(model, loader, device, autocast_dtype(device, cfg.train.amp), len(info["class_names"]),
                          average=args.average, progress=True)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.run) / f"test_{args.split}"
    views = getattr(dataset, "views_per_video", None)
    paths = write_test_reports(result, info["class_names"], getattr(dataset, "video_ids", None), out,
                               extra={"split": args.split, "crops": crops, "views_per_video": views,
                                      "average": args.average, "run": str(args.run)})
    print(f"{args.split}: top-1 {result.top1:.2f}  top-5 {result.top5:.2f}  ({result.num_videos} videos, "
          f"{crops} crops, {args.average} averaging)")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
