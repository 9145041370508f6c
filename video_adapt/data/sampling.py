"""Which frames of a video make a clip: the official index rules as pure functions of (length, rule, randomness).

Every rule reproduces the index arithmetic of the official loaders, short-video padding included, so a model
trained here sees the frames it would see under the released code. N is the number of decoded frames, T the
frames per clip, r the stride. Training rules draw from a `numpy.random.Generator`; test rules are
deterministic.

Training (one clip per call, drawn afresh from the whole video):
- `tsn_indices`  S-TSN: one dense window of T*r frames at a random start (AdaptFormer's training set for SSv2
  and HMDB51, VideoMAE's pre-training);
- `lin_indices`  S-LIN: T points on a linspace over a random window of T*r frames (VideoMAE's Kinetics/HMDB51
  fine-tuning);
- `seg_indices`  S-SEG: T equal segments, one random frame from each (VideoMAE's SSv2 fine-tuning).
Testing (every view of a video):
- `dense_test_clips`  T-DENSE: S evenly spaced windows of T consecutive frames of the stride-r subsequence;
- `ssv2_test_clips`   T-SSV2: segment starts and segment centres (VideoMAE's 2 test clips for SSv2).
Windows of a long video or a live stream (features, timelines, streams; each window then gets a test view):
- `window_starts`  the first frame of every window of W frames, one every S frames;
- `parse_span` / `span_frames`  a window or stride as seconds ('2', '0.5s') or frames ('16f').
"""
from __future__ import annotations

import numpy as np

TRAIN_RULES = ("tsn", "lin", "seg")
TEST_RULES = ("dense", "ssv2")


def _check(num_frames: int, t: int, stride: int = 1) -> None:
    if num_frames < 1:
        raise ValueError(f"video has {num_frames} frames; need at least 1")
    if t < 1:
        raise ValueError(f"clip length must be at least 1, got {t}")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")


def tsn_indices(num_frames: int, t: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """S-TSN: a window of T*r frames at a start s ~ U{0..N-T*r} (s = 0 when the video is shorter).

    Frame i is s + r*min(i, K) with K the largest k such that s + r*k <= N-2: the official loader advances its
    offset only while the next one stays below the last frame, so a short video repeats its last reachable frame.
    (VM:kinetics.py:515-550 `_sample_train_indices` + `_video_TSN_decord_batch_loader`;
    AF:datasets/kinetics.py:539-574, no temporal jitter at AF:datasets/kinetics.py:619.)
    """
    _check(num_frames, t, stride)
    span = t * stride
    room = num_frames - span + 1
    start = int(rng.integers(0, room)) if room > 0 else 0
    k = np.arange(t)
    reachable = max(0, (num_frames - 2 - start) // stride)  # K; frame s is always taken
    return (start + stride * np.minimum(k, reachable)).astype(np.int64)


def lin_indices(num_frames: int, t: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """S-LIN: T points of floor(linspace(e - T*r, e, T)) for an end e ~ U{T*r..N-1}, the last clipped to e-1.

    A video of N <= T*r frames takes N//r points of linspace(0, N), pads with N up to T points and clips to
    [0, N-1]. (VM:kinetics.py:251-272 `loadvideo_decord`, num_segment = 1; AF:datasets/kinetics.py:275-296.)
    """
    _check(num_frames, t, stride)
    span = t * stride
    if num_frames <= span:
        index = np.linspace(0, num_frames, num=num_frames // stride)
        index = np.concatenate((index, np.ones(t - num_frames // stride) * num_frames))
        return np.clip(index, 0, num_frames - 1).astype(np.int64)
    end = int(rng.integers(span, num_frames))
    start = end - span
    return np.clip(np.linspace(start, end, num=t), start, end - 1).astype(np.int64)


def seg_indices(num_frames: int, t: int, rng: np.random.Generator) -> np.ndarray:
    """S-SEG: a = N//T; frame k is k*a + U{0..a-1}, independently per segment; all zeros when N < T.

    The frames after T*a are never drawn, as in the official loader. (VM:ssv2.py:250-263.)
    """
    _check(num_frames, t)
    a = num_frames // t
    if a > 0:
        return (np.arange(t) * a + rng.integers(0, a, size=t)).astype(np.int64)
    # N < T: the official `elif len(vr) > num_segment` branch cannot be reached, so every index is 0
    return np.zeros(t, dtype=np.int64)


def dense_test_clips(num_frames: int, t: int, stride: int, num_clips: int) -> list[np.ndarray]:
    """T-DENSE: the subsequence 0, r, 2r, ... < N, padded with its last frame to at least T (length M); clip c
    starts at int(c * max((M-T)/(S-1), 0)) of it and takes T consecutive subsampled frames.

    (VM:kinetics.py:243-249 and 137-152; AF:datasets/kinetics.py:267-273 and 162-177.) The official code divides by
    S-1, so it needs S >= 2; for S = 1 we take the centred window (our extension).
    """
    _check(num_frames, t, stride)
    if num_clips < 1:
        raise ValueError(f"need at least one test clip, got {num_clips}")
    sub = list(range(0, num_frames, stride))
    while len(sub) < t:
        sub.append(sub[-1])
    sub_arr = np.asarray(sub, dtype=np.int64)
    m = len(sub_arr)
    if num_clips == 1:
        starts = [(m - t) // 2]
    else:
        step = max((m - t) / (num_clips - 1), 0.0)
        starts = [int(c * step) for c in range(num_clips)]
    return [sub_arr[s:s + t] for s in starts]


def ssv2_test_clips(num_frames: int, t: int, num_clips: int = 2) -> list[np.ndarray]:
    """T-SSV2: tick = N/T; the 2T indices int(tick*k + tick/2) and int(tick*k), sorted; clip c takes every second
    index from position c (c = 0: the segment starts, c = 1: the centres when tick >= 1).

    (VM:ssv2.py:238-248 `loadvideo_decord` test branch and VM:ssv2.py:140-147 `buffer[temporal_start::2]`.) The
    official rule is written for 2 clips; 1 clip takes clip 0.
    """
    _check(num_frames, t)
    if num_clips not in (1, 2):
        raise ValueError(f"the SSv2 test rule has 1 or 2 temporal clips, not {num_clips}")
    tick = num_frames / float(t)
    index = [int(tick / 2.0 + tick * x) for x in range(t)] + [int(tick * x) for x in range(t)]
    index = np.sort(np.asarray(index, dtype=np.int64))
    return [index[c::2] for c in range(num_clips)]


def train_indices(rule: str, num_frames: int, t: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """One training clip by rule name ("tsn" | "lin" | "seg")."""
    if rule == "tsn":
        return tsn_indices(num_frames, t, stride, rng)
    if rule == "lin":
        return lin_indices(num_frames, t, stride, rng)
    if rule == "seg":
        return seg_indices(num_frames, t, rng)
    raise ValueError(f"unknown training sampling rule {rule!r}; use one of {', '.join(TRAIN_RULES)}")


def eval_clip_indices(rule: str, num_frames: int, t: int, stride: int, num_clips: int) -> list[np.ndarray]:
    """Every temporal test view by rule name ("dense" | "ssv2")."""
    if rule == "dense":
        return dense_test_clips(num_frames, t, stride, num_clips)
    if rule == "ssv2":
        return ssv2_test_clips(num_frames, t, num_clips)
    raise ValueError(f"unknown test sampling rule {rule!r}; use one of {', '.join(TEST_RULES)}")


# ---------------------------------------------------------------------------- windows of a long video or a stream
def span_frames(span: float | str, fps: float) -> int:
    """A window or stride in frames: seconds (a number or '2s') at `fps`, or a frame count ('16f'); at least 1."""
    text = str(span).strip().lower()
    if text.endswith("f"):
        return max(1, int(text[:-1]))
    return max(1, int(round(float(text.removesuffix("s")) * fps)))


def parse_span(text: str) -> float | str:
    """Check a --window / --stride value: seconds ('2', '0.5s') or frames ('16f'), positive."""
    value = str(text).strip().lower()
    try:
        number = float(value[:-1]) if value.endswith(("f", "s")) else float(value)
    except ValueError:
        raise ValueError(f"{text!r}: give seconds (2, 0.5s) or frames (16f)") from None
    if number <= 0 or (value.endswith("f") and not number.is_integer()):
        raise ValueError(f"{text!r}: must be a positive number of seconds or a whole number of frames")
    return value if value.endswith("f") else float(value.removesuffix("s"))


def span_text(span: float | str) -> str:
    """A --window / --stride value for people: '2 s' or '16 frames'."""
    text = str(span)
    return f"{text[:-1]} frames" if text.endswith("f") else f"{float(text):g} s"


def window_starts(num_frames: int, window: int, stride: int) -> np.ndarray:
    """First frames of the sliding windows of `window` frames, one every `stride` frames: 0, S, 2S, ... while the
    window fits in the video, so the tail after the last whole window is not covered (the layout temporal action
    localization features use: window i spans frames [i*S, i*S + W)). A video shorter than one window has one
    window, frames [0, N)."""
    _check(num_frames, window, stride)
    return np.arange(0, max(num_frames - window, 0) + 1, stride, dtype=np.int64)
