"""video_adapt: parameter-efficient fine-tuning of VideoMAE video transformers."""

__version__ = "0.1.0"
