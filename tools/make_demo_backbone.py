"""Regenerate the demo backbone video_adapt/assets/demo_backbone.safetensors (about 25 minutes on 2 CPU cores).

    python tools/make_demo_backbone.py

1. VideoMAE pretraining of vit_tiny_patch8_32 on 12,000 unlabelled synthetic clips (tube masking 75%, plain pixel
   targets: per-patch normalisation only amplifies noise on the flat synthetic patches), 30 epochs;
2. a supervised source stage: full fine-tuning on 6 of the 12 synthetic classes (sliding x4, approaching,
   receding; 500 clips each, videos disjoint from the benchmark's) from the MAE weights, 15 epochs;
3. the encoder of that model, without its head, is written to the assets folder.
Every step reuses its finished output, so an interrupted run continues. From scratch (no MAE), step 2 does
not learn at all in 15 epochs (chance level), which is why the benchmark's backbone is pretrained first.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from video_adapt.checkpoint import read_state_dict
from video_adapt.config import load_config
from video_adapt.console import command
from video_adapt.data.synthetic import SyntheticSpec, make_synthetic_store
from video_adapt.engine import train
from video_adapt.files import save_safetensors_atomic
from video_adapt.pretraining import PretrainConfig, pretrain

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "video_adapt" / "assets" / "demo_backbone.safetensors"


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/demo_backbone", help="working directory for the three steps")
    parser.add_argument("--out", default=str(ASSET))
    args = parser.parse_args(argv)
    work = Path(args.work)
    mae = PretrainConfig(model="vit_tiny_patch8_32", num_frames=8, img_size=32, mask_ratio=0.75, norm_pix_loss=False,
                         decoder_dim=64, decoder_depth=2, decoder_heads=4, epochs=30, synthetic_clips=12000,
                         batch_size=64, lr=4e-3, min_lr=4e-6, warmup_epochs=3, out_dir=str(work / "mae"))
    checkpoint = work / "mae" / "checkpoint.pth"
    if not (work / "mae" / "pretrain_summary.json").exists():
        pretrain(mae)
    source = work / "source_data"
    if not (source / "store" / "meta.json").exists():
        make_synthetic_store(source, SyntheticSpec(size=32, num_classes=6), 500, 30, seed=7)
    run = work / "source_run"
    if not (run / "summary.json").exists():
        train(load_config("demo/base", [
            f"data.root={source / 'store'}", f"model.pretrained={checkpoint}", "model.tuning=full", "train.lr=0.001",
            "model.head_bn=true",
            "train.epochs=15", "train.warmup_epochs=2", "train.eval_every=5", f"out_dir={run}", "resume=auto"]))
    state, _ = read_state_dict(run / "adapters" / "adapter_model.safetensors")
    backbone = {k: v for k, v in state.items() if not k.startswith(("head.", "head_bn."))}
    save_safetensors_atomic(backbone, args.out, {"format": "video_adapt", "source": "MAE + supervised 6-class source stage"})
    print(f"demo backbone: {args.out} ({len(backbone)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
