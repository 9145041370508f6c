"""Deploying a tuned model: ONNX, OpenVINO IR, torch.export (.pt2) and the Hugging Face format, each checked against
eager PyTorch when written, and the runtimes that run them behind `video_adapt.inference.Predictor`.

    from video_adapt.export import export_run, load_runtime
    export_run("runs/ssv2/adaptformer_8f", ["onnx", "openvino"], "exports/adaptformer_8f")
    logits = load_runtime("exports/adaptformer_8f", "onnx")(clips)      # clips: float (B, 3, T, H, W), normalised

- `graphs`: the ONNX / OpenVINO / torch.export writers; `hf`: the Hugging Face writer (methods that merge);
- `check`: the self-check on fixed clips; `quantize`: int8 dynamic quantization and its accuracy;
- `manifest`: export_config.json, what inference needs beside the model file; `runtime`: the sessions;
- `exporter`: all of it for a trained run (`video-adapt export`).
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"FORMATS": "exporter", "ExportResult": "exporter", "export_model": "exporter", "export_run": "exporter",
         "RUNTIMES": "manifest", "load_runtime": "runtime"}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:  # PEP 562: `video-adapt infer --help` reads RUNTIMES without loading torch
    if name not in _LAZY:
        raise AttributeError(f"module 'video_adapt.export' has no attribute {name!r}")
    return getattr(importlib.import_module(f"video_adapt.export.{_LAZY[name]}"), name)
