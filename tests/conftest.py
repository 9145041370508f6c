"""Shared fixtures: a tiny synthetic frame store (real mp4 files, prepared once per test run) and a 'pretrained'
backbone file."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the repository: commands run from here


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> Path:
    from data_prep import synthetic
    out = tmp_path_factory.mktemp("synthetic")
    code = synthetic.main(["--out", str(out), "--classes", "4", "--videos-per-class", "6", "--val-per-class", "3",
                           "--size", "32", "--frames", "16", "--prep"])
    assert code == 0
    return out / "store"


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """A 'pretrained' backbone file in the official fine-tune layout (vit_nano_patch8_32, seed 5)."""
    import torch
    from video_adapt import create_model
    path = tmp_path_factory.mktemp("backbone") / "backbone.pth"
    torch.manual_seed(5)
    torch.save({"module": create_model("vit_nano_patch8_32", num_classes=0).state_dict()}, path)
    return path


def tiny_overrides(store: Path, out: Path, *extra: str) -> list[str]:
    """A fast run: 2-block 32-wide ViT at 32 px, 4 frames, 2 epochs, on a random backbone (stated), the
    AdaptFormer recipe at the batch the test runs (no global batch of 1024), 2 test clips x 1 crop."""
    return [f"data.root={store}", f"out_dir={out}", "model.name=vit_nano_patch8_32", "model.pretrained=none",
            "data.img_size=32", "data.num_frames=4", "data.batch_size=8", "data.num_workers=0",
            "data.test_clips=2", "data.test_crops=1", "train.global_batch=null", "train.epochs=2",
            "train.warmup_epochs=0.5", "train.lr=0.05", "train.log_every=1", "model.bottleneck=4", *extra]
