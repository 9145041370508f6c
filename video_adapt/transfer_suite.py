"""The transfer suite: does a backbone's pretraining help on temporal tasks from generators it never saw?

For every family of video_adapt.data.transfer: generate its videos as mp4 files, prepare a frame store, fine-tune
each variant of the grid (configs/demo/grid_transfer.yaml: AdaptFormer on the backbone, and the control, AdaptFormer
on a random frozen backbone) with the embedded benchmark's recipe, and tabulate top-1 per family with the
difference to the control. Runs of the backbone live under a folder named after the backbone file's hash, so a new
backbone never reuses an old one's runs, while the control's runs (which no backbone enters) are shared.
"""
from __future__ import annotations

import hashlib
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

from video_adapt.console import print_outputs
from video_adapt.errors import ConfigError
from video_adapt.experiments import Cell, GridResult, aggregate, load_grid, run_grid
from video_adapt.files import write_csv_atomic, write_json_atomic, write_text_atomic
from video_adapt.resources import resolve_pretrained, shipped_config

SUITE_GRID = shipped_config("demo/grid_transfer")
SUITE_CONFIG = shipped_config("demo/base")
DATA_KEYS = ("families", "size", "video_frames", "train_per_class", "val_per_class", "seed", "control")


def load_suite(path: str | Path | None = None) -> dict[str, Any]:
    """The suite's grid (`load_grid`) with its data keys checked, one line naming the file and key otherwise."""
    path = path or SUITE_GRID
    grid = load_grid(path)
    missing = [k for k in DATA_KEYS if k not in grid["data"]]
    if missing:
        raise ConfigError(f"{path}: data.{missing[0]} is missing (a transfer grid names {', '.join(DATA_KEYS)})")
    names = [v.name for v in grid["variants"]]
    if grid["data"]["control"] not in names or len(names) < 2:
        raise ConfigError(f"{path}: data.control {grid['data']['control']!r} must be one of at least two variants "
                          f"({', '.join(names)})")
    return grid


def backbone_key(pretrained: str | None) -> str:
    """The folder name of a backbone's runs: the file's stem and the start of its sha256 ('none' for none)."""
    if pretrained in (None, "", "none"):
        return "none"
    path = Path(pretrained)
    if not path.is_file():
        raise ConfigError(f"{path}: backbone file not found")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{path.stem}-{digest}"


def prepare_family(out: Path, name: str, data: dict[str, Any], progress: bool = True) -> Path:
    """Generate family `name`'s videos and prepare their frame store under `out` (both resume); returns the store."""
    from video_adapt.data.synthetic import class_folders, make_video_store
    from video_adapt.data.transfer import TransferSpec, family, family_clip
    spec = TransferSpec(size=data["size"], frames=data["video_frames"])
    classes = family(name).classes
    report = make_video_store(out, classes, class_folders(classes, partial(family_clip, name, spec=spec),
                                                          data["seed"]),
                              data["train_per_class"], data["val_per_class"], shard_size=5000,
                              source=f"video_adapt transfer suite, family {name}", progress=progress)
    print(f"[transfer] {name}: {report.summary()}", flush=True)
    return report.out


def difference(cell: Cell, control: Cell) -> tuple[float, float]:
    """Mean difference of top-1 (points) and its standard error from the two cells' seeds (a single seed adds no
    spread)."""
    return cell.top1_mean - control.top1_mean, math.hypot(*(c.sem if c.n > 1 else 0.0 for c in (cell, control)))


def suite_rows(cells: dict[str, list[Cell]], control: str) -> list[dict[str, Any]]:
    """One row per (family, frames, variant other than the control): both top-1s and their difference."""
    rows = []
    for name, family_cells in cells.items():
        lookup = {(c.variant, c.frames): c for c in family_cells}
        for c in family_cells:
            if c.variant == control or (control, c.frames) not in lookup:
                continue
            base = lookup[(control, c.frames)]
            diff, se = difference(c, base)
            rows.append({"family": name, "frames": c.frames, "variant": c.variant, "seeds": c.n,
                         "top1_mean": c.top1_mean, "top1_std": c.top1_std, "control_mean": base.top1_mean,
                         "control_std": base.top1_std, "difference": diff, "difference_se": se})
    return rows


def suite_table(rows: list[dict[str, Any]], backbone: str, control: str) -> str:
    """Markdown: per family, the backbone's top-1, the control's and the difference (mean ± std over seeds)."""
    lines = [f"| family | frames | {rows[0]['variant'] if rows else 'variant'} on {backbone} | {control} | "
             "difference | SE |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["seeds"] > 1:
            cells = [f"{r['top1_mean']:.1f} ± {r['top1_std']:.1f}", f"{r['control_mean']:.1f} ± {r['control_std']:.1f}",
                     f"{r['difference']:+.1f}", f"{r['difference_se']:.1f}"]
        else:  # one seed: no spread, no standard error
            cells = [f"{r['top1_mean']:.1f}", f"{r['control_mean']:.1f}", f"{r['difference']:+.1f}", ""]
        lines.append(f"| {r['family']} | {r['frames']} | " + " | ".join(cells) + " |")
    seeds = sorted({r["seeds"] for r in rows})
    lines.append(f"\ntop-1 (%) of the final multi-view test, mean ± std over {', '.join(map(str, seeds))} seed(s); "
                 "difference: backbone - control, SE: its standard error")
    return "\n".join(lines)


def _report(name: str, result: GridResult) -> None:
    s = result.summary
    print(f"[transfer] {name:<12} {result.variant:<30} {result.frames} frames  seed {result.seed}: top-1 "
          f"{s['final_top1']:.1f}  ({s['wall_time_s']:.0f} s)", flush=True)


def run_transfer(out: str | Path = "runs/transfer", backbone: str = "demo", seeds: list[int] | None = None,
                 frames: list[int] | None = None, families: list[str] | None = None, overrides: list[str] | None = None,
                 grid_path: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the suite (finished runs are reused, interrupted ones resume); returns the summary it writes."""
    from video_adapt.data.transfer import family
    start = time.perf_counter()
    out = Path(out)
    grid = load_suite(grid_path)
    data = grid["data"]
    families = families or list(data["families"])
    for name in families:
        family(name)  # an unknown name fails before anything runs
    pretrained = resolve_pretrained(backbone)
    key = backbone_key(pretrained)
    control = data["control"]
    frames, seeds = frames or grid["frames"], seeds or grid["seeds"]

    cells: dict[str, list[Cell]] = {}
    for name in families:
        store = prepare_family(out / "data" / name, name, data, progress)
        base = [f"data.root={store}", f"model.pretrained={pretrained or 'none'}", *(overrides or [])]
        results = []
        for variant in grid["variants"]:
            runs = out / "runs" / name / ("random" if variant.name == control else key)
            results += run_grid(SUITE_CONFIG, base, [variant], frames, seeds, runs, on_done=partial(_report, name))
        cells[name] = aggregate(results)
    rows = suite_rows(cells, control)
    table = suite_table(rows, key, control)
    print("\n" + table + "\n")
    paths = {"table": write_text_atomic(out / f"table_{key}.md", table + "\n"),
             "csv": write_csv_atomic(out / f"table_{key}.csv", list(rows[0]) if rows else ["family"],
                                     [[f"{v:.3f}" if isinstance(v, float) else v for v in r.values()] for r in rows])}
    summary = {"backbone": pretrained, "backbone_key": key, "rows": rows, "wall_time_s": time.perf_counter() - start}
    paths["summary"] = write_json_atomic(out / f"summary_{key}.json", summary)
    print_outputs(paths, prefix="[transfer] ")
    print(f"[transfer] done in {summary['wall_time_s'] / 60:.1f} min")
    return summary
