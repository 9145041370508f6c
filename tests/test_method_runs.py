"""LoRA, BitFit and ST-Adapter through the whole tool chain: training, 2-process DDP, resume after a kill,
the multi-view test and inference from their adapter files."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, tiny_overrides
from video_adapt import create_model, load_pretrained, predict
from video_adapt.cli.test import main as multi_view_test_command
from video_adapt.config import load_config
from video_adapt.engine import load_run, loop, train
from video_adapt.inference import Predictor

METHODS = {
    "lora": ["model.tuning=lora", "model.lora_rank=2", "model.lora_targets=[qkv, fc2]"],
    "bitfit": ["model.tuning=bitfit"],
    "st_adapter": ["model.tuning=st_adapter", "model.st_position=both"],
}
TAGS = {"lora": ".lora_B.", "bitfit": "attn.q_bias", "st_adapter": "pre_mlp_adapter.conv."}


def _common(backbone: Path) -> list[str]:
    # no BatchNorm head and flips on: one process with batch 8 and two with batch 4 take the same steps
    return [f"model.pretrained={backbone}", "model.head_bn=false", "train.epochs=1", "data.flip=true"]


@pytest.fixture(scope="module")
def runs(synthetic_store, backbone, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("method_runs")
    for method, args in METHODS.items():
        train(load_config(None, tiny_overrides(synthetic_store, root / method, *args, *_common(backbone))))
    return {method: root / method for method in METHODS}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapters" / "adapter_model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_run_trains_the_method_on_its_frozen_backbone(method, runs, backbone):
    weights = _weights(runs[method])
    assert any(TAGS[method] in k for k in weights) and not any(k.endswith("qkv.weight") for k in weights)
    model, _, info = load_run(runs[method])
    reference = create_model("vit_nano_patch8_32", num_classes=0)
    load_pretrained(reference, backbone)
    attn = model.blocks[1].attn
    qkv = attn.qkv.base_layer if method == "lora" else attn.qkv
    assert torch.equal(qkv.weight, reference.blocks[1].attn.qkv.weight)  # the backbone stayed as loaded
    changed = attn.q_bias if method == "bitfit" else next(v for k, v in weights.items() if TAGS[method] in k)
    assert changed.abs().sum() > 0
    summary = json.loads((runs[method] / "summary.json").read_text())
    assert summary["tuning"] == method and summary["trainable_params"] < 0.5 * summary["total_params"]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_for_every_new_method(synthetic_store, backbone, runs, tmp_path):
    """One torchrun launch trains the three methods in turn (process start-up dominates these tiny runs)."""
    script = tmp_path / "train_each.py"
    # the process group stays up between the runs (gloo cannot rejoin a torchrun store once it has left it)
    script.write_text("import json, sys\nimport torch.distributed as dist\nfrom video_adapt.engine import loop\n"
                      "from video_adapt.config import load_config\n"
                      "loop.cleanup = lambda state: None\n"
                      "for overrides in json.loads(sys.argv[1]):\n    loop.train(load_config(None, overrides))\n"
                      "dist.destroy_process_group()\n")
    ddp = {method: tmp_path / method for method in METHODS}
    jobs = [tiny_overrides(synthetic_store, ddp[m], *args, *_common(backbone), "data.batch_size=4")
            for m, args in METHODS.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), json.dumps(jobs)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    for method in METHODS:
        a, b = _weights(runs[method]), _weights(ddp[method])
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-5), (method, key)
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (runs[method], ddp[method]))
        assert sb["world_size"] == 2 and sa["final_top1"] == sb["final_top1"], method


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_killed_run_resumes_to_exactly_the_uninterrupted_weights(method, synthetic_store, backbone, tmp_path,
                                                                 monkeypatch):
    args = [*METHODS[method], f"model.pretrained={backbone}", "train.epochs=2", "data.randaugment=rand-m7-n2",
            "train.eval_every=2"]
    straight = tmp_path / "straight"
    train(load_config(None, tiny_overrides(synthetic_store, straight, *args)))
    interrupted = tmp_path / "interrupted"
    real_epoch = loop.train_one_epoch

    def dies_in_epoch_1(run, epoch):
        if epoch == 1:  # killed after one saved epoch
            raise KeyboardInterrupt
        return real_epoch(run, epoch)

    monkeypatch.setattr(loop, "train_one_epoch", dies_in_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, tiny_overrides(synthetic_store, interrupted, *args)))
    monkeypatch.setattr(loop, "train_one_epoch", real_epoch)
    train(load_config(None, tiny_overrides(synthetic_store, interrupted, *args, "resume=auto")))
    a, b = _weights(straight), _weights(interrupted)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_multi_view_test_and_inference_from_adapter_files(runs, tmp_path):
    from videos import write
    from video_adapt.data.synthetic import SyntheticSpec, generate_clip
    video = write(tmp_path / "clip.mp4", generate_clip(0, np.random.default_rng(0), SyntheticSpec(size=32, frames=16)))
    for method, run in runs.items():
        assert multi_view_test_command([str(run), "--split", "val", "--crops", "3", "--workers", "0"]) == 0
        metrics = json.loads((run / "test_val" / "metrics.json").read_text())
        assert metrics["videos"] == 12 and metrics["views_per_video"] == 2 * 3, method
        [prediction] = predict(str(video), checkpoint=str(run), device="cpu")
        assert prediction.error is None and prediction.top[0][0] in ("sliding right", "sliding left", "sliding down",
                                                                     "sliding up")
        assert np.isfinite(prediction.top[0][1])
    # LoRA is merged for inference: plain Linear layers, the same logits as the unmerged run model
    predictor = Predictor.load(checkpoint=str(runs["lora"]), device="cpu")
    assert type(predictor.model.blocks[0].attn.qkv) is torch.nn.Linear
    unmerged, _, _ = load_run(runs["lora"])
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(predictor.model.eval()(x), unmerged.eval()(x), atol=1e-5)
