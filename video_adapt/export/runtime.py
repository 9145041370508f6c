"""Run an exported model: one call from normalised float clips (B, 3, T, H, W) to logits (B, classes), whichever
runtime holds the file. `video_adapt.inference.Predictor` takes such a session where it takes a torch model, so
decoding, test views, view averaging and the outputs stay the same.

    session = load_runtime("exports/adaptformer_8f", "onnx")          # or "openvino", "torch"; precision="int8"
    logits = session(clips)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from video_adapt.errors import ExportError
from video_adapt.export.graphs import INPUT_NAME
from video_adapt.export.manifest import RUNTIMES, read_manifest
from video_adapt.export.optional import import_optional
from video_adapt.export.signal_stack import keep_signal_stack

# which precisions each runtime offers, and the manifest's file entry for each
PRECISIONS = {"torch": {"fp32": "torch-export"}, "onnx": {"fp32": "onnx", "int8": "onnx-int8"},
              "openvino": {"fp32": "openvino", "bf16": "openvino"}}
WRITTEN_BY = {"torch-export": "--format torch-export", "onnx": "--format onnx", "onnx-int8": "--format onnx --int8",
              "openvino": "--format openvino"}


class ExportedModel:
    """A loaded export file behind `__call__`; `manifest` is the export directory's export_config.json."""

    runtime = ""

    def __init__(self, path: Path, precision: str, manifest: dict[str, Any], threads: int | None = None):
        self.path, self.precision, self.manifest = path, precision, manifest
        self.threads = threads or torch.get_num_threads()  # the same thread budget as the torch code beside it

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.manifest.get("data") or {})

    @property
    def description(self) -> str:
        return f"{self.runtime} {self.precision} ({self.path.name})"

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(np.ascontiguousarray(self.run(x)))

    def run(self, clips: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxModel(ExportedModel):
    runtime = "onnxruntime"

    def __init__(self, path: Path, precision: str, manifest: dict[str, Any], threads: int | None = None):
        super().__init__(path, precision, manifest, threads)
        ort = import_optional("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3  # its warnings about unused initializers are not the user's business
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, clips: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: clips})[0]


class OpenVINOModel(ExportedModel):
    runtime = "openvino"

    def __init__(self, path: Path, precision: str, manifest: dict[str, Any], threads: int | None = None):
        super().__init__(path, precision, manifest, threads)
        ov = import_optional("openvino")
        # OpenVINO picks bf16 by itself on CPUs that have it; fp32 is asked for, so its logits are eager PyTorch's
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": self.threads}
        with keep_signal_stack():  # the CPU plugin swaps in a signal stack of its own (see signal_stack.py)
            self.compiled = ov.Core().compile_model(str(path), "CPU", config)

    def run(self, clips: np.ndarray) -> np.ndarray:
        return self.compiled(clips)[0]

    def __del__(self) -> None:
        with keep_signal_stack():  # freeing the model puts back whichever stack the plugin found at compile time
            self.__dict__.pop("compiled", None)


class TorchExportModel(ExportedModel):
    runtime = "torch.export"

    def __init__(self, path: Path, precision: str, manifest: dict[str, Any], threads: int | None = None):
        super().__init__(path, precision, manifest, threads)
        self.module = torch.export.load(str(path)).module()

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(clips.to("cpu", torch.float32))


SESSIONS = {"torch": TorchExportModel, "onnx": OnnxModel, "openvino": OpenVINOModel}


def load_runtime(export_dir: str | Path, runtime: str = "onnx", precision: str = "fp32",
                 threads: int | None = None) -> ExportedModel:
    """The session for `runtime` at `precision` on an export directory written by `video-adapt export`."""
    if runtime not in RUNTIMES:
        raise ExportError(f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}")
    offered = PRECISIONS[runtime]
    if precision not in offered:
        raise ExportError(f"--precision {precision} is not offered by the {runtime} runtime; it runs "
                          f"{' or '.join(offered)}")
    manifest = read_manifest(export_dir)
    entry = offered[precision]
    name = manifest["files"].get(entry)
    if not name:
        run = manifest.get("source", {}).get("checkpoint", "RUN")
        raise ExportError(f"{export_dir}: holds no {entry} file; write it with video-adapt export {run} "
                          f"{WRITTEN_BY[entry]} --out {export_dir}")
    path = Path(export_dir) / name
    if not path.exists():
        raise ExportError(f"{path}: listed in {export_dir}/export_config.json but missing")
    return SESSIONS[runtime](path, precision, manifest, threads)
