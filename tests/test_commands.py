"""Every command answers bad input with one line naming the file or key, a non-zero exit code and no traceback;
and the commands are reachable through `video-adapt <command>` (python -m video_adapt) as well as tools/."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from video_adapt.config import load_config, save_config
from video_adapt.console import command, one_line
from video_adapt.errors import CheckpointError, ConfigError, VideoAdaptError


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A text file posing as a video, a folder that is no store, a run without adapters and a run (untrained,
    full fine-tuning of a random nano backbone) whose store has gone, and a valid grid file."""
    from video_adapt.checkpoint import save_adapters
    from video_adapt.engine.builders import build_model
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "notes.avi").write_text("this is not a video\n" * 50)
    (root / "not_a_store").mkdir()
    (root / "not_a_store" / "readme.txt").write_text("hello")
    overrides = [f"data.root={root / 'not_a_store'}", "model.name=vit_nano_patch8_32", "model.tuning=full",
                 "data.img_size=32", "data.num_frames=4", "data.num_workers=0"]
    cfg = load_config(None, overrides)
    for name in ("no_adapters", "run"):
        (root / name).mkdir()
        save_config(cfg, root / name / "config.yaml")
    model, _ = build_model(cfg, num_classes=3)
    save_adapters(model, root / "run" / "adapters", ["a", "b", "c"],
                  extra={"data": {"num_frames": 4, "img_size": 32, "test_crops": 1}})
    (root / "grid.yaml").write_text("frames: [4]\nseeds: [0]\nvariants:\n  linear: [model.tuning=linear]\n")
    return root


# (command, arguments with {placeholders}, exit code, text the error line must hold)
CASES = {
    "train: wrong store path": ("-m video_adapt train", ["data.root={tmp}/nowhere"], 2, "data.root="),
    "train: bad override": ("-m video_adapt train", ["data.batch_size=abc"], 2, "'data.batch_size' expects int"),
    "train: not a store": ("-m video_adapt train", ["data.root={inputs}/not_a_store"], 2, "not a frame store"),
    "train: missing checkpoint": ("-m video_adapt train", ["data.root={store}", "model.pretrained={tmp}/nowhere.pth"], 2,
                                  "model.pretrained="),
    "train: not a checkpoint": ("-m video_adapt train", ["data.root={store}", "model.name=vit_nano_patch8_32",
                                                   "data.img_size=32", "data.num_frames=4",
                                                   "model.pretrained={inputs}/notes.avi"], 2, "notes.avi"),
    "train: missing config": ("-m video_adapt train", ["--config", "{tmp}/nowhere.yaml"], 2, "nowhere.yaml"),
    "test: wrong run path": ("-m video_adapt test", ["{tmp}/nowhere"], 2, "not a training run"),
    "test: bad override": ("-m video_adapt test", ["{inputs}/run", "data.batch_size=abc"], 2, "'data.batch_size'"),
    "test: missing adapters": ("-m video_adapt test", ["{inputs}/no_adapters"], 2, "adapters: no such file"),
    "test: not a store": ("-m video_adapt test", ["{inputs}/run"], 2, "not a frame store"),
    "infer: wrong video path": ("-m video_adapt infer", ["{tmp}/nowhere.mp4", "--checkpoint", "{inputs}/run"], 1,
                                "nowhere.mp4: no such file"),
    "infer: missing checkpoint": ("-m video_adapt infer", ["{inputs}/notes.avi", "--checkpoint", "{tmp}/nowhere"], 2,
                                  "nowhere"),
    "infer: not a video": ("-m video_adapt infer", ["{inputs}/notes.avi", "--checkpoint", "{inputs}/run"], 1,
                           "notes.avi: not a readable video"),
    "tsne: missing adapters": ("-m video_adapt tsne", ["{inputs}/no_adapters"], 2, "adapters: no such file"),
    "tsne: not a store": ("-m video_adapt tsne", ["{inputs}/run"], 2, "not a frame store"),
    "compare: missing grid": ("-m video_adapt compare", ["--grid", "{tmp}/nowhere.yaml"], 2, "nowhere.yaml"),
    "compare: bad override": ("-m video_adapt compare", ["--grid", "{inputs}/grid.yaml", "--out", "{tmp}/cmp",
                                                   "data.batch_size=abc"], 2, "'data.batch_size'"),
    "compare: nothing to collect": ("-m video_adapt compare", ["--collect", "{tmp}/nowhere"], 2, "no finished runs"),
    "ablate: bad override": ("-m video_adapt ablate", ["data.batch_size=abc"], 2, "'data.batch_size'"),
    "pretrain: wrong store path": ("-m video_adapt pretrain", ["store={tmp}/nowhere", "out_dir={tmp}/pre"], 2,
                                   "not a frame store"),
    "pretrain: bad override": ("-m video_adapt pretrain", ["batch_size=abc"], 2, "'batch_size' expects int"),
    "prep ssv2: wrong path": ("-m data_prep.ssv2", ["--videos", "{tmp}/nowhere", "--labels", "{tmp}/nowhere",
                                                    "--out", "{tmp}/o"], 2, "nowhere: no such directory"),
    "prep ssv2: missing labels": ("-m data_prep.ssv2", ["--videos", "{inputs}", "--labels", "{inputs}",
                                                        "--out", "{tmp}/o"], 2, "labels.json: no such file"),
    "prep hmdb51: wrong path": ("-m data_prep.hmdb51", ["--videos", "{tmp}/nowhere", "--splits", "{tmp}/nowhere",
                                                        "--split", "1", "--out", "{tmp}/o"], 2, "nowhere"),
    "prep folder: wrong path": ("-m data_prep.folder", ["--videos", "{tmp}/nowhere", "--out", "{tmp}/o"], 2,
                                "nowhere: no such directory"),
    "video-adapt train: bad override": ("-m video_adapt train", ["data.batch_size=abc"], 2, "'data.batch_size'"),
    "video-adapt prep folder: wrong path": ("-m video_adapt prep folder", ["--videos", "{tmp}/nowhere", "--out",
                                                                          "{tmp}/o"], 2, "no such directory"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_and_no_traceback(case, inputs, synthetic_store, tmp_path):
    script, args, code, expected = CASES[case]
    args = [a.format(tmp=tmp_path, inputs=inputs, store=synthetic_store) for a in args]
    cmd = [sys.executable, *script.split(), *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-2000:]
    assert out.returncode == code, (out.returncode, out.stderr[-500:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], out.stderr


def test_command_wrapper_turns_user_errors_into_exit_code_2(capsys):
    @command
    def fails(argv):
        raise ConfigError(f"config key 'data.root' is empty ({argv})")

    @command
    def missing(argv):
        open("/nonexistent/dir/file.yaml")

    @command
    def bug(argv):
        raise KeyError("a bug keeps its traceback")

    assert fails(["x"]) == 2 and capsys.readouterr().err == "error: config key 'data.root' is empty (['x'])\n"
    assert missing(None) == 2 and capsys.readouterr().err.startswith("error: /nonexistent/dir/file.yaml: ")
    with pytest.raises(KeyError):
        bug(None)
    assert command(lambda argv: None)(None) == 0


def test_one_line_keeps_the_original_message_of_a_worker_error():
    """DataLoader re-raises a worker's exception with the worker's traceback inside the message."""
    wrapped = CheckpointError("Caught CheckpointError in DataLoader worker process 0.\nOriginal Traceback (most "
                              "recent call last):\n  File \"x.py\", line 1, in f\nvideo_adapt.errors.CheckpointError: "
                              "/data/a.pth: not readable")
    assert one_line(wrapped) == "/data/a.pth: not readable"
    assert one_line(VideoAdaptError("first\nsecond")) == "first; second"


def test_every_project_error_shares_the_base_class():
    from video_adapt.data.decode import VideoDecodeError
    from video_adapt.data.prepare import PrepError
    from video_adapt.data.store import StoreError
    from video_adapt.engine import TrainingError
    for error in (ConfigError, CheckpointError, TrainingError, StoreError, PrepError, VideoDecodeError):
        assert issubclass(error, VideoAdaptError)


@pytest.mark.slow
def test_video_adapt_command_lists_and_dispatches():
    listing = subprocess.run([sys.executable, "-m", "video_adapt"], cwd=ROOT, capture_output=True, text=True)
    assert listing.returncode == 2 and "train" in listing.stdout and "prep" in listing.stdout
    helped = subprocess.run([sys.executable, "-m", "video_adapt", "prep", "check", "--help"], cwd=ROOT,
                            capture_output=True, text=True)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: video-adapt prep check")
    unknown = subprocess.run([sys.executable, "-m", "video_adapt", "trian"], cwd=ROOT, capture_output=True, text=True)
    assert unknown.returncode == 2 and unknown.stderr.strip() == ("error: unknown command 'trian'; one of: train, "
                                                                  "test, infer, features, export, compare, ablate, tsne, "
                                                                  "pretrain, demo, transfer, params, configs, app, prep")


HELP_PROBE = """
import sys
from video_adapt.cli import main
try:
    main(sys.argv[1:])
except SystemExit as done:
    assert done.code in (0, None), done.code
print(sorted(m for m in ("torch", "cv2", "gradio", "transformers", "timm") if m in sys.modules))
"""


def test_every_help_answers_without_importing_torch():
    """`video-adapt <command> --help` parses arguments before it loads the library, for every command."""
    from video_adapt.cli import COMMANDS, PREP
    commands = [[name] for name in COMMANDS if name != "prep"] + [["prep", name] for name in PREP] + [[]]
    for argv in commands:
        out = subprocess.run([sys.executable, "-c", HELP_PROBE, *argv, "--help"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, (argv, out.stderr[-500:])
        assert out.stdout.strip().splitlines()[-1] == "[]", (argv, out.stdout.splitlines()[-1])


def test_shipped_configs_are_listed_printed_and_named_by_commands(capsys):
    from video_adapt.cli.configs import main
    assert main([]) == 0
    names = capsys.readouterr().out.split()
    assert {"ssv2/adaptformer_8f", "demo/base", "demo/grid", "methods/lora", "pretrain/demo"} <= set(names)
    assert main(["ssv2/adaptformer_8f"]) == 0
    resolved = capsys.readouterr().out
    assert "num_frames: 8" in resolved and "_base_:" not in resolved
    assert main(["ssv2/adaptformer_8f", "--raw"]) == 0 and "_base_:" in capsys.readouterr().out
    assert main(["nowhere"]) == 2 and "no shipped config" in capsys.readouterr().err
