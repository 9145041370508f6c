"""int8 dynamic quantization of an exported ONNX model (onnxruntime): weights of every MatMul and Gemm with a constant
weight stored as int8 per output channel, activations quantized on the fly per call. Attention's activation x
activation products and the tubelet convolution stay fp32. Its error is the point, so it is measured, not bounded:
`benchmark_accuracy` tests fp32 and int8 side by side on a run's test split.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Callable

import torch

from video_adapt.export.optional import import_optional


def quantize_int8(onnx_path: Path, out_path: Path) -> list[Path]:
    """`out_path`: `onnx_path` with int8 weights (dynamic quantization, per channel); returns the files written."""
    quantization = import_optional("onnxruntime.quantization")
    quiet = logging.getLogger("root")  # onnxruntime's quantizer warns through the root logger about every node
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantization.quantize_dynamic(str(onnx_path), str(out_path), op_types_to_quantize=["MatMul", "Gemm"],
                                          per_channel=True, weight_type=quantization.QuantType.QInt8,
                                          extra_options={"MatMulConstBOnly": True})
    finally:
        quiet.setLevel(level)
    return [out_path]


def benchmark_accuracy(run_dir: str | Path, models: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                       split: str | None = None, progress: bool = True) -> dict[str, dict]:
    """Top-1 / top-5 (mAP for a multi-label task) of each named model (eager module or export session) on the run's
    test split, with the run's test views and view averaging: the numbers `video-adapt test` reports for the eager
    model."""
    from video_adapt.engine.evaluation import multi_view_test
    from video_adapt.engine.runs import run_config
    cfg = run_config(run_dir)
    split = split or cfg.data.test_split or cfg.data.val_split
    out: dict[str, dict] = {}
    for name, model in models.items():
        result, _ = multi_view_test(model, cfg, split, torch.device("cpu"), None, batch_size=None, workers=0,
                                    progress=progress)
        scores = {"mAP": result.mean_ap} if result.multilabel else {"top1": result.top1, "top5": result.top5}
        out[name] = {**scores, "videos": result.num_videos, "split": split}
    return out

