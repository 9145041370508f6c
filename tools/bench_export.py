"""CPU inference in every runtime: eager PyTorch (fp32, bf16 autocast), torch.compile, onnxruntime (fp32, int8),
OpenVINO (fp32, bf16) and Hugging Face VideoMAE (SDPA), model only and end to end on mp4 files against the Hugging
Face video-classification pipeline, in one process.

    python tools/bench_export.py                        # the demo model and ViT-B 16x224, batch 1 and 8
    python tools/bench_export.py --models demo --demo-run runs/demo/runs/linear/8f/seed0
    python tools/bench_export.py --smoke --json out.json  # tiny sizes, seconds (used by the tests)

What is measured and how the rounds pair: video_adapt/benchmarks/deploy.py; results in BENCHMARKS.md
("Inference runtimes on CPU").
"""
from __future__ import annotations

import argparse
import sys

import torch

from video_adapt.benchmarks.deploy import EAGER, RUNTIMES, BenchPlan, demo_model, report, run_plan, vit_model
from video_adapt.console import command
from video_adapt.files import write_json_atomic

E2E = [EAGER, "onnxruntime fp32", "openvino fp32", "openvino bf16"]


def plans(args: argparse.Namespace) -> list[BenchPlan]:
    out = []
    if args.smoke:
        bench = vit_model("vit_nano_patch8_32", 4, 32, 5)
        every_but_compile = [name for name in RUNTIMES if not name.startswith("torch.compile")]  # it compiles 20 s
        return [BenchPlan(bench, [1, 2], {1: 1, 2: 1}, 2, (32, 40), 8, False, [EAGER, "onnxruntime fp32"],
                          every_but_compile)]
    for name in args.models:
        if name == "demo":
            out.append(BenchPlan(demo_model(args.demo_run), [1, 8], {1: args.demo_rounds, 8: args.demo_rounds}, 24,
                                 (32, 32), 16, False, E2E))
        else:
            bench = vit_model("vit_base_patch16_224", 16, 224, 174)
            out.append(BenchPlan(bench, [1, 8], {1: args.base_rounds[0], 8: args.base_rounds[1]}, args.base_videos, (240, 320), 48,
                                 True, [EAGER, "openvino fp32", "openvino bf16"]))
    return out


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["demo", "base"], choices=["demo", "base"])
    parser.add_argument("--demo-run", help="a trained demo run to measure instead of the committed demo backbone")
    parser.add_argument("--demo-rounds", type=int, default=200,
                        help="paired rounds per batch for the demo model (a call takes milliseconds)")
    parser.add_argument("--base-rounds", type=int, nargs=2, default=[3, 2], metavar=("B1", "B8"),
                        help="paired rounds for ViT-B at batch 1 and at batch 8 (a call takes seconds)")
    parser.add_argument("--base-videos", type=int, default=4, help="mp4 files end to end for ViT-B")
    parser.add_argument("--threads", type=int, default=0, help="torch / onnxruntime / OpenVINO threads (0: torch's)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (used by the tests)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [run_plan(plan) for plan in plans(args)]
    print(report(results))
    if args.json:
        write_json_atomic(args.json, {"results": results, "args": vars(args), "threads": torch.get_num_threads()})
        print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
