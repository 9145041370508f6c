"""A synthetic, SSv2-like action task in which temporal order decides the class.

One textured "actor" polygon moves over a static textured background among smaller distractors that drift at
random. Each class is a way the actor changes over time (slide right, grow, rotate clockwise, go and come
back ...). Trajectories are drawn so that every single frame has the same distribution in paired classes
(left vs right, grow vs shrink, cw vs ccw ...), so one frame cannot solve the task; rotations turn 1.5 times per
clip and out-and-back moves return to their start, so 2 frames alias (cw looks like ccw, out-and-back looks
still) while 4 and 8 frames resolve them: accuracy rises with the frame count, as on SSv2.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from video_adapt.data.prepare import PrepReport, VideoEntry
from video_adapt.data.store import label_text

CLASSES = (
    "sliding right", "sliding left", "sliding down", "sliding up",
    "approaching", "receding", "turning clockwise", "turning counter-clockwise",
    "going right and back", "going left and back", "appearing", "vanishing",
)


@dataclass(frozen=True)
class SyntheticSpec:
    """Knobs of the generator; the defaults are the project's embedded benchmark."""

    size: int = 64
    frames: int = 16
    num_classes: int = len(CLASSES)
    distractors: int = 1
    noise: float = 2.0  # per-frame pixel noise (std, grey levels); the background itself is static
    texture: float = 12.0  # background texture contrast
    # > 1: a multi-label task, 1..max_actions simultaneous actions per video (out of the repr, so the benchmark's
    # recorded source string stays what it was)
    max_actions: int = field(default=1, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.max_actions <= self.num_classes:
            raise ValueError(f"max_actions must be between 1 and the {self.num_classes} classes, not {self.max_actions}")

    @property
    def multilabel(self) -> bool:
        return self.max_actions > 1


def smooth_texture(rng: np.random.Generator, size: int, contrast: float) -> np.ndarray:
    coarse = rng.normal(0, 1, (max(size // 8, 2), max(size // 8, 2), 3)).astype(np.float32)
    tex = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    base = rng.uniform(70, 180, 3).astype(np.float32)
    return base + contrast * tex


def polygon(rng: np.random.Generator) -> np.ndarray:
    """An irregular, clearly asymmetric polygon around the origin, radius about 1 (rotation is visible)."""
    n = int(rng.integers(3, 6))
    angles = rng.uniform(0, 2 * math.pi) + 2 * math.pi * (np.arange(n) + rng.uniform(-0.2, 0.2, n)) / n
    radii = rng.uniform(0.6, 0.9, n)
    radii[0] = 1.25  # a pointed "nose" so orientation is never ambiguous
    return np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)


def saturated_colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour with one channel pushed to 20 or 235: an actor that stands out of the background."""
    colour = rng.uniform(0, 255, 3)
    colour[rng.integers(0, 3)] = rng.choice([20.0, 235.0])
    return colour


def draw_shape(canvas: np.ndarray, shape: np.ndarray, centre: tuple[float, float], radius: float, angle: float,
          colour: np.ndarray) -> None:
    c, s = math.cos(angle), math.sin(angle)
    pts = shape @ np.array([[c, s], [-s, c]]) * radius + np.asarray(centre)
    cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], colour.tolist(), lineType=cv2.LINE_AA, shift=4)


def _actor_track(label: int, rng: np.random.Generator, size: int, t: np.ndarray):
    """Centre x, y, radius, angle and visibility of the actor at times t in [0, 1]."""
    r0 = size * rng.uniform(0.15, 0.2)
    travel = size * rng.uniform(0.45, 0.55)
    margin = r0 * 1.3
    lo, hi = margin, size - margin
    cx, cy = rng.uniform(lo + travel / 2, hi - travel / 2, 2) if hi - lo > travel else (size / 2, size / 2)
    x = np.full_like(t, cx)
    y = np.full_like(t, cy)
    radius = np.full_like(t, r0)
    angle = np.full_like(t, rng.uniform(0, 2 * math.pi))
    visible = np.ones_like(t, dtype=bool)
    ramp = t - 0.5  # centred, so the average position is the same in paired classes
    if label in (0, 1):
        x = cx + (1 if label == 0 else -1) * travel * ramp
    elif label in (2, 3):
        y = cy + (1 if label == 2 else -1) * travel * ramp
    elif label in (4, 5):
        scale = 1.6 ** ((1 if label == 4 else -1) * 2 * ramp)
        radius = r0 * scale
    elif label in (6, 7):
        angle = angle + (1 if label == 6 else -1) * 2 * math.pi * 1.5 * t
    elif label in (8, 9):
        x = cx + (1 if label == 8 else -1) * travel * (np.sin(math.pi * t) - 0.5)
    elif label in (10, 11):
        cut = rng.uniform(0.35, 0.65)
        visible = t >= cut if label == 10 else t < cut
    return x, y, radius, angle, visible


def generate_clip(label: int, rng: np.random.Generator, spec: SyntheticSpec = SyntheticSpec()) -> np.ndarray:
    """One clip of class `label` as uint8 (T, H, W, 3) RGB, fully determined by `rng`."""
    return _render([label], rng, spec)


def generate_multilabel_clip(labels: Sequence[int], rng: np.random.Generator,
                             spec: SyntheticSpec = SyntheticSpec()) -> np.ndarray:
    """One clip in which every class of `labels` happens at once, each done by its own actor (its own shape, colour
    and track), as uint8 (T, H, W, 3) RGB, fully determined by `rng`: a multi-label video."""
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"labels must be one or more distinct classes, got {list(labels)}")
    return _render(list(labels), rng, spec)


def _render(labels: list[int], rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """The actors of `labels` over a textured background among drifting distractors. One label draws from `rng` in
    the order the benchmark's clips always did, so its videos do not change."""
    for label in labels:
        if not 0 <= label < len(CLASSES):
            raise ValueError(f"label {label} out of range 0..{len(CLASSES) - 1}")
    size, frames = spec.size, spec.frames
    t = np.linspace(0, 1, frames)
    background = smooth_texture(rng, size, spec.texture)
    actors = []
    for label in labels:
        shape = polygon(rng)
        actors.append((shape, saturated_colour(rng), _actor_track(label, rng, size, t)))
    distractors = drifting_distractors(rng, size, spec.distractors)
    video = np.empty((frames, size, size, 3), np.uint8)
    for i in range(frames):
        canvas = background.copy()
        draw_distractors(canvas, distractors, size, t[i])
        for shape, colour, (ax, ay, ar, aa, av) in actors:
            if av[i]:
                draw_shape(canvas, shape, (ax[i], ay[i]), ar[i], aa[i], colour)
        video[i] = add_noise(canvas, rng, spec.noise)
    return video


def drifting_distractors(rng: np.random.Generator, size: int, count: int) -> list[tuple]:
    """`count` small polygons that drift and spin at random, wrapping around the frame edges."""
    distractors = []
    for _ in range(count):
        start = rng.uniform(0, size, 2)
        velocity = rng.normal(0, size * 0.15, 2)
        distractors.append((polygon(rng), start, velocity, size * rng.uniform(0.05, 0.08),
                            rng.uniform(0, 2 * math.pi), rng.normal(0, 3), rng.uniform(60, 200, 3)))
    return distractors


def draw_distractors(canvas: np.ndarray, distractors: list[tuple], size: int, t: float) -> None:
    """Draw `drifting_distractors` at time t in [0, 1]."""
    for shape, start, velocity, radius, angle, spin, colour in distractors:
        centre = (start + velocity * t) % size
        draw_shape(canvas, shape, tuple(centre), radius, angle + spin * t, colour)


def add_noise(canvas: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """A float frame with per-pixel Gaussian noise (std `noise` grey levels) as uint8; the camera's sensor noise."""
    if noise > 0:
        canvas = canvas + rng.normal(0, noise, canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def write_video(path: str, frames: np.ndarray, fps: int = 12, codec: str = "libx264", bit_rate: int | None = None) -> None:
    """Encode RGB frames (T, H, W, 3) with PyAV; yuv420p needs even sizes, so odd ones are padded."""
    import av
    h, w = frames.shape[1:3]
    if codec in ("libx264", "libvpx-vp9", "libvpx") and (h % 2 or w % 2):
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1:3]
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        if bit_rate:
            stream.bit_rate = bit_rate
        stream.codec_context.thread_count = 1  # fewer sources of run-to-run variation (see the note below)
        stream.codec_context.thread_type = "NONE"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        # Known: PyAV + libx264 here still produce one of a few slightly different files for the same frames
        # (about 1 run in 3); the decoded pixels then differ by up to ~20 grey levels near edges.
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = index
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


VideoPlan = Callable[[str, int, int], Iterator[tuple[str, Path, "int | tuple[int, ...]", Callable[[], np.ndarray]]]]
"""plan(split, split_number, per_class) -> (id, path under the split's folder, label or label set, draw) per video"""


def class_folders(classes: Sequence[str], clip: Callable[[int, np.random.Generator], np.ndarray],
                  seed: int) -> VideoPlan:
    """The plan of a single-label task: `per_class` videos of each class in a folder named for it; video i of class
    `label` in split number s is `clip(label, default_rng((seed, s, label, i)))`."""
    def plan(split: str, s: int, per_class: int):
        for label, name in enumerate(classes):
            for i in range(per_class):
                vid = f"{split}_{label:02d}_{i:05d}"
                yield (vid, Path(name.replace(" ", "_")) / f"{vid}.mp4", label,
                       partial(clip, label, np.random.default_rng((seed, s, label, i))))
    return plan


def _multilabel_plan(spec: SyntheticSpec, seed: int) -> VideoPlan:
    """The plan of the generated multi-label task: one folder of videos with 1..max_actions actions each (label sets
    drawn in order from their own generator)."""
    def plan(split: str, s: int, per_class: int):
        sets = np.random.default_rng((seed, s, MULTILABEL_STREAM))
        for i in range(per_class * spec.num_classes):
            k = int(sets.integers(1, spec.max_actions + 1))
            labels = tuple(sorted(int(c) for c in sets.choice(spec.num_classes, k, replace=False)))
            vid = f"{split}_{i:05d}"
            yield (vid, Path(f"{vid}.mp4"), labels, partial(
                generate_multilabel_clip, labels, np.random.default_rng((seed, s, MULTILABEL_STREAM, i)), spec))
    return plan


MULTILABEL_STREAM = 99  # seeds the multi-label task's draws apart from the single-label clips'


def write_videos(out: Path, classes: Sequence[str], plan: VideoPlan, per_class: dict[str, int],
                 progress: bool = True) -> dict[str, list[VideoEntry]]:
    """Write (or complete) the videos of `plan` under `out/videos/<split>/` and the list files `out/<split>.csv`
    (`path label` or `path l1 l2 ...`) and `out/classes.txt`. An existing video is kept, so reruns resume."""
    lists: dict[str, list[VideoEntry]] = {}
    bar = tqdm(total=len(classes) * sum(per_class.values()), desc="generating", unit="video", disable=not progress,
               file=sys.stderr)
    for s, (split, count) in enumerate(per_class.items()):
        entries = []
        for vid, relative, label, draw in plan(split, s, count):
            path = out / "videos" / split / relative
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.mp4")  # shard jobs may race here
                write_video(str(tmp), draw())
                tmp.replace(path)
            entries.append(VideoEntry(vid, str(path), label))
            bar.update(1)
        lists[split] = entries
        lines = [f"{Path(e.path).relative_to(out / 'videos')} {label_text(e.label)}".rstrip() for e in entries]
        (out / f"{split}.csv").write_text("\n".join(lines) + "\n")
    bar.close()
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    return lists


def make_video_store(out: Path, classes: Sequence[str], plan: VideoPlan, train_per_class: int, val_per_class: int, *,
                     workers: int = 1, shard: tuple[int, int] | None = None, shard_size: int = 2000, source: str,
                     multilabel: bool = False, progress: bool = True) -> PrepReport:
    """The videos and list files of a generated task (`write_videos`) and their frame store `out/store` (or its part
    `out/store/part-I-of-N` under `shard`); both resume if interrupted. Returns the preparation's `PrepReport`."""
    from video_adapt.data.prepare import PrepOptions, SplitSpec, part_name, prepare_store
    lists = write_videos(out, classes, plan, {"train": train_per_class, "val": val_per_class}, progress)
    store = out / "store" / part_name(*shard) if shard else out / "store"
    return prepare_store(store, list(classes), [SplitSpec("train", lists["train"]), SplitSpec("val", lists["val"])],
                         PrepOptions(short_side=0, shard_size=shard_size), source=source, flip=False,
                         workers=workers, progress=progress, dataset="synthetic", shard=shard, multilabel=multilabel)


def _benchmark_plan(spec: SyntheticSpec, seed: int) -> VideoPlan:
    return (_multilabel_plan(spec, seed) if spec.multilabel
            else class_folders(CLASSES[:spec.num_classes], partial(generate_clip, spec=spec), seed))


def write_dataset(out: Path, spec: SyntheticSpec, train_per_class: int, val_per_class: int, seed: int,
                  progress: bool = True) -> dict[str, list[VideoEntry]]:
    """The embedded benchmark's videos and list files (`write_videos`). A multi-label task (`spec.max_actions` > 1)
    has the same number of videos, `videos/<split>/<id>.mp4`, listed with their label sets (`path l1 l2 ...`)."""
    return write_videos(out, CLASSES[:spec.num_classes], _benchmark_plan(spec, seed),
                        {"train": train_per_class, "val": val_per_class}, progress)


def make_synthetic_store(out: Path, spec: SyntheticSpec, train_per_class: int, val_per_class: int, seed: int = 0, *,
                         workers: int = 1, shard: tuple[int, int] | None = None, shard_size: int = 2000,
                         source: str | None = None, progress: bool = True) -> PrepReport:
    """The embedded benchmark's videos and frame store (`make_video_store`)."""
    default_source = f"synthetic {spec}" + (f" max_actions={spec.max_actions}" if spec.multilabel else "")
    return make_video_store(out, CLASSES[:spec.num_classes], _benchmark_plan(spec, seed), train_per_class,
                            val_per_class, workers=workers, shard=shard, shard_size=shard_size,
                            source=source or default_source, multilabel=spec.multilabel, progress=progress)
