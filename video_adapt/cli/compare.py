"""The frame-count comparison: methods x frames x seeds, as a table (markdown, CSV) and a plot of top-1 against frames.

    video-adapt compare --config demo/base --grid demo/grid --out runs/compare
    video-adapt compare --collect runs/compare          # tables from runs finished earlier, nothing trained

--grid names the variants (method settings as config overrides), frame counts and seeds (see configs/demo/grid.yaml).
Finished runs are reused and interrupted ones resume, so the command can be stopped and rerun.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from video_adapt.console import command, print_outputs
from video_adapt.errors import ConfigError


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="base training config")
    parser.add_argument("--grid", help="YAML with variants, frames and seeds")
    parser.add_argument("--frames", type=int, nargs="+", help="override the grid's frame counts")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the grid's seeds")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--collect", help="only tabulate the finished runs under this directory")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides for every run")
    args = parser.parse_args(argv)
    from video_adapt.experiments import aggregate, collect, load_grid, run_grid, write_comparison
    if args.collect:
        out = Path(args.collect)
        results = collect(out)
        if not results:
            raise ConfigError(f"{out}: no finished runs (no */<frames>f/seed<k>/summary.json)")
    else:
        if not args.grid:
            parser.error("--grid is required unless --collect is given")
        grid = load_grid(args.grid)
        out = Path(args.out)
        results = run_grid(args.config, args.overrides, grid["variants"], args.frames or grid["frames"],
                           args.seeds or grid["seeds"], out)
    table, paths = write_comparison(aggregate(results), out)
    print(table)
    print_outputs(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
