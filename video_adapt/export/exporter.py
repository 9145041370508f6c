"""Write a trained model in the deployment formats, each checked against eager PyTorch before it is published.

Files are staged in a hidden folder inside the output directory, checked there, then moved into place;
export_config.json is written last. A failed check publishes nothing; an export of the same weights into the same
directory adds its formats to what is there, an export of other weights replaces it.
"""
from __future__ import annotations

import copy
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from video_adapt.errors import ExportError
from video_adapt.export import graphs, hf
from video_adapt.export.check import DEFAULT_TOLERANCE, TRACE_BATCH, CheckResult, compare_logits, fixed_clips
from video_adapt.export.manifest import EXPORT_CONFIG, FORMAT_TAG, is_export_dir, read_manifest, write_manifest
from video_adapt.export.optional import require

FORMATS = ("onnx", "openvino", "torch-export", "hf")
FILE_NAMES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx", "openvino": "model.xml",
              "torch-export": "model.pt2", "hf": "config.json"}
PACKAGES = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "openvino": ("onnx", "onnxscript", "openvino"),
            "torch-export": (), "hf": ("transformers",)}


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, list[Path]] = field(default_factory=dict)
    checks: dict[str, CheckResult] = field(default_factory=dict)
    accuracy: dict[str, dict] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """What the command prints: each format's self-check and its files, then any accuracy."""
        out = []
        for name, files in self.files.items():
            check = self.checks.get(name)
            out.append(check.line(name) if check else name)
            out += [f"  {f}" for f in files]
        for name, acc in self.accuracy.items():
            scores = f"mAP {acc['mAP']:.2f}" if "mAP" in acc else f"top-1 {acc['top1']:.2f}, top-5 {acc['top5']:.2f}"
            out.append(f"{name}: {scores} on {acc['videos']} videos of split {acc['split']}")
        return out


def check_request(formats: list[str], int8: bool, method: str | None = None) -> None:
    """Everything that can be refused before any slow work: formats, packages and (given the method) the Hugging
    Face refusal."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format {unknown[0]!r}; one of {', '.join(FORMATS)}")
    if not formats:
        raise ExportError(f"no export format given; one or more of {', '.join(FORMATS)}")
    if int8 and "onnx" not in formats:
        raise ExportError("--int8 quantizes the ONNX file; add --format onnx")
    require(*dict.fromkeys(p for f in formats for p in PACKAGES[f]))
    if method and "hf" in formats and hf.refusal(method):
        raise ExportError(hf.refusal(method))


def weights_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def export_model(model: nn.Module, class_names: list[str], data: dict[str, Any], formats: list[str],
                 out_dir: str | Path, *, tolerance: float = DEFAULT_TOLERANCE, int8: bool = False,
                 source: dict[str, Any] | None = None) -> ExportResult:
    """Write `model` (eval mode, any method) in `formats` to `out_dir`, each self-checked within `tolerance`.

    `data` is the run's data section (test views: num_frames, img_size, test_sampling, test_clips ...), recorded so
    that inference from the directory needs nothing else."""
    method = getattr(getattr(model, "tuning", None), "method", "full")
    formats = list(dict.fromkeys(formats))
    check_request(formats, int8, method)
    model = copy.deepcopy(model).cpu().eval()
    from video_adapt.models.tuning import merge_tuning
    merge_tuning(model)  # LoRA: plain Linear layers, a smaller graph with the fused attention path
    frames = int(data.get("num_frames") or model.cfg.num_frames)
    size = int(data.get("img_size") or model.cfg.img_size)
    shape = (model.cfg.in_chans, frames, size, size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    result = ExportResult(out)
    try:
        staged = _write_and_check(model, class_names, data, formats, shape, staging, tolerance, int8, result)
        sha = weights_sha256(model)
        manifest = _merged_manifest(out, sha)
        for name, files in staged.items():
            result.files[name] = [_publish(f, out) for f in files]
            manifest["files"][name] = FILE_NAMES[name]
            manifest["checks"][name] = result.checks[name].as_dict()
        manifest.update(method=method, class_names=list(class_names), data=dict(data), weights_sha256=sha,
                        input={"name": graphs.INPUT_NAME, "shape": ["batch", *shape], "dtype": "float32",
                               "pixels": "ImageNet-normalised: (x / 255 - mean) / std"},
                        output={"name": graphs.OUTPUT_NAME, "shape": ["batch", len(class_names)]},
                        onnx_opset=graphs.ONNX_OPSET, source=source or {}, versions=_versions(formats))
        write_manifest(out, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _write_and_check(model: nn.Module, class_names: list[str], data: dict[str, Any], formats: list[str],
                     shape: tuple[int, int, int, int], staging: Path, tolerance: float, int8: bool,
                     result: ExportResult) -> dict[str, list[Path]]:
    from video_adapt.export.runtime import OnnxModel, OpenVINOModel, TorchExportModel
    example = fixed_clips(TRACE_BATCH, shape)
    staged: dict[str, list[Path]] = {}
    eager: dict[tuple, torch.Tensor] = {}  # every format is checked on the same fixed clips: eager runs them once

    def reference(x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), float(x.sum()))
        if key not in eager:
            with torch.no_grad():
                eager[key] = model(x)
        return eager[key]

    def check(name: str, candidate, tol: float | None = tolerance) -> None:
        result.checks[name] = compare_logits(reference, candidate, shape, name, tol)

    program = graphs.trace(model, example) if {"torch-export", "onnx", "openvino"} & set(formats) else None
    if "torch-export" in formats:
        staged["torch-export"] = graphs.write_torch_export(program, staging / FILE_NAMES["torch-export"])
        check("torch-export", TorchExportModel(staged["torch-export"][0], "fp32", {}))
    if "onnx" in formats or "openvino" in formats:
        onnx_files = graphs.write_onnx(program, staging / FILE_NAMES["onnx"], graphs.model_bytes(model))
        if "onnx" in formats:
            staged["onnx"] = onnx_files
            check("onnx", OnnxModel(onnx_files[0], "fp32", {}))
        if "openvino" in formats:
            staged["openvino"] = graphs.write_openvino(onnx_files[0], staging / FILE_NAMES["openvino"])
            check("openvino", OpenVINOModel(staged["openvino"][0], "fp32", {}))
        if int8:
            from video_adapt.export.quantize import quantize_int8
            staged["onnx-int8"] = quantize_int8(onnx_files[0], staging / FILE_NAMES["onnx-int8"])
            check("onnx-int8", OnnxModel(staged["onnx-int8"][0], "int8", {}), None)  # measured, not bounded
    if "hf" in formats:
        folder = staging / "hf"
        staged["hf"] = hf.write_hf(model, class_names, data, shape[1], folder)
        check("hf", hf.hf_logits(hf.load_hf(folder)))
    return staged


def _publish(file: Path, out: Path) -> Path:
    target = out / file.name
    os.replace(file, target)
    return target


def _merged_manifest(out: Path, sha: str) -> dict[str, Any]:
    """The directory's manifest to extend: its own when it holds these weights; otherwise a fresh one, after the old
    export's files are removed (a directory describes one model)."""
    if is_export_dir(out):
        try:
            old = read_manifest(out)
        except ExportError:
            old = None
        if old and old.get("weights_sha256") == sha:
            return {**old, "files": dict(old["files"]), "checks": dict(old.get("checks") or {})}
        for name in (old or {}).get("files", {}):
            for file in _files_of(out, name):
                file.unlink(missing_ok=True)
        (out / EXPORT_CONFIG).unlink()
    return {"format": FORMAT_TAG, "files": {}, "checks": {}}


def _files_of(out: Path, name: str) -> list[Path]:
    first = out / FILE_NAMES[name]
    if name == "openvino":
        return [first, first.with_suffix(".bin")]
    if name == "onnx":
        return [first, first.with_name(first.name + ".data")]
    if name == "hf":
        return [out / f for f in hf.HF_FILES]
    return [first]


def _versions(formats: list[str]) -> dict[str, str]:
    """The packages that wrote the files (a runtime older than the writer may not read them)."""
    import importlib.metadata as metadata
    names = ["torch", *dict.fromkeys(p for f in formats for p in PACKAGES[f])]
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def export_run(checkpoint: str | None, formats: list[str], out_dir: str | Path, *, backbone: str | None = None,
               adapters: str | None = None, force: bool = False, tolerance: float = DEFAULT_TOLERANCE,
               int8: bool = False, evaluate: bool = False) -> ExportResult:
    """`export_model` for a trained run (or adapter directory), loaded exactly as `video-adapt infer` loads it; with
    `evaluate`, the eager model and each ONNX file are also tested on the run's test split."""
    from video_adapt.inference import Predictor
    given = checkpoint or adapters
    if checkpoint and (Path(checkpoint) / "config.yaml").exists() and not (Path(checkpoint) / "adapters").is_dir():
        raise ExportError(f"{checkpoint}: a training run without trained weights (no adapters/ directory: training "
                          "did not finish); train or resume it first")
    if evaluate and not (checkpoint and (Path(checkpoint) / "config.yaml").exists()):
        raise ExportError("--evaluate tests on the run's own test split; give a training run directory")
    check_request(list(formats), int8)
    predictor = Predictor.load(checkpoint, backbone, adapters, device="cpu", force=force)
    info = predictor.info
    check_request(list(formats), int8, info.get("method", "full"))
    source = {"checkpoint": str(given), "method": info.get("method"), "build_args": info.get("build_args")}
    result = export_model(predictor.model, predictor.class_names, info.get("data") or {}, list(formats), out_dir,
                          tolerance=tolerance, int8=int8, source=source)
    if evaluate:
        result.accuracy = evaluate_export(checkpoint, predictor.model, out_dir)
        manifest = read_manifest(out_dir)
        manifest["accuracy"] = result.accuracy
        write_manifest(out_dir, manifest)
    return result


def evaluate_export(run_dir: str | Path, eager: nn.Module, export_dir: str | Path) -> dict[str, dict]:
    """Top-1 of eager PyTorch and of every ONNX / OpenVINO file of the export (OpenVINO in fp32 and bf16) on the
    run's test split."""
    from video_adapt.export.quantize import benchmark_accuracy
    from video_adapt.export.runtime import load_runtime
    files = read_manifest(export_dir)["files"]
    models: dict[str, Any] = {"torch eager fp32": eager}
    for entry, runtime, precision in (("onnx", "onnx", "fp32"), ("onnx-int8", "onnx", "int8"),
                                      ("openvino", "openvino", "fp32"), ("openvino", "openvino", "bf16")):
        if entry in files:
            models[f"{runtime} {precision}"] = load_runtime(export_dir, runtime, precision)
    return benchmark_accuracy(run_dir, models)
