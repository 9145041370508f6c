"""tools/bench_e2e.py in a CI-sized configuration (a smoke test; its timings are not asserted)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_e2e_smoke(tmp_path):
    out = subprocess.run([sys.executable, "tools/bench_e2e.py", "--smoke", "--json", str(tmp_path / "e.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    figures = json.loads((tmp_path / "e.json").read_text())
    for key in ("model only clips/s", "0 workers: tubes, epoch clips/s", "0 workers: tubes, amortised clips/s",
                "0 workers: on the fly clips/s"):
        assert figures[key] > 0, key
    # amortising the one-off preparation can only lower the epoch rate
    assert figures["0 workers: tubes, amortised clips/s"] < figures["0 workers: tubes, epoch clips/s"]
    assert "| 0 |" in out.stdout


def test_bench_e2e_reads_a_folder_of_own_videos(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    from bench_data import make_sources
    for name in ("run", "jump"):
        (tmp_path / name).mkdir()
        make_sources(tmp_path / name, 2, 12, 48, 64)
    out = subprocess.run([sys.executable, "tools/bench_e2e.py", "--smoke", "--videos-dir", str(tmp_path),
                          "--json", str(tmp_path / "e.json")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    assert json.loads((tmp_path / "e.json").read_text())["0 workers: on the fly clips/s"] > 0
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, "tools/bench_e2e.py", "--smoke", "--videos-dir", str(empty)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "no videos" in out.stderr
