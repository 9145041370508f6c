"""Export a trained model for deployment: ONNX, OpenVINO IR, a torch.export program, or the Hugging Face format.

    video-adapt export runs/demo/runs/adaptformer/8f/seed0 --format onnx --out exports/af8
    video-adapt export RUN --format onnx openvino torch-export --int8 --evaluate --out exports/af8
    video-adapt export runs/x/linear --format hf --out exports/linear_hf     # full, linear, BitFit, LoRA
    video-adapt infer clip.mp4 --checkpoint exports/af8 --runtime onnx      # then: same views, same output

Every format is checked before it is written: the exported model and eager PyTorch run on fixed clips (batches of 1
and 3, the batch axis is dynamic) and their logits must agree within --tolerance. --int8 adds an int8 dynamically
quantized ONNX file; --evaluate tests eager PyTorch and each ONNX / OpenVINO file (OpenVINO in fp32 and bf16) on the
run's test split.
The directory's export_config.json records what inference needs (class names, test views, input shape).
Formats need optional packages: onnx and torch-export's ONNX path `pip install 'video_adapt[export]'`, OpenVINO
`pip install 'video_adapt[openvino]'`.
"""
from __future__ import annotations

import argparse
import sys

from video_adapt.console import command

FORMATS = ("onnx", "openvino", "torch-export", "hf")  # video_adapt.export.FORMATS, named here so --help stays light


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="training run directory (or adapter directory, with --backbone)")
    parser.add_argument("--format", nargs="+", required=True, metavar="FORMAT",
                        help=f"one or more of {', '.join(FORMATS)}")
    parser.add_argument("--out", required=True, help="export directory (created; one model per directory)")
    parser.add_argument("--backbone", help="pretrained backbone the adapters were trained on")
    parser.add_argument("--int8", action="store_true", help="also write an int8 dynamically quantized ONNX file")
    parser.add_argument("--evaluate", action="store_true",
                        help="test eager PyTorch and every ONNX / OpenVINO file on the run's test split")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest max-abs logit difference to eager PyTorch a file may have (default 1e-4)")
    parser.add_argument("--force", action="store_true", help="load adapters on another backbone anyway")
    args = parser.parse_args(argv)
    from video_adapt.errors import ExportError
    unknown = [f for f in args.format if f not in FORMATS]
    if unknown:  # before torch is imported: a typo costs nothing
        raise ExportError(f"unknown export format {unknown[0]!r}; one of {', '.join(FORMATS)}")
    from video_adapt.export import export_run
    result = export_run(args.checkpoint, args.format, args.out, backbone=args.backbone, force=args.force,
                        tolerance=args.tolerance, int8=args.int8, evaluate=args.evaluate)
    print("\n".join(result.lines()))
    print(f"export: {result.out_dir} (export_config.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
