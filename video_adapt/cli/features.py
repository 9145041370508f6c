"""Window features of your video files from a frozen backbone (or a tuned model): one .npy per video of shape
(windows, dim) plus index.csv / index.json, the layout temporal action localization tools read.

    video-adapt features videos/ --backbone videomae_b.pth --out feats/ --window 32f --stride 16f
    video-adapt features videos/ --backbone videomae_b.pth --adapters runs/x/adapters --out feats/
    video-adapt features clip.mp4 --backbone videomae_b.pth --out feats/ --layer 6 --pool tokens --window 2s

--window / --stride: frames (32f) or seconds (2 or 2s), as for video-adapt infer; default one clip's span (frames x frame stride), stride =
window. From each window the model's frames are sampled by its test rule (dense, every --frame-stride frames).
A rerun into the same folder skips the videos already done and retries the failed ones; an unreadable file is named
on stderr, listed as failed in the index, and the others go on. Exit code 0 when any video has features.
"""
from __future__ import annotations

import argparse
import sys

from video_adapt.console import command, print_outputs


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="video files or folders of videos")
    parser.add_argument("--backbone", help="pretrained backbone file (official, Hugging Face or our own layout)")
    parser.add_argument("--adapters", help="a tuned method's weights on the backbone: adapter directory or run directory")
    parser.add_argument("--out", required=True, help="output folder (<video_id>.npy, index.csv, index.json)")
    parser.add_argument("--window", help="window length: frames (32f) or seconds (2, 2s); default frames x frame stride")
    parser.add_argument("--stride", help="between window starts: frames or seconds (default: --window)")
    parser.add_argument("--layer", type=int, default=-1, help="the block whose output is taken (-1 = the last)")
    parser.add_argument("--pool", choices=["fc_norm", "mean", "tokens"],
                        help="fc_norm: mean token through the feature norm (what the head sees; default at the last "
                             "block); mean: the mean token (default before it); tokens: T' x H' x W' x D per window")
    parser.add_argument("--num-frames", type=int, help="frames per clip (default: the model's)")
    parser.add_argument("--img-size", type=int, help="crop size in pixels (default: the model's)")
    parser.add_argument("--frame-stride", type=int, help="frames between sampled frames (default: the protocol's, 4)")
    parser.add_argument("--crops", type=int, default=1, help="spatial crops averaged per window (1 = centre crop)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--batch", type=int, default=16, help="windows per forward pass, across videos")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                        help="autocast: auto = bf16 on a GPU that has it, fp32 on a CPU")
    parser.add_argument("--force", action="store_true", help="load adapters on another backbone anyway")
    args = parser.parse_args(argv)
    from video_adapt.features import extract_features
    report = extract_features(args.inputs, args.out, backbone=args.backbone, adapters=args.adapters,
                              layer=args.layer, pool=args.pool, window=args.window, stride=args.stride,
                              num_frames=args.num_frames, img_size=args.img_size, frame_stride=args.frame_stride,
                              crops=args.crops, dtype=args.dtype, batch_size=args.batch, workers=args.workers,
                              device=args.device, amp=args.amp, force=args.force)
    print(report.summary())
    print_outputs(report.paths)
    return 1 if report.failures and not (report.written or report.skipped) else 0


if __name__ == "__main__":
    sys.exit(main())
