"""Grids of runs (methods x frames x seeds) and their comparison tables and plots.

Each run lives in its own directory `<out>/<variant>/<frames>f/seed<k>`; a run with a `summary.json` is reused,
an interrupted one resumes from its last checkpoint, so a grid can be stopped and restarted at will.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from video_adapt.config import load_config
from video_adapt.errors import ConfigError
from video_adapt.files import write_csv_atomic, write_text_atomic
from video_adapt.resources import shipped_config
from video_adapt.schema import from_dict, option


@dataclass
class Variant:
    """A named method setting: config overrides applied on top of the base config."""

    name: str
    overrides: list[str] = field(default_factory=list)


def _overrides_check(variants: dict[str, Any]) -> str | None:
    bad = [name for name, o in variants.items() if not isinstance(o, list) or not all(isinstance(x, str) for x in o)]
    return f"gives variant {bad[0]!r} no list of key=value overrides" if bad else None


@dataclass
class GridSpec:
    """A grid file (configs/demo/grid.yaml): variants (name -> config overrides), frame counts, seeds, and for the
    demo the size of its synthetic dataset."""

    variants: dict[str, Any] = option(check=_overrides_check)
    frames: list[int] = option(ge=1)
    seeds: list[int] = option(ge=0)
    data: dict[str, Any] = field(default_factory=dict)


def load_grid(path: str | Path) -> dict[str, Any]:
    """A grid file (a path or a shipped name such as `demo/grid_methods`) as {"variants": [Variant], "frames",
    "seeds", "data"}, every key checked."""
    path = Path(path)
    if not path.is_file():
        shipped = shipped_config(str(path))
        if shipped is None:
            raise ConfigError(f"{path}: grid file not found")
        path = shipped
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    try:
        spec = from_dict(GridSpec, values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return {"variants": [Variant(name, list(o)) for name, o in spec.variants.items()], "frames": spec.frames,
            "seeds": spec.seeds, "data": spec.data}


@dataclass
class GridResult:
    variant: str
    frames: int
    seed: int
    run_dir: str
    summary: dict[str, Any]


def run_dir(out: Path, variant: str, frames: int, seed: int) -> Path:
    return out / variant / f"{frames}f" / f"seed{seed}"


def run_grid(base_config: str | Path | None, base_overrides: list[str], variants: list[Variant], frames: list[int],
             seeds: list[int], out: str | Path, *, train_fn: Callable | None = None,
             on_done: Callable[[GridResult], None] | None = None) -> list[GridResult]:
    """Train every (variant, frames, seed) not finished yet; returns all results in grid order."""
    from video_adapt.engine import train
    train_fn = train_fn or train
    out = Path(out)
    results = []
    for variant in variants:
        for t in frames:
            for seed in seeds:
                directory = run_dir(out, variant.name, t, seed)
                summary_path = directory / "summary.json"
                if not summary_path.exists():
                    overrides = [*base_overrides, *variant.overrides, f"data.num_frames={t}", f"train.seed={seed}",
                                 f"out_dir={directory}", "resume=auto"]
                    train_fn(load_config(base_config, overrides))
                result = GridResult(variant.name, t, seed, str(directory), json.loads(summary_path.read_text()))
                results.append(result)
                if on_done is not None:
                    on_done(result)
    return results


def collect(out: str | Path) -> list[GridResult]:
    """Every finished run under `out` (for tables of runs made earlier or elsewhere)."""
    results = []
    for path in sorted(Path(out).glob("*/*f/seed*/summary.json")):
        seed_dir = path.parent
        results.append(GridResult(seed_dir.parent.parent.name, int(seed_dir.parent.name[:-1]),
                                  int(seed_dir.name[4:]), str(seed_dir), json.loads(path.read_text())))
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


@dataclass
class Cell:
    variant: str
    frames: int
    n: int
    top1_mean: float  # the runs' reported number: top-1, or mAP for multi-label runs (`metric`)
    top1_std: float
    trainable: int
    trainable_ratio: float
    train_time_s: float
    peak_mb: float  # the GPU's peak allocation, or the process's peak RSS on a CPU (framework included)
    protocol: dict[str, Any] = field(default_factory=dict)  # what the number depends on (summary.json "protocol")
    step_mb: float | None = None  # a training step's counted memory (engine.builders.counted_step_memory); CPU runs
    metric: str = "top-1"  # top-1 | mAP

    @property
    def sem(self) -> float:
        return self.top1_std / math.sqrt(self.n) if self.n > 1 else float("nan")


def _step_mb(runs: list[GridResult]) -> float | None:
    counted = [r.summary["step_memory_bytes"] for r in runs if r.summary.get("step_memory_bytes")]
    return max(counted) / 2**20 if counted else None


METRICS = {"top-1": "final_top1", "mAP": "final_map"}  # a summary's "metric" -> the key of its final number


def run_metric(results: list[GridResult]) -> str:
    """The number the runs report: top-1, or mAP when they are multi-label; one table never mixes the two."""
    kinds = {r.summary.get("metric", "top-1") for r in results}
    if len(kinds) > 1:
        raise ConfigError(f"the runs report different metrics ({', '.join(sorted(kinds))}): compare multi-label "
                          "and single-label runs in separate tables")
    return kinds.pop() if kinds else "top-1"


def aggregate(results: list[GridResult], metric: str | None = None) -> list[Cell]:
    """Cells of (variant, frames): the mean and std over seeds of `metric` (a summary key; default the runs' own
    final number, `run_metric`)."""
    name = run_metric(results)
    metric = metric or METRICS[name]
    groups: dict[tuple[str, int], list[GridResult]] = {}
    for r in results:
        groups.setdefault((r.variant, r.frames), []).append(r)
    cells = []
    for (variant, frames), runs in groups.items():
        values = [r.summary[metric] for r in runs if r.summary.get(metric) is not None]
        if not values:
            continue
        mean, std = _mean_std(values)
        first = runs[0].summary
        cells.append(Cell(variant, frames, len(values), mean, std, first["trainable_params"], first["trainable_ratio"],
                          sum(r.summary["wall_time_s"] for r in runs) / len(runs),
                          max(r.summary.get("peak_memory_bytes", 0) for r in runs) / 2**20,
                          protocol_fields(first.get("protocol") or {}), _step_mb(runs), name))
    return cells


PROTOCOL_COLUMNS = ("recipe", "sampling", "views", "averaging", "global_batch", "lr", "epochs")


def protocol_fields(protocol: dict[str, Any]) -> dict[str, Any]:
    """The protocol facts a comparison table states next to its numbers, from a run's summary.json."""
    if not protocol:
        return {}
    views = f"{protocol.get('test_sampling')} {protocol.get('test_clips')}x{protocol.get('test_crops')}"
    return {"recipe": protocol.get("recipe"), "sampling": protocol.get("sampling"), "views": views,
            "averaging": protocol.get("view_average"), "global_batch": protocol.get("global_batch"),
            "lr": float(f"{protocol.get('lr', 0):.3g}"), "epochs": protocol.get("epochs")}


def protocol_note(cells: list[Cell]) -> str:
    """One line under a table: the protocol shared by every cell, then what differs per method."""
    if not any(c.protocol for c in cells):
        return ""
    shared = {k: cells[0].protocol.get(k) for k in PROTOCOL_COLUMNS
              if all(c.protocol.get(k) == cells[0].protocol.get(k) for c in cells)}
    line = "protocol: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in shared.items())
    differs = [k for k in PROTOCOL_COLUMNS if k not in shared]
    for variant in dict.fromkeys(c.variant for c in cells):
        cell = next(c for c in cells if c.variant == variant)
        if differs:
            line += f"; {variant}: " + ", ".join(f"{k.replace('_', ' ')} {cell.protocol.get(k)}" for k in differs)
    return line


def markdown_table(cells: list[Cell]) -> str:
    """Methods as rows, frame counts as columns (top-1 mean +- std over seeds), then cost columns."""
    variants = list(dict.fromkeys(c.variant for c in cells))
    frames = sorted({c.frames for c in cells})
    lookup = {(c.variant, c.frames): c for c in cells}
    counted = any(c.step_mb is not None for c in cells)
    header = ["method", *[f"{t} frames" for t in frames], "trainable params", "share", "train time (s)",
              *(["step MB, counted"] if counted else []), "peak MB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for v in variants:
        row = [v]
        for t in frames:
            c = lookup.get((v, t))
            row.append("" if c is None else f"{c.top1_mean:.1f} ± {c.top1_std:.1f}" if c.n > 1 else f"{c.top1_mean:.1f}")
        any_cell = next(lookup[(v, t)] for t in frames if (v, t) in lookup)
        mean_time = sum(lookup[(v, t)].train_time_s for t in frames if (v, t) in lookup) / \
            sum(1 for t in frames if (v, t) in lookup)
        row += [f"{any_cell.trainable:,}", f"{100 * any_cell.trainable_ratio:.2f}%", f"{mean_time:.1f}"]
        if counted:  # at the largest frame count
            steps = [lookup[(v, t)].step_mb for t in frames if (v, t) in lookup]
            row.append(f"{max(s for s in steps if s is not None):.1f}" if any(s is not None for s in steps) else "")
        row.append(f"{max(lookup[(v, t)].peak_mb for t in frames if (v, t) in lookup):.0f}")
        lines.append("| " + " | ".join(row) + " |")
    seeds = sorted({c.n for c in cells})
    lines.append(f"\n{_metric(cells)} (%) of the final multi-view test, mean ± std over {', '.join(map(str, seeds))} "
                 "seed(s)")
    if counted:
        lines.append("step MB, counted: what one training micro-batch holds at the start of its backward (weights, "
                     "gradients, optimizer moments, input, saved activations), kernel-independent, at the largest "
                     "frame count; peak MB: the GPU's peak allocation, or the process's peak RSS on a CPU")
    note = protocol_note(cells)
    if note:
        lines.append(note)
    return "\n".join(lines)


def _metric(cells: list[Cell]) -> str:
    return cells[0].metric if cells else "top-1"


def write_csv(cells: list[Cell], path: Path) -> Path:
    key = "map" if _metric(cells) == "mAP" else "top1"
    return write_csv_atomic(path, ["method", "frames", "seeds", f"{key}_mean", f"{key}_std", f"{key}_sem",
                                   "trainable_params", "trainable_share", "train_time_s", "step_mb", "peak_mb",
                                   *PROTOCOL_COLUMNS],
                            [[c.variant, c.frames, c.n, f"{c.top1_mean:.3f}", f"{c.top1_std:.3f}", f"{c.sem:.3f}",
                              c.trainable, f"{c.trainable_ratio:.6f}", f"{c.train_time_s:.2f}",
                              "" if c.step_mb is None else f"{c.step_mb:.2f}", f"{c.peak_mb:.1f}",
                              *[c.protocol.get(k, "") for k in PROTOCOL_COLUMNS]]
                             for c in cells])


def write_comparison(cells: list[Cell], out: Path, study: str | None = None,
                     title: str = "accuracy against frames") -> tuple[str, dict[str, Path]]:
    """The files every comparison ends with, under `out`: table.md, table.csv and a plot (top-1 against frames, or
    the plot of ablation `study`). Returns the markdown table and the paths by kind (table, csv, plot)."""
    table = markdown_table(cells)
    paths = {"table": write_text_atomic(out / "table.md", table + "\n"), "csv": write_csv(cells, out / "table.csv"),
             "plot": plot_frames(cells, out / "frames.png", title) if study is None
             else plot_study(study, cells, out / f"{study}.png")}
    return table, paths


def plot_frames(cells: list[Cell], path: Path, title: str = "accuracy against frames") -> Path:
    from video_adapt.reports import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in dict.fromkeys(c.variant for c in cells):
        pts = sorted((c for c in cells if c.variant == variant), key=lambda c: c.frames)
        ax.errorbar([c.frames for c in pts], [c.top1_mean for c in pts], yerr=[c.top1_std for c in pts],
                    marker="o", capsize=3, label=variant)
    frames = sorted({c.frames for c in cells})
    ax.set_xscale("log", base=2)
    ax.set_xticks(frames, [str(t) for t in frames])
    ax.set_xlabel("frames")
    ax.set_ylabel(f"{_metric(cells)} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------- ablations
def studies(depth: int, full_overrides: list[str] | None = None) -> dict[str, list[Variant]]:
    """The article's trade-off and ablations as variant lists (for a backbone of `depth` blocks).

    The trade-off puts every method on one parameter axis: VPT tokens, AdaptFormer bottlenecks, LoRA ranks and
    ST-Adapter widths as curves; BitFit, linear probing and full fine-tuning (with `full_overrides`, e.g. its own
    learning rate) as points.
    """
    af = "model.tuning=adaptformer"
    half = max(depth // 2, 1)
    return {
        "tradeoff": [Variant(f"vpt {n} tokens", ["model.tuning=vpt", f"model.vpt_tokens={n}"]) for n in (1, 2, 4, 8, 16)]
        + [Variant(f"adaptformer d={d}", [af, f"model.bottleneck={d}"]) for d in (1, 4, 16, 64, 256)]
        + [Variant(f"lora r={r}", ["model.tuning=lora", f"model.lora_rank={r}"]) for r in (1, 2, 4, 8, 16)]
        + [Variant(f"st_adapter d={d}", ["model.tuning=st_adapter", f"model.bottleneck={d}"]) for d in (2, 8, 32, 128)]
        + [Variant("bitfit", ["model.tuning=bitfit"]), Variant("linear", ["model.tuning=linear"]),
           Variant("full", ["model.tuning=full", *(full_overrides or [])])],
        "scale": [Variant(f"s={s}", [af, f"model.adapter_scale={s}"])
                  for s in (0.01, 0.05, 0.1, 0.2, 0.5, 1.0, "learnable")],
        "position": [Variant(p, [af, f"model.adapter_position={p}"]) for p in ("parallel", "sequential")],
        "layers": [Variant("first block", [af, "model.adapter_layers=[0]"]),
                   Variant(f"first {half}", [af, f"model.adapter_layers={list(range(half))}"]),
                   Variant("last block", [af, f"model.adapter_layers=[{depth - 1}]"]),
                   Variant(f"last {half}", [af, f"model.adapter_layers={list(range(depth - half, depth))}"]),
                   Variant(f"all {depth}", [af])],
        "input": [Variant(f"input {k}", [af, f"model.adapter_input={k}"]) for k in ("norm", "residual")],
        # the article's init and input, the init AdaptFormer's config asks for, and what its released code runs
        "init": [Variant(f"{init} init, {name}", [af, f"model.adapter_init={init}", f"model.adapter_input={kind}"])
                 for init in ("article", "lora", "official") for kind, name in (("norm", "LN(x')"), ("residual", "x'"))],
    }


def plot_study(name: str, cells: list[Cell], path: Path) -> Path:
    """Trade-off: top-1 against trainable parameters per method family; other studies: one bar per variant."""
    from video_adapt.reports import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if name == "tradeoff":  # one curve per method family ("lora r=4" -> lora), single points for the others
        for family in dict.fromkeys(c.variant.split(" ", 1)[0] for c in cells):
            pts = sorted((c for c in cells if c.variant.split(" ", 1)[0] == family), key=lambda c: c.trainable)
            ax.errorbar([c.trainable for c in pts], [c.top1_mean for c in pts], yerr=[c.top1_std for c in pts],
                        marker="o", capsize=3, label=family, linestyle="-" if len(pts) > 1 else "none")
            for c in pts:
                if " " in c.variant:
                    ax.annotate(c.variant.split(" ", 1)[1], (c.trainable, c.top1_mean), fontsize=7,
                                textcoords="offset points", xytext=(3, 3))
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.legend(fontsize=8)
    else:
        ax.bar(range(len(cells)), [c.top1_mean for c in cells], yerr=[c.top1_std for c in cells], capsize=3)
        ax.set_xticks(range(len(cells)), [c.variant for c in cells], rotation=30, ha="right", fontsize=8)
        low = min(c.top1_mean for c in cells)
        ax.set_ylim(max(0, low - 10), min(100, max(c.top1_mean for c in cells) + 5))
    ax.set_ylabel(f"{_metric(cells)} (%)")
    ax.set_title(f"{name} ({cells[0].frames} frames)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
