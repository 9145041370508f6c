"""The package as users install it: a wheel (not an editable checkout) in a fresh virtual environment, run from a
folder outside the repository. Everything a command reads at run time must ship inside the wheel."""
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, tiny_overrides


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """video_adapt built as a wheel from a copy of the sources and installed, without its dependencies and without
    a network, into a virtual environment that reuses this environment's packages; returns the environment's bin."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for package in ("video_adapt", "data_prep"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    dist = work / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(dist), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(dist.glob("video_adapt-*.whl"))
    env = work / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env)
    bin_dir = env / "bin"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install",
                                "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return bin_dir


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # no PYTHONPATH: only the wheel may provide video_adapt (the editable checkout is shadowed by it)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(bin_dir / "video-adapt"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_wheel_ships_the_configs_and_the_demo_backbone(installed):
    wheel = next((installed.parents[1] / "dist").glob("video_adapt-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"video_adapt/configs/demo/grid.yaml", "video_adapt/configs/demo/base.yaml",
            "video_adapt/configs/ssv2/adaptformer_8f.yaml", "video_adapt/configs/methods/lora.yaml",
            "video_adapt/assets/demo_backbone.safetensors", "data_prep/ssv2.py"} <= names
    assert not any(n.startswith(("tools/", "tests/")) for n in names)


@pytest.mark.slow
def test_installed_commands_run_outside_the_repository(installed, synthetic_store, tmp_path):
    where = subprocess.run([str(installed / "python"), "-c", "import video_adapt; print(video_adapt.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                                               if k != "PYTHONPATH"})
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout  # the wheel, not the checkout
    helped = _run(installed, "demo", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: video-adapt demo"), helped.stderr
    params = _run(installed, "params", "--tuning", "adaptformer", "linear", cwd=tmp_path)
    assert params.returncode == 0 and "| adaptformer | 1,189,632 | 1,324,974 | 1.51% |" in params.stdout, params.stderr
    listed = _run(installed, "configs", "ssv2", cwd=tmp_path)
    assert listed.returncode == 0 and "ssv2/adaptformer_8f" in listed.stdout.split()
    # a file of the user's own on top of a shipped config, one epoch of the demo backbone's model
    (tmp_path / "mine.yaml").write_text("_base_: demo/base\ntrain:\n  epochs: 1\n")
    out = tmp_path / "run"
    trained = _run(installed, "train", "--config", "mine.yaml",
                   *[o for o in tiny_overrides(synthetic_store, out) if not o.startswith(("model.name", "train.epochs",
                                                                                          "model.pretrained"))],
                   cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (out / "summary.json").is_file() and (out / "adapters" / "adapter_config.json").is_file()
    assert "demo_backbone.safetensors" in (out / "config.yaml").read_text()  # model.pretrained: demo, resolved


@pytest.mark.slow
def test_repository_tooling_refuses_in_one_line_from_an_install(installed, tmp_path):
    probe = ("import sys\nfrom video_adapt.gpu_check.command import main\nsys.exit(main(['--quick']))\n")
    out = subprocess.run([str(installed / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-1000:]
    assert out.stderr.count("\n") == 1 and "needs a checkout of the repository" in out.stderr

