"""N tasks on one backbone: one process serving them all against N separate processes, on the same video files
(peak RSS and videos/s).

    python tools/bench_multitask.py                                  # ViT-B 8x224: linear and adaptformer, N = 1 2 4
    python tools/bench_multitask.py --families mixed --counts 4
    python tools/bench_multitask.py --forward --families adaptformer --counts 4 --threads 1   # the model alone
    python tools/bench_multitask.py --smoke --json out.json          # tiny sizes, seconds (used by the tests)

How the processes are started, released together and measured: video_adapt/benchmarks/multitask.py; results in
BENCHMARKS.md ("Several tasks on one backbone").
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from video_adapt.console import command


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["linear", "adaptformer"],
                        choices=["linear", "adaptformer", "lora", "st_adapter", "vpt", "bitfit", "mixed"],
                        help="the tasks' method ('mixed': linear, adaptformer, lora, st_adapter in turn)")
    parser.add_argument("--counts", nargs="+", type=int, default=[1, 2, 4], help="numbers of tasks")
    parser.add_argument("--videos", type=int, default=8, help="video files, classified once each")
    parser.add_argument("--batch", type=int, default=8, help="videos per forward (as video-adapt infer --batch)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side, alternating (the median counts)")
    parser.add_argument("--out", help="where the backbone, adapters and videos are made (kept; reused next time)")
    parser.add_argument("--forward", action="store_true",
                        help="instead: the model alone in this process, a mixed forward of every task against each "
                             "task's own model (the routers' cost and the batch size's)")
    parser.add_argument("--forward-clips", type=int, default=2, help="clips per task for --forward")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for --forward (0: torch's default)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (used by the tests)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    from video_adapt.benchmarks.multitask import family_methods, forward_rounds, make_setup, report, rows_json, run
    from video_adapt.files import write_json_atomic
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_multitask_"))
    sizes = dict(model_name="vit_nano_patch8_32", num_frames=4, img_size=32, videos=min(args.videos, 3),
                 video_frames=12, video_size=(32, 40)) if args.smoke else dict(videos=args.videos)
    if args.forward:
        import statistics
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        figures = {}
        for family in args.families:
            setup = make_setup(out / family, family_methods(family, max(args.counts)), **sizes)
            for n in args.counts:
                times = forward_rounds(setup, dict(list(setup.tasks.items())[:n]), args.forward_clips, args.rounds)
                figures[f"{n} x {family}"] = times
                for name, rounds in times.items():
                    print(f"{n} x {family}: {name}: median {statistics.median(rounds):.2f} s  (rounds {rounds})")
        if args.json:
            write_json_atomic(args.json, {"forward": figures, "args": vars(args), "threads": torch.get_num_threads()})
            print(f"figures: {args.json}")
        return 0
    rows = run(out, args.families, args.counts, batch=args.batch, rounds=1 if args.smoke else args.rounds, **sizes)
    print("\n" + report(rows))
    if args.json:
        write_json_atomic(args.json, {"rows": rows_json(rows), "args": vars(args)})
        print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
