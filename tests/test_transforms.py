"""Clip transforms on uint8 (C, T, H, W) tensors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from video_adapt.data.transforms import (
    normalize_clips,
    random_crop_box,
    resize,
    to_tensor_clip,
)


def _frames(t=4, h=40, w=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_to_tensor_clip_is_a_channels_first_view_and_copies_read_only_input(tmp_path):
    frames = _frames()
    clip = to_tensor_clip(frames)
    assert clip.shape == (3, 4, 40, 60) and clip.dtype == torch.uint8
    assert torch.equal(clip[:, 2], torch.from_numpy(frames[2]).permute(2, 0, 1))
    mapped = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.uint8, shape=frames.shape)
    mapped[:] = frames
    read_only = np.load(tmp_path / "f.npy", mmap_mode="r")
    assert torch.equal(to_tensor_clip(read_only), clip)


@pytest.mark.parametrize("size", [(32, 32), (56, 80), (17, 23)])
def test_uint8_cpu_resize_agrees_with_the_float_kernel(size):
    clip = to_tensor_clip(_frames())[..., 3:37, 5:55]  # a crop: strided input
    out = resize(clip, size)
    assert out.shape == (3, 4, *size) and out.dtype == torch.uint8
    reference = F.interpolate(clip.permute(1, 0, 2, 3).float(), size=size, mode="bilinear", align_corners=False,
                              antialias=True).round().clamp(0, 255).permute(1, 0, 2, 3)
    assert (out.float() - reference).abs().max() <= 1
    assert resize(clip, tuple(clip.shape[-2:])) is clip


def test_random_crop_box_stays_inside_and_respects_the_area_range():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, ch, cw = random_crop_box(40, 60, rng, scale=(0.3, 0.6))
        assert 0 <= top and top + ch <= 40 and 0 <= left and left + cw <= 60
        assert 0.25 <= ch * cw / (40 * 60) <= 0.65


def test_normalize_uses_the_imagenet_statistics():
    x = torch.full((1, 3, 2, 4, 4), 255, dtype=torch.uint8)
    out = normalize_clips(x)
    assert torch.allclose(out[0, :, 0, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))
