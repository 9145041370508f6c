"""The official spatial augmentations (video_adapt.data.augment), each pinned to the official line it follows.

AF = ShoufaChen/AdaptFormer @6967d67, VM = MCG-NJU/VideoMAE @14ef8d8. Statistical checks draw from fixed seeds
and use 5-sigma bounds, so they are deterministic and hold on any CPU.
"""
import math
import random
from collections import Counter

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import chisquare
from timm.data.auto_augment import NAME_TO_OP

from video_adapt.data import augment as A
from video_adapt.data.transforms import IMAGENET_STD, crop, crop_resize, normalize_clips


def _clip(t=2, h=48, w=64, seed=0) -> torch.Tensor:
    """A smooth picture plus noise, like footage: resize tests on it measure what they would on video."""
    r = np.random.default_rng(seed)
    base = r.integers(0, 256, (t, h // 8 + 2, w // 8 + 2, 3)).astype(np.uint8)
    frames = np.stack([cv2.resize(b, (w, h), interpolation=cv2.INTER_CUBIC) for b in base]).astype(np.int16)
    frames += r.integers(-20, 21, frames.shape).astype(np.int16)
    return torch.from_numpy(np.clip(frames, 0, 255).astype(np.uint8)).permute(3, 0, 1, 2)


def _within(count: int, n: int, p: float) -> bool:
    """count ~ Binomial(n, p) within 5 standard deviations."""
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))


# --- multi-scale crop ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("h, w, sides", [(240, 320, (240, 210, 180, 158)), (240, 427, (240, 210, 180, 158)),
                                         (256, 340, (256, 224, 192, 168)), (222, 300, (224, 194, 166, 146)),
                                         (227, 300, (227, 198, 170, 149))])  # 3 px off: not snapped
def test_msc_pairs_are_the_official_candidates(h, w, sides):
    # AF:datasets/videomae_transforms.py:116-125: sides int(min * s) for s in (1, .875, .75, .66), snapped to 224
    # within 3 px (256 * .875 = 224 exactly; 222 -> 224); pairs with |i - j| <= 1, h index outer, w index inner
    a, b, c, d = sides
    assert A.msc_pairs(h, w) == [(a, a), (a, b), (b, a), (b, b), (b, c), (c, b), (c, c), (c, d), (d, c), (d, d)]
    assert A.msc_pairs(h, w, max_distort=0) == [(a, a), (b, b), (c, c), (d, d)]


@pytest.mark.parametrize("h, w, ch, cw, expected", [
    # steps (320 - 180) // 4 = 35 and (240 - 210) // 4 = 7
    (240, 320, 210, 180, [(0, 0), (0, 140), (28, 0), (28, 140), (14, 70), (14, 0), (14, 140), (28, 70), (0, 70),
                          (7, 35), (7, 105), (21, 35), (21, 105)]),
    # steps 269 // 4 = 67 and 82 // 4 = 20
    (240, 427, 158, 158, [(0, 0), (0, 268), (80, 0), (80, 268), (40, 134), (40, 0), (40, 268), (80, 134), (0, 134),
                          (20, 67), (20, 201), (60, 67), (60, 201)]),
    # steps 116 // 4 = 29 and 32 // 4 = 8
    (256, 340, 224, 224, [(0, 0), (0, 116), (32, 0), (32, 116), (16, 58), (16, 0), (16, 116), (32, 58), (0, 58),
                          (8, 29), (8, 87), (24, 29), (24, 87)]),
])
def test_msc_offsets_are_the_official_13_in_order(h, w, ch, cw, expected):
    # AF:datasets/videomae_transforms.py:141-162 (= VM:transforms.py:140-161), (w, h) there, (top, left) here:
    # 4 corners, centre, centre left/right, lower/upper centre, 4 quarter points
    assert A.msc_offsets(h, w, ch, cw) == expected
    assert A.msc_offsets(h, w, ch, cw, more_fix_crop=False) == expected[:5]


def test_msc_box_draws_a_uniform_pair_then_a_uniform_offset():
    # AF:datasets/videomae_transforms.py:127,136-138: random.choice(pairs), then random.choice(13 offsets); boxes
    # that coincide (here the 240-px crops have a zero vertical step) add their probabilities
    h, w, n = 240, 320, 13000
    expected = Counter()
    for ch, cw in A.msc_pairs(h, w):
        for top, left in A.msc_offsets(h, w, ch, cw):
            expected[(top, left, ch, cw)] += n / (10 * 13)
    rng = np.random.default_rng(0)
    seen = Counter(A.msc_box(h, w, rng) for _ in range(n))
    assert set(seen) == set(expected)
    keys = sorted(expected)
    assert chisquare([seen[k] for k in keys], [expected[k] for k in keys]).pvalue > 1e-4
    assert all(0 <= t and t + ch <= h and 0 <= lf and lf + cw <= w for t, lf, ch, cw in seen)


@pytest.mark.parametrize("h, w", [(240, 320), (222, 300)])
def test_msc_resize_matches_pil_bilinear_within_one_grey_level(h, w):
    # AF:datasets/videomae_transforms.py:100,108-109: PIL crop (black outside the frame), then PIL BILINEAR
    # resize to 224 x 224. Torch's antialiased bilinear agrees within one grey level (mostly exactly).
    clip = _clip(t=1, h=h, w=w)
    rng = np.random.default_rng(1)
    boxes = [A.msc_box(h, w, rng) for _ in range(6)] + [(0, 0, h, w)]
    if h == 222:
        boxes.append((-4, 38, 224, 224))  # a 222-px short side snaps up to a 224 crop that leaves the frame
    for top, left, ch, cw in boxes:
        ours = crop_resize(clip, (top, left, ch, cw), 224, antialias=True)
        for t in range(clip.shape[1]):
            pil = Image.fromarray(clip[:, t].permute(1, 2, 0).numpy()).crop((left, top, left + cw, top + ch))
            ref = torch.from_numpy(np.asarray(pil.resize((224, 224), Image.BILINEAR)).copy()).permute(2, 0, 1)
            diff = (ours[:, t].int() - ref.int()).abs()
            assert diff.max() <= 1 and diff.float().mean() <= 0.3, (top, left, ch, cw)


def test_crop_outside_the_frame_is_black_and_inside_is_a_view():
    clip = _clip(t=1, h=10, w=12)
    out = crop(clip, (-2, 3, 6, 12))
    assert out.shape == (3, 1, 6, 12)
    assert out[..., :2, :].max() == 0 and out[..., :, 9:].max() == 0
    assert torch.equal(out[..., 2:, :9], clip[..., 0:4, 3:12])
    inside = crop(clip, (1, 2, 3, 4))
    assert inside.data_ptr() == clip[..., 1:, 2:].data_ptr() and inside.shape == (3, 1, 3, 4)


# --- random-resized crop ------------------------------------------------------------------------------------

def test_rrc_box_bounds_area_and_aspect():
    # VM:video_transforms.py:499-523: area U(scale) * H * W, aspect exp(U(log ratio)), w = int(round(sqrt(a * r))),
    # h = int(round(sqrt(a / r))), kept if 0 < w <= W and 0 < h <= H; top/left randint inclusive
    assert A.VM_RRC_SCALE == (0.08, 1.0) and A.VM_RRC_RATIO == (0.75, 1.3333)  # VM:ssv2.py:184-187
    rng = np.random.default_rng(0)
    h, w = 240, 427
    fracs, aspects, corners = [], [], Counter()
    for _ in range(3000):
        top, left, ch, cw = A.rrc_box(h, w, rng)
        assert 0 <= top <= h - ch and 0 <= left <= w - cw and ch > 0 and cw > 0
        fracs.append(ch * cw / (h * w))
        aspects.append(cw / ch)
        corners[(top == 0, top == h - ch)] += 1
    assert 0.08 * 0.95 <= min(fracs) and max(fracs) <= 1
    assert 0.75 * 0.97 <= min(aspects) and max(aspects) <= 1.3333 * 1.03
    # with scale (0.08, 0.3) no try is rejected on this frame, so the area is uniform: mean 0.19, sd 0.0635
    small = [A.rrc_box(h, w, rng, scale=(0.08, 0.3)) for _ in range(2000)]
    mean = np.mean([ch * cw / (h * w) for _, _, ch, cw in small])
    assert abs(mean - 0.19) <= 5 * 0.0635 / math.sqrt(2000) + 0.002  # + rounding of the sides


@pytest.mark.parametrize("h, w, expected", [
    (240, 427, (0, 53, 240, 320)),   # wider than 1.3333: full height, w = int(round(240 * 1.3333)) = 320
    (427, 240, (53, 0, 320, 240)),   # taller than 0.75: full width, h = int(round(240 / 0.75)) = 320
    (427, 239, (54, 0, 319, 239)),   # int(round(318.67)) = 319
    (100, 100, (0, 0, 100, 100)),    # aspect inside the range: the whole frame
])
def test_rrc_falls_back_to_the_official_centre_crop(h, w, expected):
    # VM:video_transforms.py:525-538: after 10 failed tries (an impossible scale forces them here)
    assert A.rrc_box(h, w, np.random.default_rng(0), scale=(2.0, 3.0)) == expected


def test_rrc_accepts_a_box_as_tall_as_the_frame():
    # VM:video_transforms.py:520: `0 < h <= height`; a box of the frame's full height is drawn, not the fallback
    # (which would always put it at left 0 here): 10 x 21 frame, area 210, aspect 2 -> 10 x 20, left 0 or 1
    rng = np.random.default_rng(0)
    boxes = {A.rrc_box(10, 21, rng, scale=(1.0, 1.0), ratio=(2.0, 2.0)) for _ in range(50)}
    assert boxes == {(0, 0, 10, 20), (0, 1, 10, 20)}


def test_rrc_resize_matches_the_official_float_interpolation():
    # VM:video_transforms.py:568-573: F.interpolate(bilinear, align_corners=False), no antialias, on the normalised
    # float clip. Interpolation commutes with the per-channel normalisation, so our uint8 crop-resize, normalised
    # afterwards, differs from it by the rounding to uint8: at most one grey level.
    clip = _clip(t=2, h=120, w=200)
    for box in [(10, 20, 90, 150), (0, 0, 40, 30), (5, 7, 113, 190)]:
        ours = normalize_clips(crop_resize(clip, box, 112, antialias=False))
        top, left, ch, cw = box
        official = F.interpolate(normalize_clips(clip)[:, :, top:top + ch, left:left + cw], size=(112, 112),
                                 mode="bilinear", align_corners=False)
        grey = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1) * 255
        assert ((ours - official).abs() * grey).max() <= 1.0 + 1e-3


# --- RandAugment ------------------------------------------------------------------------------------------

# VM:rand_augment.py:404-420 (_RAND_INCREASING_TRANSFORMS), chosen by 'inc1' (VM:rand_augment.py:514-516)
VM_INCREASING_OPS = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                     "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                     "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]


def test_randaugment_settings_are_videomaes():
    aug = A.ClipRandAugment()  # VM:run_class_finetuning.py:91: 'rand-m7-n4-mstd0.5-inc1'
    ra = aug.transform
    assert aug.op_names == VM_INCREASING_OPS
    assert ra.num_layers == 4 and ra.choice_weights is None  # 4 ops with replacement (VM:rand_augment.py:462-478)
    for op in ra.ops:  # VM:rand_augment.py:342-362,453-459: p 0.5, m 7, mstd 0.5; fill 128 (:36,348-352)
        assert (op.prob, op.magnitude, op.magnitude_std) == (0.5, 7, 0.5)
        # bicubic from --train_interpolation (VM:run_class_finetuning.py:95)
        assert op.kwargs == {"fillcolor": (128, 128, 128), "resample": Image.BICUBIC}
    # translation is relative: 0.45 of the frame's own width/height at magnitude 10 (VM:rand_augment.py:234-239)
    translate = ra.ops[VM_INCREASING_OPS.index("TranslateXRel")]
    assert abs(translate.level_fn(10.0, translate.hparams)[0]) == pytest.approx(0.45)
    assert translate.hparams["translate_const"] == 100  # int(224 * 0.45) (VM:video_transforms.py:647); unused by Rel
    with pytest.raises(ValueError, match="randaugment spec"):
        A.ClipRandAugment("augmix-m5")
    with pytest.raises(ValueError, match="randaugment spec"):
        A.ClipRandAugment("rand-m7-q3")


def _recording(aug: A.ClipRandAugment, log: list, passthrough: bool) -> None:
    """Replace every op's function by one that logs (name, level args) and then applies or skips the op."""
    for op in aug.transform.ops:
        original = op.aug_fn

        def fn(img, *args, _name=op.name, _orig=original, **kwargs):
            log.append((_name, args))
            return _orig(img, *args, **kwargs) if passthrough else img
        op.aug_fn = fn


def _magnitude(name: str, args: tuple) -> float | None:
    """The magnitude behind an op's level argument (VM:rand_augment.py:200-239), or None if not invertible."""
    if name == "Rotate":
        return abs(args[0]) / 30 * 10
    if name in ("ShearX", "ShearY"):
        return abs(args[0]) / 0.3 * 10
    if name in ("TranslateXRel", "TranslateYRel"):
        return abs(args[0]) / 0.45 * 10
    if name.endswith("Increasing") and name[:-10] in ("Color", "Contrast", "Brightness", "Sharpness"):
        return abs(args[0] - 1) / 0.9 * 10
    return None


def test_randaugment_draws_are_per_clip_with_videomaes_probabilities():
    # VM:rand_augment.py:364-383 (one coin, magnitude and sign per op for the whole frame list) and 462-478
    aug = A.ClipRandAugment()
    log: list = []
    _recording(aug, log, passthrough=False)
    clip = _clip(t=3, h=8, w=8)
    rng = np.random.default_rng(0)
    n_clips, fired, names, mags, negative, signed = 1500, 0, Counter(), [], 0, 0
    for _ in range(n_clips):
        log.clear()
        aug(clip, rng)
        per_frame = len(log) // 3
        assert log[:per_frame] == log[per_frame:2 * per_frame] == log[2 * per_frame:]  # same draws on every frame
        fired += per_frame
        for name, args in log[:per_frame]:
            names[name] += 1
            m = _magnitude(name, args)
            if m is not None:
                mags.append(m)
            if name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
                signed += 1
                negative += args[0] < 0
    assert _within(fired, 4 * n_clips, 0.5)  # each of 4 ops fires with p = 0.5
    assert chisquare([names[k] for k in VM_INCREASING_OPS]).pvalue > 1e-4  # uniform over the 15 ops
    assert _within(negative, signed, 0.5)
    mags = np.array(mags)  # N(7, 0.5) clipped to [0, 10]
    assert abs(mags.mean() - 7) <= 5 * 0.5 / math.sqrt(len(mags)) and abs(mags.std() - 0.5) <= 0.05
    assert mags.min() >= 0 and mags.max() <= 10


def test_randaugment_applies_the_recorded_ops_to_each_frame_and_restores_global_rng():
    aug = A.ClipRandAugment()
    log: list = []
    _recording(aug, log, passthrough=True)
    clip = _clip(t=3, h=40, w=56, seed=3)
    clip[:, 2] = clip[:, 0]  # identical frames must stay identical
    random.seed(123)
    np.random.seed(123)
    py_state, np_state = random.getstate(), np.random.get_state()
    rng = np.random.default_rng(5)
    geometric = 0
    for _ in range(40):
        log.clear()
        out = aug(clip, rng)
        assert out.shape == clip.shape and out.dtype == torch.uint8
        assert torch.equal(out[:, 0], out[:, 2])
        ops = log[:len(log) // 3]
        geometric += any(name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel") for name, _ in ops)
        for t in range(3):  # replaying the draws with timm's op functions on the frame alone gives that frame
            img = Image.fromarray(clip[:, t].permute(1, 2, 0).numpy())
            for name, args in ops:
                img = NAME_TO_OP[name](img, *args, fillcolor=(128, 128, 128), resample=Image.BICUBIC)
            assert torch.equal(out[:, t], torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
    assert geometric >= 10
    assert random.getstate() == py_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))


def test_randaugment_is_a_function_of_the_generator():
    aug, clip = A.ClipRandAugment(), _clip(t=2, h=24, w=32)
    a = [aug(clip, np.random.default_rng(s)) for s in range(6)]
    assert all(torch.equal(x, aug(clip, np.random.default_rng(s))) for s, x in enumerate(a))
    assert sum(not torch.equal(a[0], x) for x in a[1:]) >= 4


# --- random erasing ---------------------------------------------------------------------------------------

def test_erase_box_rate_bounds_and_area():
    # VM:random_erasing.py:109-137: one coin (p 0.25, VM:run_class_finetuning.py:105), up to 100 tries,
    # h = int(round(sqrt(a * r))), w = int(round(sqrt(a / r))), kept if h < H and w < W
    rng = np.random.default_rng(0)
    n, h, w = 4000, 224, 224
    boxes = [A.erase_box(h, w, rng) for _ in range(n)]
    kept = [b for b in boxes if b is not None]
    assert _within(len(kept), n, 0.25)
    for top, left, eh, ew in kept:
        assert eh < h and ew < w and 0 <= top <= h - eh and 0 <= left <= w - ew
        assert 0.02 * 0.9 <= eh * ew / (h * w) <= 1 / 3 * 1.1 and 0.3 * 0.9 <= eh / ew <= 1 / 0.3 * 1.1
    # up to 100 tries: here about 1 in 14 fits, so 10 tries would leave half the clips unerased
    hard = [A.erase_box(20, 20, rng, prob=1.0, area=(0.8, 1.0)) for _ in range(500)]
    assert sum(b is None for b in hard) <= 10 and all(b[2] < 20 and b[3] < 20 for b in hard if b is not None)
    # when no box fits, the clip is not erased even though the coin said so
    assert all(A.erase_box(10, 10, rng, prob=1.0, area=(0.99, 1.0), log_aspect=(0.0, 0.0)) is None for _ in range(20))
    assert A.erase_box(10, 10, rng, prob=0.0) is None


def test_apply_erasing_one_box_per_clip_fresh_noise_per_frame():
    # VM:random_erasing.py:137-148 (`_erase_cube`): the same box in every frame, `_get_pixels` called per frame
    x = torch.zeros(3, 3, 4, 32, 32)
    boxes = [(2, 3, 10, 12), None, (0, 0, 5, 31)]
    out = A.apply_erasing(x.clone(), boxes, generator=torch.Generator().manual_seed(0))
    inside = torch.zeros_like(x, dtype=torch.bool)
    inside[0, :, :, 2:12, 3:15] = True
    inside[2, :, :, 0:5, 0:31] = True
    assert (out[~inside] == 0).all() and (out[inside] != 0).all()
    box = out[0, :, :, 2:12, 3:15]
    for t in range(1, 4):
        assert not torch.equal(box[:, t], box[:, 0])  # fresh pixels per frame
    assert not torch.equal(box[0], box[1])  # and per channel
    noise = out[inside]
    assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1  # N(0, 1) on the normalised scale
    again = A.apply_erasing(x.clone(), boxes, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match="2 boxes for a batch of 3"):
        A.apply_erasing(x, boxes[:2])


# --- test and validation views ----------------------------------------------------------------------------

@pytest.mark.parametrize("h, w, resized, offsets", [
    (240, 427, (224, 398), [0, 87, 174]),   # int(224 * 427 / 240) = 398; int(j * 174 / 2)
    (427, 240, (398, 224), [0, 87, 174]),   # portrait: crops along the height
    (256, 340, (224, 297), [0, 36, 73]),    # int(224 * 340 / 256) = 297; int(1 * 73 / 2) = 36
    (224, 300, (224, 300), [0, 38, 76]),    # short side already 224: not resized
    (224, 299, (224, 299), [0, 37, 75]),    # int(37.5) = 37
    (240, 240, (224, 224), [0, 0, 0]),      # square: three equal crops
])
def test_three_crop_offsets_and_sizes(h, w, resized, offsets):
    # VM:functional.py:26-74 + get_resize_sizes (int(), cv2 INTER_LINEAR, unchanged if the short side matches);
    # VM:ssv2.py:137-145 (= VM:kinetics.py:137-152, AF:datasets/kinetics.py:162-177): spatial_step =
    # (long - 224) / 2, start int(j * step), along the height when H >= W
    clip = _clip(t=2, h=h, w=w)
    big = A.resize_short_side(clip)
    assert tuple(big.shape[-2:]) == resized
    if (h, w) == resized:
        assert big is clip
    else:
        frames = clip.permute(1, 2, 3, 0).numpy()
        ref = np.stack([cv2.resize(np.ascontiguousarray(f), resized[::-1], interpolation=cv2.INTER_LINEAR)
                        for f in frames])
        assert torch.equal(big, torch.from_numpy(ref).permute(3, 0, 1, 2))  # exactly the official resize
    views = A.eval_crops(clip, 224, 224, 3)
    assert len(views) == 3 and all(v.shape == (3, 2, 224, 224) for v in views)
    portrait = resized[0] >= resized[1]
    assert A.view_offsets(max(resized), 224, 3) == offsets
    for v, off in zip(views, offsets):
        ref = big[..., off:off + 224, :] if portrait else big[..., :, off:off + 224]
        assert torch.equal(v, ref)


def test_single_view_is_the_validation_centre_crop():
    # VM:ssv2.py:51-58: Resize(224) then CenterCrop(224), x1 = int(round((W - 224) / 2.)) (VM:video_transforms.py:
    # 1165-1166): 87 for 398, round(36.5) = 36 for 297, round(37.5) = 38 for 299 (Python rounds half to even)
    for (h, w), off in [((240, 427), 87), ((256, 340), 36), ((427, 240), 87), ((224, 299), 38)]:
        clip = _clip(t=1, h=h, w=w)
        (view,) = A.eval_crops(clip, num_crops=1)
        big = A.resize_short_side(clip)
        ref = big[..., off:off + 224, :] if h > w else big[..., off:off + 224]
        assert torch.equal(view, ref)
    with pytest.raises(ValueError, match="larger than the short side"):
        A.eval_crops(_clip(), 112, 128)
    with pytest.raises(ValueError, match="num_crops"):
        A.eval_crops(_clip(), num_crops=0)
