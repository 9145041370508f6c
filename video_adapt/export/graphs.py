"""The graph formats: ONNX (torch.onnx's dynamo exporter), OpenVINO IR (converted from that ONNX graph) and a
torch.export program (.pt2). Each takes the model in eval mode and a (B, 3, T, H, W) example clip; the batch axis
stays dynamic, everything else is fixed at the example's shape (the position table is a constant of it).
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from video_adapt.export.optional import import_optional

INPUT_NAME, OUTPUT_NAME = "clips", "logits"
# opset 18: LayerNormalization is one op (17+) and the dynamo exporter's lowest well-tested opset; onnxruntime runs it
# from 1.14 and OpenVINO from 2023.0, so the file runs on runtimes a few years old
ONNX_OPSET = 18
# protobuf's 2 GiB limit on one file: larger models (ViT-H, ViT-g) keep their weights in model.onnx.data beside it
ONNX_SINGLE_FILE_BYTES = 1_800_000_000


def _batch_dim() -> torch.export.Dim:
    return torch.export.Dim("batch", min=1)


@contextlib.contextmanager
def _quiet():
    """The exporters report each stage on stdout and warn about their own internals; a command prints its own
    summary instead. Errors still raise."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def trace(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """The model as a torch.export program with a dynamic batch axis: the .pt2 file, and what ONNX is made from
    (traced once when both are written)."""
    with _quiet(), torch.inference_mode(False), torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=({0: _batch_dim()},))


def write_torch_export(program: torch.export.ExportedProgram, path: Path) -> list[Path]:
    """A torch.export program: runs in PyTorch without this package's model code (torch.export.load)."""
    torch.export.save(program, str(path))
    return [path]


def write_onnx(program: torch.export.ExportedProgram, path: Path, weight_bytes: int) -> list[Path]:
    """`path` (and `path`.data when the weights pass ONNX_SINGLE_FILE_BYTES); returns the files written."""
    onnx = import_optional("onnx")
    import_optional("onnxscript")
    external = weight_bytes > ONNX_SINGLE_FILE_BYTES
    with _quiet():
        torch.onnx.export(program, f=str(path), dynamo=True, opset_version=ONNX_OPSET, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], external_data=external, verbose=False)
    graph = onnx.load(str(path), load_external_data=False)
    _name_batch_axis(graph.graph)
    onnx.save(graph, str(path))  # external weights stay where they are: only the graph is rewritten
    data = path.with_name(path.name + ".data")
    return [path, data] if external and data.exists() else [path]


def _name_batch_axis(graph) -> None:
    """The exporter names the batch axis of a traced program after its symbol (s77); users read "batch"."""
    symbol = graph.input[0].type.tensor_type.shape.dim[0].dim_param
    if not symbol:
        return
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = "batch"


def write_openvino(onnx_path: Path, xml_path: Path) -> list[Path]:
    """OpenVINO IR (.xml graph + .bin weights) read from the ONNX file, weights kept in fp32 (OpenVINO's default
    compresses them to fp16)."""
    ov = import_optional("openvino")
    with _quiet():
        ov.save_model(ov.Core().read_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return [xml_path, xml_path.with_suffix(".bin")]
