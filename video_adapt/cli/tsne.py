"""t-SNE of pooled features for several trained runs, side by side, with separability numbers.

    video-adapt tsne runs/demo/runs/adaptformer/8f/seed0 runs/demo/runs/vpt/8f/seed0 runs/demo/runs/linear/8f/seed0

Features are what each head sees (mean-pooled, fc_norm), averaged over a video's test views (the run's protocol,
with --crops spatial crops). Prints silhouette score
and 5-NN accuracy per run and writes one PNG (default: tsne.png beside the first run) and a JSON of the numbers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="training run directories")
    parser.add_argument("--names", nargs="+", help="panel titles (default: the run directories)")
    parser.add_argument("--split", default=None, help="split to map (default: the one the run reported)")
    parser.add_argument("--crops", type=int, default=1)
    parser.add_argument("--out", help="PNG path (default: RUN0/../tsne.png)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    from video_adapt.analysis import tsne_runs
    from video_adapt.distributed import resolve_device
    names = args.names or [str(Path(r)) for r in args.runs]
    out = Path(args.out) if args.out else Path(args.runs[0]).parent / "tsne.png"
    numbers = tsne_runs(dict(zip(names, args.runs)), out, split=args.split, crops=args.crops,
                        device=resolve_device(args.device))
    for name, scores in numbers.items():
        print(f"{name}: silhouette {scores['silhouette']:.3f}, 5-NN accuracy {scores['knn_accuracy']:.1f}% "
              f"({scores['videos']} videos)")
    print(f"plot: {out}")
    print(f"numbers: {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
