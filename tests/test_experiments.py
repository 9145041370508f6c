import json
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_overrides
from video_adapt.experiments import Variant, aggregate, collect, markdown_table, plot_frames, run_grid, write_csv


def fake_train(calls):
    """Stands in for engine.train: accuracy depends on method and frames; writes summary.json as train does."""
    def train(cfg):
        calls.append((cfg.model.tuning, cfg.data.num_frames, cfg.train.seed, cfg.resume))
        top1 = {"adaptformer": 80, "linear": 60}[cfg.model.tuning] + cfg.data.num_frames + cfg.train.seed
        from pathlib import Path
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        lr = 0.01 if cfg.model.tuning == "adaptformer" else 0.1
        (out / "summary.json").write_text(json.dumps({
            "final_top1": top1, "trainable_params": 10, "trainable_ratio": 0.01, "wall_time_s": 2.0,
            "peak_memory_bytes": 2 ** 20,
            "protocol": {"recipe": "adaptformer", "sampling": "tsn", "test_sampling": "dense", "test_clips": 4,
                         "test_crops": 3, "view_average": "logits", "global_batch": 1024, "lr": lr, "epochs": 90}}))
    return train


def test_grid_runs_each_cell_once_and_reuses_finished_runs(tmp_path):
    calls = []
    variants = [Variant("adaptformer", ["model.tuning=adaptformer"]), Variant("linear", ["model.tuning=linear"])]
    results = run_grid(None, ["train.epochs=1"], variants, [2, 8], [0, 1], tmp_path, train_fn=fake_train(calls))
    assert len(results) == len(calls) == 8
    assert all(c[3] == "auto" for c in calls)  # interrupted runs resume
    again = run_grid(None, ["train.epochs=1"], variants, [2, 8], [0, 1], tmp_path, train_fn=fake_train(calls))
    assert len(calls) == 8 and [r.summary for r in again] == [r.summary for r in results]
    assert len(collect(tmp_path)) == 8


def test_table_plot_and_standard_errors(tmp_path):
    calls = []
    variants = [Variant("adaptformer", ["model.tuning=adaptformer"]), Variant("linear", ["model.tuning=linear"])]
    cells = aggregate(run_grid(None, [], variants, [2, 8], [0, 1, 2], tmp_path, train_fn=fake_train(calls)))
    table = markdown_table(cells)
    assert "| adaptformer | 83.0 ± 1.0 | 89.0 ± 1.0 |" in table
    assert "| linear | 63.0 ± 1.0 | 69.0 ± 1.0 |" in table
    assert plot_frames(cells, tmp_path / "plot.png").stat().st_size > 1000
    assert write_csv(cells, tmp_path / "t.csv").read_text().count("\n") == 5
    # every number stands next to the protocol it came from; what differs is named per method
    assert ("protocol: recipe adaptformer, sampling tsn, views dense 4x3, averaging logits, global batch 1024, "
            "epochs 90; adaptformer: lr 0.01; linear: lr 0.1") in table
    assert "recipe,sampling,views,averaging,global_batch,lr,epochs" in (tmp_path / "t.csv").read_text()


def test_tradeoff_plot_draws_curves_and_single_points(tmp_path):
    from video_adapt.experiments import Cell, plot_study
    cells = [Cell(name, 8, 3, top1, 1.0, params, 0.01, 1.0, 10.0) for name, top1, params in [
        ("vpt 1 tokens", 70, 100), ("vpt 4 tokens", 71, 400), ("lora r=2", 74, 300), ("lora r=8", 75, 1200),
        ("bitfit", 72, 250), ("linear", 65, 50), ("full", 80, 40000)]]
    fig_path = plot_study("tradeoff", cells, tmp_path / "tradeoff.png")
    assert fig_path.stat().st_size > 1000


@pytest.mark.slow
def test_compare_tool_runs_a_small_grid_and_collects(synthetic_store, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("frames: [2, 4]\nseeds: [0]\nvariants:\n  linear: [model.tuning=linear]\n"
                    "  adaptformer: [model.tuning=adaptformer]\n")
    overrides = [o for o in tiny_overrides(synthetic_store, tmp_path / "unused", "train.epochs=1")
                 if not o.startswith(("out_dir", "data.num_frames"))]
    out = subprocess.run([sys.executable, "-m", "video_adapt", "compare", "--grid", str(grid), "--out", str(tmp_path / "cmp"),
                          *overrides], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    assert "| linear |" in out.stdout and "| adaptformer |" in out.stdout and "2 frames | 4 frames" in out.stdout
    assert (tmp_path / "cmp" / "frames.png").stat().st_size > 1000
    again = subprocess.run([sys.executable, "-m", "video_adapt", "compare", "--collect", str(tmp_path / "cmp")], cwd=ROOT,
                           capture_output=True, text=True)
    rows = lambda text: sorted(line for line in text.splitlines() if line.startswith("| "))
    assert again.returncode == 0 and rows(again.stdout) == rows(out.stdout)


def test_studies_cover_the_articles_ablations():
    from video_adapt.experiments import studies
    s = studies(depth=4)
    assert [v.name for v in s["tradeoff"]][:5] == [f"vpt {n} tokens" for n in (1, 2, 4, 8, 16)]
    assert "model.bottleneck=256" in s["tradeoff"][9].overrides
    families = {v.name.split(" ")[0] for v in s["tradeoff"]}
    assert families == {"vpt", "adaptformer", "lora", "st_adapter", "bitfit", "linear", "full"}  # every method
    assert "model.lora_rank=16" in s["tradeoff"][14].overrides
    assert [v.name for v in s["init"]][::2] == ["article init, LN(x')", "lora init, LN(x')", "official init, LN(x')"]
    assert studies(4, ["train.lr=0.001"])["tradeoff"][-1].overrides == ["model.tuning=full", "train.lr=0.001"]
    assert [v.name for v in s["scale"]][-1] == "s=learnable"
    assert "model.adapter_layers=[2, 3]" in s["layers"][3].overrides
    assert {v.name for v in s["position"]} == {"parallel", "sequential"}


@pytest.mark.slow
def test_ablate_tool_runs_a_study(synthetic_store, tmp_path):
    overrides = [o for o in tiny_overrides(synthetic_store, tmp_path / "unused", "train.epochs=1")
                 if not o.startswith(("out_dir", "data.num_frames"))]
    out = subprocess.run([sys.executable, "-m", "video_adapt", "ablate", "--study", "input", "--frames", "4", "--out",
                          str(tmp_path / "abl"), *overrides], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    assert "| input norm |" in out.stdout and "| input residual |" in out.stdout
    assert (tmp_path / "abl" / "input" / "input.png").stat().st_size > 1000


def test_methods_grid_runs_every_method_on_the_demo_config():
    import yaml
    from video_adapt.config import load_config
    from video_adapt.models.methods import METHODS
    root = ROOT / "video_adapt" / "configs" / "demo"
    grid = yaml.safe_load((root / "grid_methods.yaml").read_text())
    tunings = {load_config(root / "base.yaml", overrides).model.tuning for overrides in grid["variants"].values()}
    assert tunings == set(METHODS)


def test_table_shows_the_counted_step_memory_only_when_runs_recorded_it(tmp_path):
    from video_adapt.experiments import GridResult

    def result(variant: str, frames: int, seed: int, step: int | None) -> GridResult:
        summary = {"final_top1": 50.0 + seed, "trainable_params": 10, "trainable_ratio": 0.1, "wall_time_s": 2.0,
                   "peak_memory_bytes": 900 * 2**20, **({"step_memory_bytes": step} if step else {})}
        return GridResult(variant, frames, seed, str(tmp_path), summary)
    cells = aggregate([result("a", t, s, t * 2**20) for t in (2, 8) for s in (0, 1)])
    assert [c.step_mb for c in cells] == [2.0, 8.0]
    table = markdown_table(cells)
    assert "| step MB, counted | peak MB |" in table
    assert table.splitlines()[2].endswith("| 2.0 | 8.0 | 900 |")  # train time, the count at 8 frames, the peak
    assert "step_mb" in write_csv(cells, tmp_path / "t.csv").read_text()
    old = markdown_table(aggregate([result("a", 8, 0, None)]))
    assert "counted" not in old and old.splitlines()[2].endswith("| 2.0 | 900 |")
