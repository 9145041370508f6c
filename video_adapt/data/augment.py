"""The official spatial augmentations of AdaptFormer and VideoMAE, as pure functions of a numpy Generator.

Clips are uint8 (C, T, H, W) tensors; every random choice comes from the `numpy.random.Generator` the caller
passes, so a clip is a function of (seed, epoch, index). The box samplers return `Box` = (top, left, height,
width) and leave the pixels to `transforms.crop_resize`, so a loader can draw in one place and crop in another.

Official sources (AF = ShoufaChen/AdaptFormer @6967d67, VM = MCG-NJU/VideoMAE @14ef8d8):
- multi-scale crop (MSC): AF:datasets/videomae_transforms.py:92-162 (= VM:transforms.py:91-161)
- VideoMAE training augmentation: VM:ssv2.py:155-214 (= VM:kinetics.py:160-219): RandAugment at the decoded
  resolution (VM:video_transforms.py:621-654, VM:rand_augment.py), normalise, random-resized crop
  (VM:video_transforms.py:499-573), flip (not for SSv2), random erasing (VM:random_erasing.py)
- test views: VM:functional.py:26-74 (resize), VM:ssv2.py:134-147 / VM:kinetics.py:137-152 (3 crops),
  VM:video_transforms.py:1128-1169 (centre crop of the validation view)
"""
from __future__ import annotations

import math
import random

import cv2
import numpy as np
import torch
from PIL import Image

Box = tuple[int, int, int, int]  # (top, left, height, width)

MSC_SCALES = (1, .875, .75, .66)


# --- multi-scale crop (AdaptFormer training, VideoMAE pre-training) ---------------------------------------

def msc_pairs(h: int, w: int, size: int = 224, scales=MSC_SCALES, max_distort: int = 1) -> list[tuple[int, int]]:
    """Candidate (crop height, crop width) pairs in the official order (AF:datasets/videomae_transforms.py:116-125).

    Sides are int(min(h, w) * scale), snapped to `size` when within 3 px; a pair's two scale indices differ by
    at most `max_distort`. Pairs may repeat; each list entry is equally likely, as with `random.choice`.
    """
    sides = [int(min(h, w) * s) for s in scales]
    sides = [size if abs(x - size) < 3 else x for x in sides]
    return [(ch, cw) for i, ch in enumerate(sides) for j, cw in enumerate(sides) if abs(i - j) <= max_distort]


def msc_offsets(h: int, w: int, ch: int, cw: int, more_fix_crop: bool = True) -> list[tuple[int, int]]:
    """The 5 or 13 fixed (top, left) offsets in the official order (AF:datasets/videomae_transforms.py:141-162).

    Steps are (w - cw) // 4 and (h - ch) // 4: corners, centre, then edge centres and quarter points.
    """
    ws, hs = (w - cw) // 4, (h - ch) // 4
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2)]  # (x, y) in steps, as the official list
    if more_fix_crop:
        grid += [(0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(y * hs, x * ws) for x, y in grid]


def msc_box(h: int, w: int, rng: np.random.Generator, *, size: int = 224, scales=MSC_SCALES, max_distort: int = 1,
            more_fix_crop: bool = True) -> Box:
    """One multi-scale crop box for a h x w clip: a uniform pair, then a uniform fixed offset.

    Resize the box to size x size with `crop_resize(..., antialias=True)`: the official code resizes with PIL's
    BILINEAR (AF:datasets/videomae_transforms.py:100,108-109), which torch's antialiased uint8 kernel matches
    within one grey level. The box can reach past a 222-223 px short side (snapped to 224); `crop` pads it black
    as PIL does.
    """
    pairs = msc_pairs(h, w, size, scales, max_distort)
    ch, cw = pairs[int(rng.integers(len(pairs)))]
    offsets = msc_offsets(h, w, ch, cw, more_fix_crop)
    top, left = offsets[int(rng.integers(len(offsets)))]
    return top, left, ch, cw


# --- VideoMAE: random-resized crop ------------------------------------------------------------------------

VM_RRC_SCALE = (0.08, 1.0)
VM_RRC_RATIO = (0.75, 1.3333)  # VM:ssv2.py:184-187 writes 1.3333, not 4/3


def rrc_box(h: int, w: int, rng: np.random.Generator, scale=VM_RRC_SCALE, ratio=VM_RRC_RATIO) -> Box:
    """VideoMAE's random-resized-crop box, `_get_param_spatial_crop` (VM:video_transforms.py:499-538).

    10 tries of area ~ U(scale) * h * w and log-uniform aspect, sides int(round()), kept if they fit; then the
    fallback: the whole frame, or its centre at the nearest allowed aspect. Resize the box with
    `crop_resize(..., antialias=False)`: the official code calls torch's bilinear interpolate without antialias
    (VM:video_transforms.py:568-573).
    """
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        ch, cw = h, w
    return (h - ch) // 2, (w - cw) // 2, ch, cw


# --- VideoMAE: RandAugment, the same draws for every frame ------------------------------------------------

class ClipRandAugment:
    """timm's RandAugment applied with one set of draws to every frame of a clip, as VideoMAE does.

    VideoMAE runs its copy of timm's RandAugment on the list of a clip's frames: each chosen op draws its coin,
    magnitude and sign once and applies them to all frames (VM:rand_augment.py:364-383,462-478), at the decoded
    resolution, before cropping (VM:ssv2.py:161-171). Its hparams are translate_const int(0.45 * img_size)
    (unused by the 'inc1' ops, whose translation is 0.45 of the frame's own side), bicubic, and the default
    fill 128 (VM:video_transforms.py:621-654, VM:rand_augment.py:36,348-356, VM:run_class_finetuning.py:91-96).

    We call the installed timm's transform per frame with Python's and numpy's global RNGs seeded identically
    (one seed drawn from the caller's generator): the draws do not depend on the pixels, so every frame sees
    the same ones. The global states are restored afterwards (not thread-safe; DataLoader workers are
    processes). timm 1.0's op set, probabilities, magnitude noise and level functions equal VideoMAE's copy for
    magnitudes <= 10 (its extra clamps act only above 10): with the same seed the output is pixel-identical to
    VideoMAE's own rand_augment.py (checked on 3000 clips); tests/test_augment.py pins the settings.
    """

    def __init__(self, spec: str = "rand-m7-n4-mstd0.5-inc1", img_size: int = 224):
        from timm.data.auto_augment import rand_augment_transform

        if not spec.startswith("rand"):
            raise ValueError(f"randaugment spec {spec!r} must start with 'rand' (e.g. 'rand-m7-n4-mstd0.5-inc1')")
        hparams = {"translate_const": int(img_size * 0.45), "interpolation": Image.BICUBIC}
        try:
            self.transform = rand_augment_transform(spec, hparams)
        except (AssertionError, ValueError) as e:
            raise ValueError(f"randaugment spec {spec!r} is not a timm RandAugment spec ({e or 'unknown section'})")
        self.spec = spec

    @property
    def op_names(self) -> list[str]:
        return [op.name for op in self.transform.ops]

    def __call__(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """uint8 (C, T, H, W) -> uint8 (C, T, H, W), every frame through the same ops, magnitudes and signs."""
        seed = int(rng.integers(2 ** 32))
        frames = clip.permute(1, 2, 3, 0).numpy()  # (T, H, W, C)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            out = np.empty_like(frames)
            for t, frame in enumerate(frames):
                random.seed(seed)
                np.random.seed(seed)
                out[t] = np.asarray(self.transform(Image.fromarray(frame)))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return torch.from_numpy(out).permute(3, 0, 1, 2)

    def __repr__(self) -> str:
        return f"ClipRandAugment({self.spec!r})"


# --- VideoMAE: random erasing, one box per clip -----------------------------------------------------------

def erase_box(h: int, w: int, rng: np.random.Generator, prob: float = 0.25, area=(0.02, 1 / 3),
              log_aspect=(math.log(0.3), math.log(1 / 0.3))) -> Box | None:
    """The box VideoMAE erases in every frame of a clip, or None (VM:random_erasing.py:109-150, `_erase_cube`).

    One coin with `prob` per clip; then up to 100 tries of area ~ U(area) * h * w and log-uniform aspect,
    kept if both sides are strictly smaller than the frame; none kept -> no erasing. Settings: p 0.25, pixel
    mode, 1 box (VM:run_class_finetuning.py:105-111, VM:ssv2.py:202-212); h, w are the cropped size (224).
    """
    if rng.random() > prob:
        return None
    for _ in range(100):
        target = rng.uniform(*area) * h * w
        aspect = math.exp(rng.uniform(*log_aspect))
        eh = int(round(math.sqrt(target * aspect)))
        ew = int(round(math.sqrt(target / aspect)))
        if ew < w and eh < h:
            return int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1)), eh, ew
    return None


def apply_erasing(x: torch.Tensor, boxes: list[Box | None], generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill each clip's box with fresh N(0, 1) noise per pixel, channel and frame, in place; returns x.

    x: NORMALISED float clips (B, C, T, H, W) on any device, after the crop and flip, before mixup, as in
    VideoMAE where erasing ends the per-clip augmentation (VM:ssv2.py:202-212). `_erase_cube` draws new pixels
    for every frame (VM:random_erasing.py:137-148, `_get_pixels` per frame in pixel mode).
    A `generator`, if given, must live on x's device.
    """
    if len(boxes) != x.shape[0]:
        raise ValueError(f"apply_erasing: {len(boxes)} boxes for a batch of {x.shape[0]} clips")
    for b, box in enumerate(boxes):
        if box is None:
            continue
        top, left, eh, ew = box
        shape = (x.shape[1], x.shape[2], eh, ew)
        x[b, :, :, top:top + eh, left:left + ew] = torch.randn(shape, generator=generator, device=x.device,
                                                               dtype=x.dtype)
    return x


# --- test and validation views ----------------------------------------------------------------------------

def resize_short_side(clip: torch.Tensor, short_side: int = 224) -> torch.Tensor:
    """The official test resize (VM:functional.py:26-74): short side to `short_side`, long side int(), cv2 bilinear.

    A clip whose short side already matches is returned as is, as the official code does.
    """
    h, w = clip.shape[-2:]
    if min(h, w) == short_side:
        return clip
    if w < h:
        nh, nw = int(short_side * h / w), short_side
    else:
        nh, nw = short_side, int(short_side * w / h)
    frames = clip.permute(1, 2, 3, 0).numpy()  # (T, H, W, C)
    out = np.stack([cv2.resize(np.ascontiguousarray(f), (nw, nh), interpolation=cv2.INTER_LINEAR) for f in frames])
    return torch.from_numpy(out.reshape(len(frames), nh, nw, -1)).permute(3, 0, 1, 2)


def view_offsets(long: int, crop: int, num_crops: int) -> list[int]:
    """Offsets along the long side: int(j * (long - crop) / (num_crops - 1)) (VM:ssv2.py:137-145), or for one
    crop the centre int(round((long - crop) / 2)) of the validation view (VM:video_transforms.py:1165-1166)."""
    if num_crops == 1:
        return [int(round((long - crop) / 2.))]
    step = 1.0 * (long - crop) / (num_crops - 1)
    return [int(j * step) for j in range(num_crops)]


def eval_crops(clip: torch.Tensor, short_side: int = 224, crop: int = 224,
                       num_crops: int = 3) -> list[torch.Tensor]:
    """The official spatial test views: `resize_short_side`, then `num_crops` crop x crop views along the long side.

    num_crops 3 is the official 3-CROP (VM:ssv2.py:134-147, VM:kinetics.py:137-152, AF:datasets/kinetics.py:
    162-177); 1 is the validation view, resize then centre crop (VM:ssv2.py:51-58). A square clip is cropped
    along its height, as the official `shape[1] >= shape[2]` test does. Along the short side (equal to `crop`
    in the official settings) a larger short side is centre-cropped.
    """
    if num_crops < 1:
        raise ValueError(f"num_crops must be >= 1, got {num_crops}")
    if crop > short_side:
        raise ValueError(f"crop {crop} is larger than the short side {short_side}")
    clip = resize_short_side(clip, short_side)
    h, w = clip.shape[-2:]
    portrait = h >= w
    long, short = (h, w) if portrait else (w, h)
    across = int(round((short - crop) / 2.))
    views = []
    for along in view_offsets(long, crop, num_crops):
        top, left = (along, across) if portrait else (across, along)
        views.append(clip[..., top:top + crop, left:left + crop])
    return views
