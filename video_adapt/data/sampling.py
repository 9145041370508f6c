"""Which frames of a video make a clip. Pure functions of (video length, rule, randomness).

- segment (TSN / SSv2, VideoMAE's `SSVideoClsDataset`): T equal segments, one frame from each: random for
  training, the centre for testing; VideoMAE's second test clip takes each segment's start.
- dense (Kinetics / HMDB51, VideoMAE's `VideoClsDataset`): T frames at stride s; a random start for training,
  N evenly spaced starts for testing.
Videos shorter than the rule needs are padded by repeating frames (the last one for dense clips, neighbouring
indices for segments), as VideoMAE does, so a clip always has exactly T frames.
"""
from __future__ import annotations

import numpy as np


def _check(num_frames: int, t: int) -> None:
    if num_frames < 1:
        raise ValueError(f"video has {num_frames} frames; need at least 1")
    if t < 1:
        raise ValueError(f"clip length must be at least 1, got {t}")


def segment_indices(num_frames: int, t: int, train: bool, rng: np.random.Generator | None = None,
                    clip: int = 0) -> np.ndarray:
    """T frames, one per equal segment. Test clip 0 takes segment centres, clip 1 segment starts."""
    _check(num_frames, t)
    edges = np.linspace(0, num_frames, t + 1)
    starts = np.floor(edges[:-1]).astype(np.int64)
    ends = np.maximum(np.floor(edges[1:]).astype(np.int64), starts + 1)  # a segment holds at least one frame
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        idx = starts + (rng.random(t) * (ends - starts)).astype(np.int64)
    elif clip % 2 == 0:
        idx = ((edges[:-1] + edges[1:]) / 2).astype(np.int64)
    else:
        idx = starts
    return np.clip(idx, 0, num_frames - 1)


def dense_indices(num_frames: int, t: int, stride: int, start: int) -> np.ndarray:
    """T frames from `start` at `stride`; past the end the last frame repeats."""
    _check(num_frames, t)
    return np.minimum(start + stride * np.arange(t), num_frames - 1).astype(np.int64)


def dense_train_indices(num_frames: int, t: int, stride: int, rng: np.random.Generator | None = None) -> np.ndarray:
    rng = rng if rng is not None else np.random.default_rng()
    span = (t - 1) * stride + 1
    start = int(rng.integers(0, num_frames - span + 1)) if num_frames > span else 0
    return dense_indices(num_frames, t, stride, start)


def dense_test_indices(num_frames: int, t: int, stride: int, num_clips: int) -> list[np.ndarray]:
    """N clips with evenly spaced starts covering the whole video (one centred clip when N = 1)."""
    span = (t - 1) * stride + 1
    room = max(num_frames - span, 0)
    if num_clips == 1:
        starts = [room // 2]
    else:
        starts = [int(round(room * i / (num_clips - 1))) for i in range(num_clips)]
    return [dense_indices(num_frames, t, stride, s) for s in starts]


def eval_clip_indices(rule: str, num_frames: int, t: int, num_clips: int, stride: int = 4) -> list[np.ndarray]:
    """The test views' frame indices for a sampling rule ("segment" or "dense")."""
    if rule == "segment":
        return [segment_indices(num_frames, t, train=False, clip=c) for c in range(num_clips)]
    if rule == "dense":
        return dense_test_indices(num_frames, t, stride, num_clips)
    raise ValueError(f"unknown sampling rule {rule!r}; use 'segment' or 'dense'")


def train_clip_indices(rule: str, num_frames: int, t: int, rng: np.random.Generator, stride: int = 4) -> np.ndarray:
    if rule == "segment":
        return segment_indices(num_frames, t, train=True, rng=rng)
    if rule == "dense":
        return dense_train_indices(num_frames, t, stride, rng)
    raise ValueError(f"unknown sampling rule {rule!r}; use 'segment' or 'dense'")


def subsample_positions(stored: int, t: int, rule: str, train: bool, rng: np.random.Generator | None = None) -> np.ndarray:
    """Positions inside a stored T_max-frame training tube that give a T-frame clip of the same rule.

    segment: each of the T segments is the union of T_max/T stored segments, each holding one uniformly drawn
    frame, so picking one of them at random is again a uniform frame of the larger segment (exact in
    distribution). For a test view the middle one is taken. dense: a contiguous run of T stored frames (the
    same stride), at a random offset for training, centred for testing.
    """
    if stored % t and rule == "segment":
        raise ValueError(f"cannot derive {t} segments from {stored} stored segments")
    if t > stored:
        raise ValueError(f"cannot derive {t} frames from a tube of {stored}")
    rng = rng if rng is not None else np.random.default_rng()
    if rule == "segment":
        group = stored // t
        offset = rng.integers(0, group, size=t) if train else np.full(t, group // 2)
        return np.arange(t) * group + offset
    room = stored - t
    start = int(rng.integers(0, room + 1)) if train else room // 2
    return np.arange(start, start + t)
