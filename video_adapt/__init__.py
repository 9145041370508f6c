"""video_adapt: parameter-efficient fine-tuning of VideoMAE video transformers.

    from video_adapt import create_model, load_pretrained
    model = create_model("vit_base_patch16_224", num_classes=174, num_frames=8, tuning="adaptformer")
    load_pretrained(model, "videomae_pretrain.pth")
"""
from video_adapt.checkpoint import (
    CheckpointError,
    load_adapters,
    load_model,
    load_pretrained,
    save_adapters,
    save_model,
)
from video_adapt.errors import ConfigError, VideoAdaptError
from video_adapt.inference import predict
from video_adapt.models.factory import create_model
from video_adapt.models.tuning import merge_lora, parameter_report

__version__ = "0.1.0"
__all__ = ["create_model", "load_pretrained", "save_adapters", "load_adapters", "parameter_report",
           "save_model", "load_model", "CheckpointError", "ConfigError", "VideoAdaptError", "predict", "merge_lora"]
