"""VideoMAE masked-autoencoder pretraining (tube masking, 90% by default), from synthetic clips or a tube store.

    python tools/pretrain.py --model vit_tiny_patch8_32 --frames 8 --img-size 32 --epochs 60 --out runs/pretrain
    python tools/pretrain.py --store data/ssv2 --model vit_base_patch16_224 --img-size 224 --frames 16 ...

Writes OUT/checkpoint.pth in the official VideoMAE pretrain layout (loadable by load_pretrained), OUT/train_state.pt
for --resume, and OUT/pretrain_summary.json.
"""
from __future__ import annotations

import argparse
import sys
from video_adapt.models.vit import PRESETS
from video_adapt.pretraining import PretrainConfig, pretrain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = PretrainConfig()
    parser.add_argument("--model", default=d.model, choices=sorted(PRESETS))
    parser.add_argument("--frames", type=int, default=d.num_frames)
    parser.add_argument("--img-size", type=int, default=d.img_size)
    parser.add_argument("--mask-ratio", type=float, default=d.mask_ratio)
    parser.add_argument("--decoder-dim", type=int, default=d.decoder_dim)
    parser.add_argument("--decoder-depth", type=int, default=d.decoder_depth)
    parser.add_argument("--decoder-heads", type=int, default=d.decoder_heads)
    parser.add_argument("--no-norm-pix", action="store_true",
                        help="plain pixel targets (per-patch normalisation amplifies noise on flat synthetic patches)")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr, help="base lr (x batch / 256)")
    parser.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    parser.add_argument("--store", help="a tube store to pretrain on (its train split); default: synthetic clips")
    parser.add_argument("--synthetic", type=int, default=d.synthetic_clips, help="number of synthetic clips")
    parser.add_argument("--synthetic-size", type=int, default=d.synthetic_size)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", default=d.out_dir)
    parser.add_argument("--no-resume", action="store_true", help="start again even if OUT has a state")
    args = parser.parse_args(argv)
    cfg = PretrainConfig(model=args.model, num_frames=args.frames, img_size=args.img_size, mask_ratio=args.mask_ratio,
                         decoder_dim=args.decoder_dim, decoder_depth=args.decoder_depth, decoder_heads=args.decoder_heads, norm_pix_loss=not args.no_norm_pix,
                         epochs=args.epochs, batch_size=args.batch, lr=args.lr, warmup_epochs=args.warmup_epochs,
                         store=args.store, synthetic_clips=args.synthetic, synthetic_size=args.synthetic_size,
                         num_workers=args.workers, seed=args.seed, device=args.device, out_dir=args.out)
    try:
        summary = pretrain(cfg, resume=not args.no_resume)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"final loss {summary['final_loss']:.4f} after {summary['steps']} steps, {summary['wall_time_s']:.0f} s")
    print(f"checkpoint: {summary['checkpoint']}")
    print(f"summary: {cfg.out_dir}/pretrain_summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
