"""The transfer suite's task families: temporal tasks from generators that the demo backbone's pretraining never saw.

Each family is a different way of leaving the embedded benchmark's generator (video_adapt.data.synthetic):
- `motion`: other paths of one object (circling, bouncing that dies down, speeding up);
- `appearance`: other object kinds and textures (glyphs, blobs and rings, flat or filled with stripes, checks or 1/f
  noise, on such grounds), turning in place, their fill drifting inside a still outline, or fading;
- `interaction`: two objects moving relative to each other (closing in, meeting, orbiting each other);
- `camera`: a moving camera over a large scene (zooming, rolling, and an object whose motion in the scene is the
  class while the camera pans at random).

Every family has three base motions and six classes in pairs: class 2k + 1 is class 2k played backwards. Drawn from
the same random stream, the two are the same frames in reverse order (`family_clip`), so the frames of paired
classes have the same distribution: a model that ignores frame order can at best tell the pair, 50% of a family.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from video_adapt.data.synthetic import (
    add_noise,
    draw_distractors,
    draw_shape,
    drifting_distractors,
    polygon,
    saturated_colour,
    smooth_texture,
)


@dataclass(frozen=True)
class TransferSpec:
    """Frame size, frame count and sensor noise of every family (the embedded benchmark's defaults)."""

    size: int = 32
    frames: int = 16
    noise: float = 2.0


Render = Callable[[int, np.random.Generator, TransferSpec, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Family:
    """A task family: class names in reversed pairs, and the renderer of its base motions (float frames)."""

    name: str
    classes: tuple[str, ...]
    render: Render
    about: str


# ------------------------------------------------------------------------------------------------------- motion
def motion_path(base: int, rng: np.random.Generator, s: int, t: np.ndarray, radius: float):
    """Centre x, y at times t in [0, 1] of base motion 0 (circling clockwise: y points down), 1 (bouncing, dying
    down) or 2 (speeding up) for an object of `radius` in an s x s frame."""
    if base == 0:  # one turn around a centre near the middle
        centre = s / 2 + rng.uniform(-2, 2, 2)
        orbit, phase = s * rng.uniform(0.2, 0.25), rng.uniform(0, 2 * math.pi)
        return centre[0] + orbit * np.cos(phase + 2 * math.pi * t), centre[1] + orbit * np.sin(phase + 2 * math.pi * t)
    if base == 1:  # two bounces on the floor, heights dying down by a factor 2.5-4, drifting sideways
        floor = s - radius - 1
        height = s * rng.uniform(0.5, 0.65) * np.exp(-rng.uniform(math.log(2.5), math.log(4)) * t)
        y = floor - height * np.abs(np.sin(math.pi * (2 * t + rng.uniform(0, 0.5))))
        return s / 2 + rng.uniform(-3, 3) + rng.choice([-1, 1]) * s * rng.uniform(0.15, 0.3) * (t - 0.5), y
    # speeding up from rest in any direction (position ~ t^2): only the speed profile tells it
    heading = rng.uniform(0, 2 * math.pi)
    direction = np.array([math.cos(heading), math.sin(heading)])
    travel = s * rng.uniform(0.45, 0.6)
    start = s / 2 - direction * travel / 2 + rng.uniform(-2, 2, 2)
    return start[0] + direction[0] * travel * t ** 2, start[1] + direction[1] * travel * t ** 2


def _motion(base: int, rng: np.random.Generator, spec: TransferSpec, t: np.ndarray) -> np.ndarray:
    """One polygon on the benchmark's background with a drifting distractor, moving along a new kind of path."""
    s = spec.size
    background = smooth_texture(rng, s, 12.0)
    shape, colour = polygon(rng), saturated_colour(rng)
    radius, angle = s * rng.uniform(0.12, 0.15), rng.uniform(0, 2 * math.pi)
    x, y = motion_path(base, rng, s, t, radius)
    distractors = drifting_distractors(rng, s, 1)
    video = np.empty((len(t), s, s, 3), np.float32)
    for i in range(len(t)):
        canvas = background.copy()
        draw_distractors(canvas, distractors, s, t[i])
        draw_shape(canvas, shape, (x[i], y[i]), radius, angle, colour)
        video[i] = canvas
    return video


# --------------------------------------------------------------------------------------------------- appearance
GLYPHS = "0123456789ABEFHKLMNPRSTUVXYZ"


def pink_noise(rng: np.random.Generator, size: int, exponent: float = 1.0) -> np.ndarray:
    """A natural-image-like texture: white noise shaped to a 1/f^exponent amplitude spectrum, zero mean, unit std."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    f[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.normal(0, 1, (size, size))) / f ** exponent
    spectrum[0, 0] = 0.0
    field = np.real(np.fft.ifft2(spectrum))
    return ((field - field.mean()) / (field.std() + 1e-8)).astype(np.float32)


def _pattern(rng: np.random.Generator, height: int, width: int | None = None) -> np.ndarray:
    """A (height, width) field in [-1, 1]: stripes (across the rows, at up to 45 degrees from upright), checks, or
    1/f noise."""
    width = width or height
    kind = int(rng.integers(0, 3))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:
        a, period = rng.uniform(-math.pi / 4, math.pi / 4), rng.uniform(4, 8)
        return np.sin(2 * math.pi * (xx * math.cos(a) + yy * math.sin(a)) / period + rng.uniform(0, 2 * math.pi))
    if kind == 1:
        cell = rng.uniform(3, 6)
        ox, oy = rng.uniform(0, 2 * cell, 2)
        return np.where((np.floor((xx + ox) / cell) + np.floor((yy + oy) / cell)) % 2 == 0, 1.0, -1.0).astype(np.float32)
    side = max(height, width)
    return np.clip(pink_noise(rng, side)[:height, :width] / 2, -1, 1)


def _two_colours(rng: np.random.Generator, field: np.ndarray, contrast: float) -> np.ndarray:
    """Colour a [-1, 1] field between a random base colour and a second one `contrast` grey levels away."""
    base, direction = rng.uniform(60, 190, 3), rng.normal(0, 1, 3)
    direction /= np.linalg.norm(direction) + 1e-8
    return (base + contrast * field[..., None] * direction).astype(np.float32)


def _object_mask(rng: np.random.Generator, box: int, kinds: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """An antialiased (box, box) alpha mask in [0, 1], drawn at 4x and reduced: a glyph (kind 0), a blob (1) or a
    ring (2), one of `kinds`."""
    big = np.zeros((4 * box, 4 * box), np.uint8)
    kind, c = int(rng.choice(kinds)), 2 * box
    if kind == 0:
        text = GLYPHS[int(rng.integers(0, len(GLYPHS)))]
        scale, thickness = 4 * box / 30, max(int(round(4 * box / 6)), 1)
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        cv2.putText(big, text, (c - w // 2, c + h // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    elif kind == 1:
        blob = cv2.resize(rng.normal(0, 1, (5, 5)).astype(np.float32), (4 * box, 4 * box),
                          interpolation=cv2.INTER_CUBIC)
        yy, xx = np.mgrid[0:4 * box, 0:4 * box]
        inside = np.hypot(xx - c, yy - c) < 1.5 * box * (1 + 0.25 * np.tanh(blob))
        big[inside] = 255
    else:
        cv2.circle(big, (c, c), int(1.4 * box), 255, max(int(0.8 * box), 1), cv2.LINE_AA)
    return cv2.resize(big, (box, box), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _paste(canvas: np.ndarray, patch: np.ndarray, alpha: np.ndarray, centre: tuple[float, float],
           opacity: float = 1.0, angle: float = 0.0) -> None:
    """Blend `patch` (h, w, 3) with `alpha` (h, w) onto `canvas`, turned by `angle` (radians, clockwise on screen)
    about its middle and centred at a sub-pixel position."""
    s = canvas.shape[0]
    h, w = alpha.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -math.degrees(angle), 1.0)
    m[:, 2] += np.array(centre) - np.array([(w - 1) / 2, (h - 1) / 2])
    a = cv2.warpAffine(alpha, m, (s, s), flags=cv2.INTER_LINEAR, borderValue=0)[..., None] * opacity
    p = cv2.warpAffine(patch, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    canvas *= 1 - a
    canvas += a * p


def _appearance(base: int, rng: np.random.Generator, spec: TransferSpec, t: np.ndarray) -> np.ndarray:
    """A glyph, blob or ring, flat or filled with stripes, checks or 1/f noise, over such a ground, standing near the
    middle: turning clockwise (base 0; glyphs and blobs), its fill drifting right inside the still outline (1; blobs
    with a textured fill), or fading in (2)."""
    s = spec.size
    background = _two_colours(rng, _pattern(rng, s), rng.uniform(15, 30))
    box = int(round(s * rng.uniform(0.45, 0.55)))
    alpha = _object_mask(rng, box, ((0, 1), (1,), (0, 1, 2))[base])  # a ring shows no turn, a blob the most fill
    drift = s * rng.uniform(0.15, 0.25) if base == 1 else 0.0  # the fill moves, the outline stays
    if base == 1 or rng.random() < 0.75:  # textured, strongly enough to show through the ground's texture
        fill = _two_colours(rng, _pattern(rng, box, box + int(math.ceil(drift)) + 1), rng.uniform(60, 90))
    else:  # flat and saturated, as the benchmark's actor
        fill = np.broadcast_to(saturated_colour(rng).astype(np.float32), (box, box + 1, 3)).copy()
    centre = s / 2 + rng.uniform(-2, 2, 2)
    turn = math.radians(rng.uniform(90, 150)) if base == 0 else 0.0
    angle0 = rng.uniform(0, 2 * math.pi) if base == 0 else 0.0
    opacity = t if base == 2 else np.ones_like(t)
    video = np.empty((len(t), s, s, 3), np.float32)
    for i in range(len(t)):
        shift = np.float32([[1, 0, drift * (1 - t[i])], [0, 1, 0]])  # the window slides left over the fill
        patch = cv2.warpAffine(fill, shift, (box, box), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
        canvas = background.copy()
        _paste(canvas, patch, alpha, (centre[0], centre[1]), float(opacity[i]), angle0 + turn * t[i])
        video[i] = canvas
    return video


# -------------------------------------------------------------------------------------------------- interaction
def _interaction(base: int, rng: np.random.Generator, spec: TransferSpec, t: np.ndarray) -> np.ndarray:
    """Two polygons on the benchmark's background with a drifting distractor; their relative motion is the class."""
    s = spec.size
    background = smooth_texture(rng, s, 12.0)
    shapes = [polygon(rng), polygon(rng)]
    colours = [saturated_colour(rng), saturated_colour(rng)]
    radii = s * rng.uniform(0.09, 0.12, 2)
    angles = rng.uniform(0, 2 * math.pi, 2)
    heading = rng.uniform(0, 2 * math.pi)
    axis = np.array([math.cos(heading), math.sin(heading)])
    middle = s / 2 + rng.uniform(-2, 2, 2)
    contact = radii.sum()
    gap = s * rng.uniform(0.45, 0.55)
    if base == 0:  # closing in: both move along the axis, the one behind faster, until they touch
        speed = (gap - contact) / 2 + s * rng.uniform(0.1, 0.2)  # the one ahead moves forward too
        lead = middle[:, None] + axis[:, None] * (speed * (t - 0.5) + gap / 2 - (gap - contact) * t / 2)
        back = middle[:, None] + axis[:, None] * (speed * (t - 0.5) - gap / 2 + (gap - contact) * t / 2)
        centres = [lead, back]
    elif base == 1:  # meeting: they move towards each other until they touch, the middle stays
        half = (gap - (gap - contact) * t) / 2
        centres = [middle[:, None] + axis[:, None] * half, middle[:, None] - axis[:, None] * half]
    else:  # orbiting each other clockwise by half a turn, face to face
        orbit = s * rng.uniform(0.2, 0.25)
        phase = heading + math.pi * t
        ring = np.stack([np.cos(phase), np.sin(phase)])
        centres = [middle[:, None] + orbit * ring, middle[:, None] - orbit * ring]
    distractors = drifting_distractors(rng, s, 1)
    video = np.empty((len(t), s, s, 3), np.float32)
    for i in range(len(t)):
        canvas = background.copy()
        draw_distractors(canvas, distractors, s, t[i])
        for k in range(2):
            draw_shape(canvas, shapes[k], (centres[k][0, i], centres[k][1, i]), radii[k], angles[k], colours[k])
        video[i] = canvas
    return video


# ------------------------------------------------------------------------------------------------------- camera
def _camera(base: int, rng: np.random.Generator, spec: TransferSpec, t: np.ndarray) -> np.ndarray:
    """A camera over a scene four frames wide (a textured ground with landmarks, two scene pixels per frame pixel at
    zoom 1): zooming in, a walker going right in the scene while the camera pans at random, or rolling clockwise."""
    s = spec.size
    world = 4 * s
    scene = cv2.resize(smooth_texture(rng, world // 2, 20.0), (world, world), interpolation=cv2.INTER_CUBIC)
    for _ in range(16):
        draw_shape(scene, polygon(rng), tuple(rng.uniform(0, world, 2)), s * rng.uniform(0.15, 0.3),
                   rng.uniform(0, 2 * math.pi), rng.uniform(30, 225, 3))
    centre = world / 2 + rng.uniform(-s / 4, s / 4, 2)
    zoom = np.ones_like(t) * rng.uniform(1.0, 1.3)
    roll = np.zeros_like(t)
    pan = np.zeros((2, len(t)))
    walker = None
    if base == 0:  # zooming in by 1.6-2x
        zoom = rng.uniform(1.0, 1.2) * rng.uniform(1.6, 2.0) ** t
    elif base == 1:  # the camera pans at up to 0.3 frames per clip in any direction; the walker goes right
        velocity = rng.uniform(-1, 1, 2)
        velocity *= 2 * s * rng.uniform(0, 0.3) / (np.linalg.norm(velocity) + 1e-8)
        pan = velocity[:, None] * (t - 0.5)
        walk = 2 * s * rng.uniform(0.35, 0.5)
        start = centre + rng.uniform(-s / 4, s / 4, 2) - np.array([walk / 2, 0])
        walker = (polygon(rng), saturated_colour(rng), 2 * s * rng.uniform(0.1, 0.13), rng.uniform(0, 2 * math.pi),
                  start[:, None] + np.array([walk, 0])[:, None] * t)
    else:  # rolling clockwise by 60-90 degrees about the view's centre
        turn = math.radians(rng.uniform(60, 90))
        roll = turn * (t - 0.5)
    video = np.empty((len(t), s, s, 3), np.float32)
    for i in range(len(t)):
        frame_scene = scene
        if walker is not None:
            frame_scene = scene.copy()
            shape, colour, radius, angle, path = walker
            draw_shape(frame_scene, shape, (path[0, i], path[1, i]), radius, angle, colour)
        # frame pixel (u, v) sees scene point centre + pan + R(roll) (2 / zoom) (u - s/2, v - s/2)
        c, si = math.cos(roll[i]), math.sin(roll[i])
        k = 2 / zoom[i]
        a = np.array([[c * k, -si * k], [si * k, c * k]])
        origin = centre + pan[:, i] - a @ np.array([s / 2 - 0.5, s / 2 - 0.5])
        m = np.hstack([a, origin[:, None]]).astype(np.float32)
        video[i] = cv2.warpAffine(frame_scene, m, (s, s), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REFLECT)
    return video


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("motion", ("circling clockwise", "circling counter-clockwise", "bouncing, dying down",
                      "bouncing, building up", "speeding up", "slowing down"), _motion,
           "other paths of one object: circling, bouncing, speeding up or slowing down in any direction"),
    Family("appearance", ("figure turning clockwise", "figure turning counter-clockwise", "fill drifting right",
                          "fill drifting left", "figure fading in", "figure fading out"), _appearance,
           "glyphs, blobs and rings, flat or filled with stripes, checks or 1/f noise, on such grounds: turning, "
           "their fill drifting inside the still outline, fading"),
    Family("interaction", ("closing in", "pulling away", "meeting", "parting", "orbiting each other clockwise",
                           "orbiting each other counter-clockwise"), _interaction,
           "two objects: one catching up with the other, meeting head-on, orbiting each other"),
    Family("camera", ("zooming in", "zooming out", "walker going right, camera panning",
                      "walker going left, camera panning", "camera rolling clockwise",
                      "camera rolling counter-clockwise"), _camera,
           "a camera over a large scene: zoom, roll, and a walker's direction in the scene while the camera pans"),
)}


def family(name: str) -> Family:
    """The family called `name`; a one-line error naming the known ones otherwise."""
    from video_adapt.errors import ConfigError
    if name not in FAMILIES:
        raise ConfigError(f"unknown transfer family {name!r}; one of: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_clip(name: str, label: int, rng: np.random.Generator, spec: TransferSpec = TransferSpec()) -> np.ndarray:
    """One clip of class `label` of family `name` as uint8 (T, H, W, 3) RGB, fully determined by `rng`; an odd
    label is its even partner's clip played backwards."""
    fam = family(name)
    if not 0 <= label < len(fam.classes):
        raise ValueError(f"label {label} out of range 0..{len(fam.classes) - 1} for family {name!r}")
    video = fam.render(label // 2, rng, spec, np.linspace(0, 1, spec.frames))
    video = np.stack([add_noise(frame, rng, spec.noise) for frame in video])
    return video[::-1].copy() if label % 2 else video
