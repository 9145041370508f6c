"""Linear probing: epoch time on clips against cached features (train.feature_cache), in one process.

    python tools/bench_cache.py                                  # the embedded benchmark (run video-adapt demo first)
    python tools/bench_cache.py --views 8 --rounds 20 data.num_frames=4
    python tools/bench_cache.py --config ssv2/linear_8f --views 4 model.pretrained=... device=cuda

The two kinds of epoch alternate (a shared host's load falls on both alike); each is the training pass of
`train_one_epoch`, median over the rounds. Also the one-off time to cache K views, in epochs on clips. The measuring
code is video_adapt.benchmarks.feature_cache; accuracy comes from training runs (configs/demo/grid_cached.yaml).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from video_adapt.console import command
from video_adapt.files import write_json_atomic


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo/base", help="training config: a file or a shipped name")
    parser.add_argument("--views", type=int, default=4, help="K, the cached views per training video")
    parser.add_argument("--rounds", type=int, default=10, help="epochs of each kind, alternating")
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    args = parser.parse_args(argv)
    from video_adapt.benchmarks.feature_cache import paired_epoch_times
    from video_adapt.config import load_config
    cfg = load_config(args.config, ["model.tuning=linear", *args.overrides, f"train.feature_cache={args.views}"])
    with tempfile.TemporaryDirectory() as tmp:  # a fresh cache: its cost is measured, not loaded
        result = paired_epoch_times(cfg, args.rounds, Path(tmp)).summary()
    print(f"epoch on clips {result['clips_epoch_s']:.3f} s, on cached features {result['cached_epoch_s']:.4f} s "
          f"(median of {result['rounds']} alternating rounds): {result['speedup']:.1f}x; caching {result['views']} "
          f"views of {result['videos']} videos took {result['cache_s']:.1f} s = "
          f"{result['cache_in_clip_epochs']:.1f} epochs on clips")
    if args.json:
        write_json_atomic(args.json, result)
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
