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
    from video_adapt.files import write_json_atomic
    from torch.utils.data import DataLoader

    from video_adapt.analysis import extract_features, plot_tsne, separability, tsne_2d
    from video_adapt.distributed import resolve_device
    from video_adapt.engine.data import data_facts, resolve_data, test_dataset
    from video_adapt.engine.runs import load_run
    device = resolve_device(args.device)
    names = args.names or [str(Path(r)) for r in args.runs]
    maps, numbers, classes = {}, {}, None
    for name, run in zip(names, args.runs):
        model, cfg, info = load_run(run)
        if cfg.data.test_sampling is None:  # a config written by hand: resolve its protocol as training would
            cfg = resolve_data(cfg, data_facts(cfg))
        dataset = test_dataset(cfg, args.split or cfg.data.test_split or cfg.data.val_split, args.crops)
        feats, labels = extract_features(model.to(device), DataLoader(dataset, batch_size=32), device)
        scores = separability(feats, labels)
        maps[name] = (tsne_2d(feats), labels, scores)
        numbers[name] = scores
        classes = info["class_names"]
        print(f"{name}: silhouette {scores['silhouette']:.3f}, 5-NN accuracy {scores['knn_accuracy']:.1f}% "
              f"({len(labels)} videos)")
    out = Path(args.out) if args.out else Path(args.runs[0]).parent / "tsne.png"
    plot_tsne(maps, classes, out)
    write_json_atomic(out.with_suffix(".json"), numbers)
    print(f"plot: {out}")
    print(f"numbers: {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
