"""The optional packages behind the export formats and runtimes, imported when first needed: a missing one is a
one-line error naming the extra that installs it, never an ImportError traceback."""
from __future__ import annotations

import importlib
from types import ModuleType

from video_adapt.errors import ExportError

# module -> (what needs it, the pyproject extra that installs it)
PACKAGES = {
    "onnx": ("ONNX files", "export"),
    "onnxscript": ("torch.onnx's exporter", "export"),
    "onnxruntime": ("the onnx runtime and int8 quantization", "export"),
    "openvino": ("OpenVINO files and runtime", "openvino"),
    "transformers": ("the Hugging Face format", "bench"),
}


def import_optional(module: str) -> ModuleType:
    """Import `module` (of a package in PACKAGES) or raise ExportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        need, extra = PACKAGES[package]
        raise ExportError(f"{package} is not installed ({need} need it): pip install 'video_adapt[{extra}]'") from None


def require(*modules: str) -> None:
    """Check up front that every package a job needs imports, before any slow work starts."""
    for module in modules:
        import_optional(module)
