"""The frame-count comparison: methods x frames x seeds, as a table (markdown, CSV) and a plot of top-1 against frames.

    python tools/compare.py --config configs/demo/base.yaml --grid configs/demo/grid.yaml --out runs/compare
    python tools/compare.py --collect runs/compare          # tables from runs finished earlier, nothing trained

--grid names the variants (method settings as config overrides), frame counts and seeds (see configs/demo/grid.yaml).
Finished runs are reused and interrupted ones resume, so the command can be stopped and rerun.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from video_adapt.checkpoint import CheckpointError
from video_adapt.config import ConfigError
from video_adapt.experiments import Variant, aggregate, collect, markdown_table, plot_frames, run_grid, write_csv


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
    try:
        if args.collect:
            out = Path(args.collect)
            results = collect(out)
            if not results:
                print(f"error: no finished runs under {out}", file=sys.stderr)
                return 2
        else:
            if not args.grid:
                parser.error("--grid is required unless --collect is given")
            grid = yaml.safe_load(Path(args.grid).read_text())
            variants = [Variant(name, list(o)) for name, o in grid["variants"].items()]
            out = Path(args.out)
            results = run_grid(args.config, args.overrides, variants, args.frames or grid["frames"],
                               args.seeds or grid["seeds"], out)
    except (ConfigError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cells = aggregate(results)
    table = markdown_table(cells)
    (out / "table.md").write_text(table + "\n")
    print(table)
    print(f"table: {out / 'table.md'}")
    print(f"csv: {write_csv(cells, out / 'table.csv')}")
    print(f"plot: {plot_frames(cells, out / 'frames.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
