"""Several tasks from one frozen backbone: `MultiTaskPredictor` classifies video files for every task at once.

    from video_adapt.serving import MultiTaskPredictor
    predictor = MultiTaskPredictor.load({"actions": "runs/a/adapters", "scenes": "runs/b"}, backbone="videomae_b.pth")
    for result in predictor.predict(["clip.mp4"]):
        print(result.path, {name: p.top[0] for name, p in result.tasks.items()})

The backbone file is read once and its tensors are shared by every task (video_adapt.models.multitask); linear
probing tasks cost one backbone forward per clip between them, and adapter tasks run as one mixed batch. Every task
must have been trained on that backbone (the adapter config's fingerprint) and read the same test views (frames,
size, sampling, clips, crops); otherwise loading stops with one line naming the task. Decoding, views and the
per-task scores are `Predictor`'s (video_adapt/inference.py), so each task's result equals its single-task
`Predictor` up to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from video_adapt.checkpoint import backbone_fingerprint, load_adapters, load_pretrained
from video_adapt.data.decode import VideoDecodeError, open_video
from video_adapt.data.protocol import DataProtocol
from video_adapt.data.transforms import normalize_clips
from video_adapt.errors import CheckpointError, ConfigError
from video_adapt.inference import (Prediction, Predictor, WindowPrediction, locate_model, score_files,
                                  sliding_windows)
from video_adapt.models.factory import TUNING_KEYS, model_from_build_args
from video_adapt.models.methods import method_spec
from video_adapt.models.tuning import tuned_state_dict
from video_adapt.models.multitask import MultiTaskModel, backbone_differences, materialize, share_backbone


@dataclass
class MultiPrediction:
    """One file's result under every task: `tasks[name]` is that task's `Prediction` (top-k, windows)."""

    path: str
    tasks: dict[str, Prediction] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error,
                "tasks": {name: {k: v for k, v in p.as_dict().items() if k not in ("path", "error")}
                          for name, p in self.tasks.items()}}


def parse_tasks(items: Sequence[str]) -> tuple[dict[str, str] | None, list[str]]:
    """`--adapters` values as ({task: directory} or None, the values after them). One plain directory is a single
    task (None), as before; TASK=DIR values are tasks. Values after the directory or the tasks are the command's
    video inputs, which argparse hands to --adapters when they follow it (`--adapters DIR clip.mp4`)."""
    if not items:
        return None, []
    if "=" not in items[0] or Path(items[0]).exists():  # a directory whose path holds '=' is still a directory
        return None, list(items[1:])
    count = next((i for i, item in enumerate(items) if "=" not in item), len(items))
    rest = list(items[count:])
    late = next((item for item in rest if "=" in item), None)
    if late is not None:
        raise ConfigError(f"--adapters {late}: give the tasks together, before the video inputs")
    tasks: dict[str, str] = {}
    for item in items[:count]:
        name, _, directory = item.partition("=")
        if not name or not directory:
            raise ConfigError(f"--adapters {item}: expected TASK=DIR")
        if name in tasks:
            raise ConfigError(f"--adapters: task name {name!r} given twice")
        tasks[name] = directory
    return tasks, rest


def load_served(tasks: dict[str, str] | None, *, checkpoint: str | None, backbone: str | None, adapters: str | None,
                device: str, crops: int | None, runtime: str, precision: str, force: bool = False,
                threshold: float = 0.5) -> "Predictor | MultiTaskPredictor":
    """What the commands (infer, app) serve: one model (`Predictor.load`), or several tasks on one backbone
    (`--adapters TASK=DIR ...`, one line for what only a single model does); multi-label tasks list the classes at or
    above `threshold`."""
    if not tasks:
        predictor = Predictor.load(checkpoint, backbone, adapters, device, crops, force, runtime=runtime,
                                   precision=precision)
        predictor.threshold = threshold
        return predictor
    if checkpoint:
        raise ConfigError(f"--checkpoint {checkpoint} with several --adapters: name the run as one of them "
                          "(TASK=RUN_DIR)")
    if runtime != "torch" or precision != "fp32":
        raise ConfigError(f"--runtime {runtime} --precision {precision}: several tasks run on the torch runtime in "
                          "fp32 (an export holds one task)")
    served = MultiTaskPredictor.load(tasks, backbone, device, crops, force)
    served.set_threshold(threshold)
    return served


def _view_differences(a: DataProtocol, b: DataProtocol) -> list[str]:
    va, vb = a.eval_view(), b.eval_view()
    return [f"{f.name} {getattr(va, f.name)} vs {getattr(vb, f.name)}" for f in fields(va)
            if getattr(va, f.name) != getattr(vb, f.name)]


class MultiTaskPredictor:
    """Task name -> `Predictor` (class names, protocol, its own model for single-task use), plus the shared
    `MultiTaskModel` that runs them together. One task without a shared model is a plain `Predictor` behind the same
    interface (`single`), so streaming and the web page serve one task or several alike."""

    def __init__(self, tasks: dict[str, Predictor], model: MultiTaskModel | None = None):
        if model is None and len(tasks) != 1:
            raise ValueError("several tasks need the MultiTaskModel that shares their backbone")
        self.tasks = tasks
        self.model = model
        first = next(iter(tasks.values()))
        self.device, self.amp, self.view, self.protocol = first.device, first.amp, first.view, first.protocol
        self.runtime = first.runtime

    @classmethod
    def single(cls, predictor: Predictor, name: str = "") -> "MultiTaskPredictor":
        return cls({name: predictor})

    @property
    def names(self) -> list[str]:
        return list(self.tasks)

    def set_threshold(self, threshold: float) -> None:
        """Every multi-label task lists the classes at or above `threshold` (single-label tasks ignore it)."""
        for task in self.tasks.values():
            task.threshold = threshold

    @classmethod
    def load(cls, task_dirs: dict[str, str], backbone: str | None = None, device: str = "auto",
             crops: int | None = None, force: bool = False) -> "MultiTaskPredictor":
        """Tasks from adapter or training run directories, on one backbone (`backbone`, else the first run's)."""
        from video_adapt.distributed import resolve_device
        if not task_dirs:
            raise ConfigError("no tasks given")
        located = {name: locate_model(d, backbone, None) for name, d in task_dirs.items()}
        first_name = next(iter(located))
        protocols = {}
        for name, (adapters, run_backbone, info) in located.items():
            try:
                protocols[name] = DataProtocol.from_record(info.get("data")).with_crops(crops)
            except CheckpointError as err:
                raise CheckpointError(f"task {name}={adapters}: {err}") from None
            spec = method_spec(info.get("method", "full"))
            if spec.saves_backbone:
                raise CheckpointError(f"task {name}={adapters}: {spec.title} carries its own backbone, so it cannot "
                                      "share one; serve it alone (video-adapt infer --checkpoint DIR)")
            different = _view_differences(protocols[first_name], protocols[name])
            if different:
                raise CheckpointError(f"task {name}={adapters}: its test views differ from task {first_name}'s "
                                      f"({', '.join(different)}); tasks served together read the same clips")
            backbone = backbone or run_backbone
        if not backbone:
            raise CheckpointError(f"task {first_name}={located[first_name][0]}: adapters need their backbone; pass "
                                  "--backbone FILE")
        build = located[first_name][2]["build_args"]
        shared = model_from_build_args({**{k: v for k, v in build.items() if k not in TUNING_KEYS},
                                        "tuning": "linear", "num_classes": 0})
        load_pretrained(shared, backbone)
        models, predictors, fingerprints = {}, {}, {}
        for name, (adapters, _, info) in located.items():
            model = model_from_build_args(info["build_args"], backbone_device="meta")
            different = backbone_differences(shared, model)
            if different:
                raise CheckpointError(f"task {name}={adapters}: another backbone architecture than task "
                                      f"{first_name}'s ({', '.join(different)})")
            share_backbone(model, shared)
            unloaded = set(materialize(model)) - set(tuned_state_dict(model))
            if unloaded:  # load_adapters fills every tuned tensor; anything else would stay uninitialised memory
                raise ValueError(f"task {name}: {sorted(unloaded)[0]} is neither shared nor in the adapter file")
            method = model.tuning.method
            if method not in fingerprints:  # tasks of one method share the very tensors it hashes: hash them once
                fingerprints[method] = backbone_fingerprint(model)
            expected = info.get("backbone_fingerprint")
            if expected and expected != fingerprints[method] and not force:
                raise CheckpointError(f"task {name}={adapters}: adapters were trained on another backbone than "
                                      f"{backbone} (fingerprint {expected} vs {fingerprints[method]}); every task "
                                      "must share it (--force loads anyway)")
            try:
                load_adapters(model, adapters, force=True)  # the fingerprint is checked above
            except CheckpointError as err:
                text = str(err)
                raise CheckpointError(f"task {name}=" + (text if text.startswith(adapters) else f"{adapters}: {text}")) \
                    from None
            models[name] = model
        multi = MultiTaskModel(shared, models).to(resolve_device(device)).eval()
        for name, (adapters, _, info) in located.items():
            model = models[name]
            predictors[name] = Predictor(model, info["class_names"] or [str(i) for i in range(model.num_classes)],
                                         protocols[name], device)
            predictors[name].info = info
        return cls(predictors, multi)

    @torch.inference_mode()
    def _probs(self, views: torch.Tensor, counts: list[int]) -> list[dict[str, np.ndarray]]:
        """Per video: {task: class probabilities of its views, combined as that task's protocol does}."""
        if self.model is None:
            name, predictor = next(iter(self.tasks.items()))
            return [{name: p} for p in predictor._probs(views, counts)]
        from video_adapt.engine.precision import autocast_context
        x = normalize_clips(views.to(self.device))
        with autocast_context(self.device, self.amp):
            logits = self.model.every_task(x)
        per_task = {name: self.tasks[name]._combine(logits[name].float(), counts) for name in self.names}
        return [{name: per_task[name][i] for name in self.names} for i in range(len(counts))]

    def _views_of(self, reader, start: int = 0, end: int | None = None) -> torch.Tensor:
        return next(iter(self.tasks.values()))._views_of(reader, start, end)

    def _result(self, path: str, probs: dict[str, np.ndarray], topk: int) -> MultiPrediction:
        return MultiPrediction(path, {name: self.tasks[name].prediction(path, p, topk) for name, p in
                                      probs.items()})

    def predict(self, paths: Iterable[str], topk: int = 5, batch_videos: int = 8) -> list[MultiPrediction]:
        """Every task's top-k for each file; an unreadable file gets its one-line error, the others still run."""
        return [self._result(path, scores, topk) if error is None else MultiPrediction(path, error=error)
                for path, scores, error in score_files(paths, self._views_of, self._probs, batch_videos)]

    def predict_views(self, path: str, topk: int = 5) -> tuple[MultiPrediction, torch.Tensor | None]:
        """One file's result and the uint8 views (V, 3, T, S, S) every task saw."""
        try:
            views = self._views_of(open_video(path))
        except VideoDecodeError as err:
            return MultiPrediction(str(path), error=str(err)), None
        return self._result(str(path), self._probs(views, [len(views)])[0], topk), views

    def timeline(self, path: str, window_s: float | str, stride_s: float | str, topk: int = 5) -> MultiPrediction:
        """Every task's top-1 per window, plus its whole-video top-k (as `Predictor.timeline`, for each task)."""
        result = self.predict([path], topk)[0]
        if result.error:
            return result
        for pred in result.tasks.values():
            pred.windows = []
        for start, end, probs in sliding_windows(open_video(path), window_s, stride_s, self._views_of, self._probs):
            for name, p in probs.items():
                result.tasks[name].windows.append(WindowPrediction(start, end, *self.tasks[name]._top(p, 1)[0]))
        return result
