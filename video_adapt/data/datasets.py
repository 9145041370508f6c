"""Training and test datasets over a tube store. No video decoder is imported here.

Randomness (which stored view, which sub-frames, crop, flip, RandAugment) comes from a generator seeded by
(seed, epoch, index), so a clip does not depend on worker count, process rank or restarts: 1 and N processes
see the same clips, and a resumed run sees what the uninterrupted run saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from video_adapt.data.sampling import subsample_positions
from video_adapt.data.transforms import (
    crop_resize,
    parse_randaugment,
    rand_augment,
    random_crop_box,
    spatial_crops,
    to_tensor_clip,
)
from video_adapt.data.tubes import TEST_VIEW, TRAIN_VIEW, StoreError, TubeStore


def _labels(store: TubeStore, split: str) -> tuple[list[int], list[int], list[str]]:
    s = store.split(split)
    rows = s.video_rows
    labels = [int(s.videos[r]["label"]) for r in rows]
    ids = [s.videos[r]["id"] for r in rows]
    return rows, labels, ids


class TubeTrainDataset(Dataset):
    """Random training clips: uint8 (3, T, img, img) and the label.

    flip=None takes the store's default (off for SSv2-like data, where left/right is part of the label).
    """

    def __init__(self, root: str, split: str = "train", num_frames: int = 8, img_size: int = 224, flip: bool | None = None,
                 scale: tuple[float, float] = (0.08, 1.0), randaugment: str | None = None, seed: int = 0,
                 decode: str = "worker"):
        if decode not in ("worker", "batch"):
            raise ValueError(f"decode must be 'worker' or 'batch', not {decode!r}")
        self.decode = decode
        self.store = TubeStore(root)
        if decode == "batch" and self.store.meta["codec"] != "jpeg":
            raise StoreError(f"{root}: decode='batch' needs a JPEG store (this one is {self.store.meta['codec']})")
        self.split = split
        self.num_frames = num_frames
        self.img_size = img_size
        self.flip = self.store.meta.get("flip", True) if flip is None else flip
        self.scale = tuple(scale)
        self.randaugment = parse_randaugment(randaugment)
        self.seed = seed
        self.epoch = 0
        self.rule = self.store.meta["sampling"]
        self.rows, self.labels, self.video_ids = _labels(self.store, split)
        index = self.store.split(split)
        self._views = [index.tubes_of(r, TRAIN_VIEW) for r in self.rows]
        if not self._views or any(len(v) == 0 for v in self._views):
            raise StoreError(f"{root}: split {split!r} has no training views (prepared as an evaluation split?)")
        self._stored_frames = int(index.tubes[self._views[0][0]][3])
        if num_frames > self._stored_frames:
            raise StoreError(f"{root}: split {split!r} stores {self._stored_frames}-frame tubes, "
                             f"{num_frames} frames were asked for")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | "EncodedClip", int]:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        views = self._views[i]
        tube = int(views[rng.integers(0, len(views))])
        positions = subsample_positions(self._stored_frames, self.num_frames, self.rule, train=True, rng=rng)
        h, w = (int(v) for v in self.store.split(self.split).tubes[tube][5:7])
        box = random_crop_box(h, w, rng, scale=self.scale)
        flip = bool(self.flip and rng.random() < 0.5)
        augment_seed = int(rng.integers(0, 2**31)) if self.randaugment is not None else None
        plan = EncodedClip([], box, self.img_size, flip, self.randaugment, augment_seed)
        if self.decode == "batch":  # JPEG bytes travel; the batch is decoded at once, on the GPU when training there
            plan.payloads = [torch.frombuffer(bytearray(p), dtype=torch.uint8)
                             for p in self.store.payloads(self.split, tube, positions)]
            return plan, self.labels[i]
        return plan.finish(to_tensor_clip(self.store.frames(self.split, tube, positions))), self.labels[i]


@dataclass
class EncodedClip:
    """A training clip before decoding: its JPEG frames and the augmentation already drawn for it."""

    payloads: list[torch.Tensor]
    box: tuple[int, int, int, int]
    size: int
    flip: bool
    randaugment: tuple[int, int] | None
    augment_seed: int | None

    def finish(self, clip: torch.Tensor) -> torch.Tensor:
        """Decoded uint8 (3, T, H, W) -> the augmented training clip (same result on any device)."""
        clip = crop_resize(clip, self.box, self.size)
        if self.flip:
            clip = clip.flip(-1)
        if self.randaugment is not None:
            clip = rand_augment(clip, *self.randaugment, seed=self.augment_seed)
        return clip


def collate_encoded(batch: list[tuple[EncodedClip, int]]) -> tuple[list[EncodedClip], torch.Tensor]:
    """DataLoader collate for decode='batch': clips stay encoded, labels become a tensor."""
    return [clip for clip, _ in batch], torch.tensor([label for _, label in batch])


def decode_batch(clips: list[EncodedClip], device: torch.device | str = "cpu") -> torch.Tensor:
    """All frames of a batch through one `torchvision.io.decode_jpeg` call (nvJPEG on CUDA); uint8 (B, 3, T, S, S)."""
    import warnings
    payloads = [p for clip in clips for p in clip.payloads]
    with warnings.catch_warnings():  # torchvision 0.29 points to torchcodec; decode_jpeg still works
        warnings.simplefilter("ignore", (UserWarning, DeprecationWarning))
        from torchvision.io import decode_jpeg
        frames = decode_jpeg(payloads, device=device)
    out, at = [], 0
    for clip in clips:
        t = len(clip.payloads)
        out.append(clip.finish(torch.stack(frames[at:at + t], dim=1)))
        at += t
    return torch.stack(out)


class TubeTestDataset(Dataset):
    """Every test view of a video: uint8 (V, 3, T, img, img) with V = stored clips x spatial crops."""

    def __init__(self, root: str, split: str = "val", num_frames: int = 8, img_size: int = 224, num_crops: int = 3):
        self.store = TubeStore(root)
        self.split = split
        self.num_frames = num_frames
        self.img_size = img_size
        self.num_crops = num_crops
        self.rows, self.labels, self.video_ids = _labels(self.store, split)
        index = self.store.split(split)
        self._clips = [index.tubes_of(r, TEST_VIEW, num_frames) for r in self.rows]
        if not self._clips or any(len(c) == 0 for c in self._clips):
            have = sorted(set(index.tubes[index.tubes[:, 1] == TEST_VIEW, 3].tolist()))
            raise StoreError(f"{root}: split {split!r} has no {num_frames}-frame test views (has {have})")
        self.views_per_video = len(self._clips[0]) * num_crops

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        views = []
        for tube in self._clips[i]:
            clip = to_tensor_clip(self.store.frames(self.split, int(tube)))
            views += spatial_crops(clip, self.img_size, self.num_crops)
        return torch.stack(views), self.labels[i], i


def describe(store: TubeStore) -> dict[str, Any]:
    """Videos per class and split, frames and bytes: what `data_prep.check` prints."""
    out: dict[str, Any] = {}
    for split in store.meta.get("splits", {}):
        s = store.split(split)
        counts = np.bincount([int(s.videos[r]["label"]) for r in s.video_rows], minlength=len(store.classes))
        out[split] = {"videos": len(s.video_rows), "tubes": len(s.tubes), "frames": int(len(s.frame_offset)),
                      "bytes": int(s.frame_length.sum()), "per_class": counts.tolist(), "failed": len(s.failed)}
    return out
