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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from tqdm import tqdm

from video_adapt.data.prepare import PrepReport, VideoEntry

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
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label {label} out of range 0..{len(CLASSES) - 1}")
    size, frames = spec.size, spec.frames
    t = np.linspace(0, 1, frames)
    background = smooth_texture(rng, size, spec.texture)
    actor = polygon(rng)
    actor_colour = rng.uniform(0, 255, 3)
    actor_colour[rng.integers(0, 3)] = rng.choice([20.0, 235.0])  # saturated, stands out of the background
    ax, ay, ar, aa, av = _actor_track(label, rng, size, t)
    distractors = drifting_distractors(rng, size, spec.distractors)
    video = np.empty((frames, size, size, 3), np.uint8)
    for i in range(frames):
        canvas = background.copy()
        draw_distractors(canvas, distractors, size, t[i])
        if av[i]:
            draw_shape(canvas, actor, (ax[i], ay[i]), ar[i], aa[i], actor_colour)
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


def write_videos(out: Path, classes: list[str], clip: Callable[[int, np.random.Generator], np.ndarray],
                 per_class: dict[str, int], seed: int, progress: bool = True) -> dict[str, list[VideoEntry]]:
    """Write (or complete) `out/videos/<split>/<class>/*.mp4` and the list files `out/<split>.csv` and
    `out/classes.txt`; video i of class `label` in split number s is `clip(label, default_rng((seed, s, label, i)))`.
    An existing video is kept, so reruns resume."""
    lists: dict[str, list[VideoEntry]] = {}
    total = len(classes) * sum(per_class.values())
    bar = tqdm(total=total, desc="generating", unit="video", disable=not progress, file=sys.stderr)
    for s, (split, count) in enumerate(per_class.items()):
        entries = []
        for label, name in enumerate(classes):
            folder = out / "videos" / split / name.replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                vid = f"{split}_{label:02d}_{i:05d}"
                path = folder / f"{vid}.mp4"
                if not path.exists():
                    rng = np.random.default_rng((seed, s, label, i))
                    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.mp4")  # shard jobs may race here
                    write_video(str(tmp), clip(label, rng))
                    tmp.replace(path)
                entries.append(VideoEntry(vid, str(path), label))
                bar.update(1)
        lists[split] = entries
        lines = [f"{Path(e.path).relative_to(out / 'videos')} {e.label}" for e in entries]
        (out / f"{split}.csv").write_text("\n".join(lines) + "\n")
    bar.close()
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    return lists


def make_video_store(out: Path, classes: list[str], clip: Callable[[int, np.random.Generator], np.ndarray],
                     train_per_class: int, val_per_class: int, seed: int = 0, *, workers: int = 1,
                     shard: tuple[int, int] | None = None, shard_size: int = 2000, source: str,
                     progress: bool = True) -> PrepReport:
    """The videos and list files of a generated task (`write_videos`) and their frame store `out/store` (or its part
    `out/store/part-I-of-N` under `shard`); both resume if interrupted. Returns the preparation's `PrepReport`."""
    from video_adapt.data.prepare import PrepOptions, SplitSpec, part_name, prepare_store
    lists = write_videos(out, classes, clip, {"train": train_per_class, "val": val_per_class}, seed, progress)
    store = out / "store" / part_name(*shard) if shard else out / "store"
    return prepare_store(store, classes, [SplitSpec("train", lists["train"]), SplitSpec("val", lists["val"])],
                         PrepOptions(short_side=0, shard_size=shard_size), source=source, flip=False,
                         workers=workers, progress=progress, dataset="synthetic", shard=shard)


def write_dataset(out: Path, spec: SyntheticSpec, train_per_class: int, val_per_class: int, seed: int,
                  progress: bool = True) -> dict[str, list[VideoEntry]]:
    """The embedded benchmark's videos and list files (`write_videos` of `generate_clip`)."""
    return write_videos(out, list(CLASSES[:spec.num_classes]), partial(generate_clip, spec=spec),
                        {"train": train_per_class, "val": val_per_class}, seed, progress)


def make_synthetic_store(out: Path, spec: SyntheticSpec, train_per_class: int, val_per_class: int, seed: int = 0, *,
                         workers: int = 1, shard: tuple[int, int] | None = None, shard_size: int = 2000,
                         source: str | None = None, progress: bool = True) -> PrepReport:
    """The embedded benchmark's videos and frame store (`make_video_store` of `generate_clip`)."""
    return make_video_store(out, list(CLASSES[:spec.num_classes]), partial(generate_clip, spec=spec), train_per_class,
                            val_per_class, seed, workers=workers, shard=shard, shard_size=shard_size,
                            source=source or f"synthetic {spec}", progress=progress)

