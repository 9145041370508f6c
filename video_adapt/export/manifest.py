"""export_config.json: what an export directory holds and what inference needs beside the model file (class names,
the test-view protocol of the run's data section, the method, the input shape), so that
`video-adapt infer --runtime onnx --checkpoint EXPORT_DIR` needs nothing else. Written last and atomically: a
directory whose manifest names a file holds that file, complete.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from video_adapt.errors import ExportError
from video_adapt.files import write_json_atomic

EXPORT_CONFIG = "export_config.json"
RUNTIMES = ("torch", "onnx", "openvino")  # what `video-adapt infer --runtime` runs an export with
FORMAT_TAG = "video_adapt export"


def is_export_dir(path: str | Path) -> bool:
    return (Path(path) / EXPORT_CONFIG).is_file()


def read_manifest(path: str | Path) -> dict[str, Any]:
    file = Path(path) / EXPORT_CONFIG
    if not file.is_file():
        raise ExportError(f"{path}: not an export directory (no {EXPORT_CONFIG}); write one with video-adapt export")
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"{file}: not valid JSON ({err.msg} at line {err.lineno})") from None
    missing = [k for k in ("format", "class_names", "data", "files") if k not in manifest]
    if manifest.get("format") != FORMAT_TAG or missing:
        raise ExportError(f"{file}: not a video_adapt export config (missing {', '.join(missing) or 'format tag'})")
    return manifest


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> Path:
    return write_json_atomic(Path(path) / EXPORT_CONFIG, {"format": FORMAT_TAG, **manifest})
