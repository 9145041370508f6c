"""The project's own errors: each one means "this input cannot be used", with a one-line message that names the
file or config key and the problem. Commands catch `VideoAdaptError` (video_adapt.console.command) and print the
message instead of a traceback; anything else is a bug and keeps its traceback.

The data layer's errors derive from the same base: `StoreError` (video_adapt.data.store), `PrepError`
(video_adapt.data.prepare), `VideoDecodeError` (video_adapt.data.decode).
"""
from __future__ import annotations


class VideoAdaptError(Exception):
    """Base of every error a user can fix; the message is one line naming the file or key."""


class ConfigError(VideoAdaptError):
    """A bad configuration; the message names the key or file."""


class CheckpointError(VideoAdaptError):
    """A checkpoint that cannot be used as asked; the message is one line naming the file."""


class TrainingError(VideoAdaptError):
    """Training cannot go on (non-finite loss with nonfinite=stop, NaN weights, bad resume)."""


class ExportError(VideoAdaptError):
    """A model that cannot be exported as asked, an export that failed its self-check, or a missing optional package
    (the message names the package and the extra that installs it)."""
