"""Benchmark inputs: footage-like source videos at Something-Something v2's bit rate, and own videos from a folder.

Something-Something v2 ships 220,847 VP9 webm videos at 240p and 12 fps in about 19.4 GB: about 88 KB, or about
175 kbit/s, for an average clip of about 4 s. Sources are encoded at that rate so that decoding them costs what
decoding the real dataset costs (flat synthetic frames compress 4x smaller and decode 2x faster).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from video_adapt.data.decode import VIDEO_EXTENSIONS
from video_adapt.data.synthetic import write_video
from video_adapt.errors import ConfigError

SSV2_BIT_RATE = 150_000  # libvpx-vp9 overshoots its target by ~15% on these frames: ~90 KB per 48 frames


def footage_like(seed: int, frames: int, height: int, width: int) -> np.ndarray:
    """RGB frames (T, H, W, 3) with the statistics that make real footage expensive to encode and decode:
    texture at every scale (1/f-like), a hand-held camera pan, a moving object and sensor noise."""
    import cv2
    rng = np.random.default_rng(seed)
    pad_h, pad_w = height // 4, width // 2
    big_h, big_w = height + 2 * pad_h, width + 2 * pad_w
    texture = np.full((big_h, big_w, 3), 110, np.float32)
    for cell, amplitude in ((64, 50), (16, 30), (4, 18), (1, 8)):
        noise = rng.normal(0, 1, (big_h // cell + 2, big_w // cell + 2, 3)).astype(np.float32)
        texture += amplitude * cv2.resize(noise, (big_w, big_h), interpolation=cv2.INTER_CUBIC)[:big_h, :big_w]
    yy, xx = np.mgrid[0:height, 0:width]
    video = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        dx = int(pad_w * t / max(frames - 1, 1))
        dy = int(pad_h * (1 + 0.8 * np.sin(t / 9 + seed)))
        frame = texture[dy:dy + height, dx:dx + width].copy()
        cx, cy = (0.2 + 0.6 * t / frames) * width, height / 2 + height / 8 * np.sin(t / 5 + seed)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 < (height / 7) ** 2
        frame[inside] = frame[inside] * 0.4 + np.array((200, 120, 90), np.float32) * 0.6
        frame += rng.normal(0, 2.5, frame.shape).astype(np.float32)
        video[t] = np.clip(frame, 0, 255)
    return video


def make_sources(folder: Path, count: int, frames: int, height: int, width: int) -> list[Path]:
    """`count` footage-like VP9 webm sources at about Something-Something v2's bit rate."""
    paths = []
    for i in range(count):
        path = folder / f"v{i:03d}.webm"
        write_video(str(path), footage_like(i, frames, height, width), fps=12, codec="libvpx-vp9",
                    bit_rate=SSV2_BIT_RATE)
        paths.append(path)
    return paths


def list_videos(folder: Path) -> tuple[list[Path], list[int]]:
    """Videos under `folder`: class sub-folders give labels, a flat folder gives label 0 to all."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not paths:
        raise ConfigError(f"{folder}: no videos ({', '.join(VIDEO_EXTENSIONS)})")
    classes = sorted({p.parent for p in paths})
    return paths, [classes.index(p.parent) for p in paths]
