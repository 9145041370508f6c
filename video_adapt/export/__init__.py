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
from video_adapt.export.exporter import FORMATS, ExportResult, export_model, export_run
from video_adapt.export.runtime import RUNTIMES, load_runtime

__all__ = ["FORMATS", "RUNTIMES", "ExportResult", "export_model", "export_run", "load_runtime"]
