"""Multi-view test of a trained run with the test views of the data protocol it was trained with (temporal clips x
spatial crops, scores averaged as that protocol does): top-1/top-5, per-class accuracy, confusion matrix (CSV +
PNG) and a predictions file; a multi-label run: mAP, per-class average precision and predictions.

    video-adapt test runs/ssv2_adaptformer_8f --split val --crops 3
"""
from __future__ import annotations

import argparse
import sys

from video_adapt.console import command, print_outputs


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="training run directory (holds config.yaml and adapters/)")
    parser.add_argument("--weights", default="adapters",
                        help="adapters (the final epoch, what the run reports) or a best_<split> directory of the run")
    parser.add_argument("--split", default=None, help="split to test (default: the one the run reported)")
    parser.add_argument("--crops", type=int, default=None, help="spatial crops per clip (default: the protocol's)")
    parser.add_argument("--average", default=None, choices=["logits", "softmax"],
                        help="how views are combined (default: the protocol's: mean logits for AdaptFormer, mean "
                             "softmax for VideoMAE)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", help="output directory (default: RUN/test_<split>)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides (e.g. data.root=...)")
    args = parser.parse_args(argv)
    from video_adapt.engine.runs import evaluate_run
    test = evaluate_run(args.run, args.split, weights=args.weights, crops=args.crops, average=args.average,
                        batch_size=args.batch_size, workers=args.workers, device=args.device,
                        overrides=args.overrides, out_dir=args.out, progress=True)
    r = test.result
    numbers = f"mAP {r.mean_ap:.2f}" if r.multilabel else f"top-1 {r.top1:.2f}  top-5 {r.top5:.2f}"
    print(f"{test.split}: {numbers}  ({r.num_videos} videos, {test.crops} crops, {test.average} averaging)")
    print_outputs(test.paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
