"""Random scenes: the broad half of the demo backbone's pretraining corpus, and its labelled source tasks.

A scene is one to three objects (irregular polygons or ellipses, flat or two-toned) over a smooth textured ground
with or without landmarks, seen by a camera that stands still or pans at a constant velocity. Every object moves at
its own constant velocity (any direction, any speed up to most of a frame per clip), and may spin and grow or
shrink at a constant rate. No scene has what the transfer suite's families test (video_adapt.data.transfer):
no glyphs, blobs, rings, stripes, checks or 1/f noise, no curved, bouncing or accelerating paths, no fades, no
objects steered towards, after or around each other, no zoom or roll of the camera. Their classes stay unseen.

`SOURCE_CLASSES` are labelled scenes for the supervised source stage: the camera's pan direction, or the direction
of the one object that moves while the others stand still.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from video_adapt.data.synthetic import add_noise, draw_shape, polygon, smooth_texture


@dataclass(frozen=True)
class SceneSpec:
    size: int = 32
    frames: int = 16
    noise: float = 2.0


SOURCE_CLASSES = (
    "camera panning right", "camera panning left", "camera panning down", "camera panning up",
    "one of several sliding right", "one of several sliding left", "one of several sliding down",
    "one of several sliding up",
)
_DIRECTIONS = ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0))


def _ellipse(rng: np.random.Generator) -> np.ndarray:
    """An ellipse outline as a polygon of radius about 1 (axes 1 and 0.5-1)."""
    a = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    return np.stack([np.cos(a), rng.uniform(0.5, 1.0) * np.sin(a)], 1)


def _ground(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth textured ground `size` wide, with features of a random scale and contrast, maybe with landmarks."""
    cells = int(rng.integers(2, 9))
    ground = cv2.resize(smooth_texture(rng, 8 * cells, rng.uniform(5, 30)), (size, size), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(2, 9))):
            draw_shape(ground, polygon(rng) if rng.random() < 0.5 else _ellipse(rng), tuple(rng.uniform(0, size, 2)),
                       size * rng.uniform(0.03, 0.08), rng.uniform(0, 2 * math.pi), rng.uniform(30, 225, 3))
    return ground


def _colour(rng: np.random.Generator) -> np.ndarray:
    colour = rng.uniform(0, 255, 3)
    if rng.random() < 0.6:
        colour[rng.integers(0, 3)] = rng.choice([20.0, 235.0])
    return colour


@dataclass
class SceneObject:
    """A shape on the ground that moves, spins and grows at constant rates; positions in frame pixels of the view
    the camera has at t = 0.5."""

    shape: np.ndarray
    colour: np.ndarray
    second: np.ndarray | None  # a second colour for the inner half (two-toned), or None
    start: np.ndarray  # where it is at t = 0
    velocity: np.ndarray  # frame pixels per clip
    radius: float
    growth: float  # log scale change per clip
    angle: float
    spin: float  # radians per clip

    def draw(self, canvas: np.ndarray, t: float, offset: np.ndarray) -> None:
        centre = tuple(self.start + self.velocity * t - offset)
        radius = self.radius * math.exp(self.growth * (t - 0.5))
        draw_shape(canvas, self.shape, centre, radius, self.angle + self.spin * t, self.colour)
        if self.second is not None:
            draw_shape(canvas, self.shape, centre, 0.5 * radius, self.angle + self.spin * t, self.second)


def _random_object(rng: np.random.Generator, s: int, moving: bool = True) -> SceneObject:
    radius = s * rng.uniform(0.08, 0.2)
    velocity = np.zeros(2)
    if moving:
        heading = rng.uniform(0, 2 * math.pi)
        velocity = s * rng.uniform(0, 0.6) * np.array([math.cos(heading), math.sin(heading)])
    start = rng.uniform(0.2 * s, 0.8 * s, 2) - velocity / 2
    growth = rng.uniform(-0.6, 0.6) if moving and rng.random() < 0.4 else 0.0
    spin = rng.uniform(-2 * math.pi, 2 * math.pi) if moving and rng.random() < 0.5 else 0.0
    return SceneObject(polygon(rng) if rng.random() < 0.6 else _ellipse(rng), _colour(rng),
                   _colour(rng) if rng.random() < 0.3 else None, start, velocity, radius, growth,
                   rng.uniform(0, 2 * math.pi), spin)


def render_scene(rng: np.random.Generator, spec: SceneSpec, objects: list[SceneObject], pan: np.ndarray) -> np.ndarray:
    """Frames of `objects` over a ground twice the frame's size, the camera moving by `pan` frame pixels per clip."""
    s, t = spec.size, np.linspace(0, 1, spec.frames)
    world = 2 * s
    ground = _ground(rng, world)
    origin = world / 2 - s / 2 - pan / 2  # the view's top-left corner on the ground at t = 0
    video = np.empty((spec.frames, s, s, 3), np.uint8)
    for i in range(spec.frames):
        corner = origin + pan * t[i]
        m = np.float32([[1, 0, -corner[0]], [0, 1, -corner[1]]])
        canvas = cv2.warpAffine(ground, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        for obj in objects:  # objects live on the ground: the camera's motion moves them too
            obj.draw(canvas, t[i], pan * t[i] - pan / 2)
        video[i] = add_noise(canvas, rng, spec.noise)
    return video


def generate_scene(rng: np.random.Generator, spec: SceneSpec = SceneSpec()) -> np.ndarray:
    """One unlabelled random scene as uint8 (T, H, W, 3), fully determined by `rng`."""
    s = spec.size
    count = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    objects = [_random_object(rng, s) for _ in range(count)]
    pan = np.zeros(2)
    if rng.random() < 0.5:
        heading = rng.uniform(0, 2 * math.pi)
        pan = s * rng.uniform(0.1, 0.5) * np.array([math.cos(heading), math.sin(heading)])
    return render_scene(rng, spec, objects, pan)


def generate_source_clip(label: int, rng: np.random.Generator, spec: SceneSpec = SceneSpec()) -> np.ndarray:
    """One clip of `SOURCE_CLASSES[label]`: a camera panning one way (labels 0-3) over a scene whose objects move
    at random, or a static camera and one object of two or three sliding one way (4-7) among still ones."""
    if not 0 <= label < len(SOURCE_CLASSES):
        raise ValueError(f"label {label} out of range 0..{len(SOURCE_CLASSES) - 1}")
    s = spec.size
    direction = np.array(_DIRECTIONS[label % 4])
    if label < 4:
        objects = [_random_object(rng, s) for _ in range(int(rng.integers(1, 4)))]
        return render_scene(rng, spec, objects, s * rng.uniform(0.3, 0.5) * direction)
    objects = [_random_object(rng, s, moving=False) for _ in range(int(rng.integers(2, 4)))]
    mover = objects[0]
    mover.velocity = s * rng.uniform(0.35, 0.55) * direction
    mover.start = rng.uniform(0.3 * s, 0.7 * s, 2) - mover.velocity / 2
    return render_scene(rng, spec, objects, np.zeros(2))
