"""Training and test clips from a frame store or straight from video files, by the official rules.

A dataset is a `VideoSource` (where the frames come from) and a view spec (which frames and which spatial
augmentation). Every epoch draws a fresh temporal sample from the whole video with the protocol's rule
(`sampling.py`) and fresh spatial augmentation (`augment.py`), as the official loaders do.

Randomness comes from a generator seeded by (seed, epoch, index), so a clip does not depend on worker count,
process rank or restarts: 1 and N processes see the same clips, and a resumed run sees what the uninterrupted run
saw. Clips stay uint8 through the loader; normalisation and random erasing (which fills normalised noise) happen
on the device (`normalize_and_erase`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from video_adapt.data.augment import ClipRandAugment, apply_erasing, erase_box, msc_box, rrc_box, eval_crops
from video_adapt.data.decode import VideoDecodeError, open_video
from video_adapt.data.sampling import TEST_RULES, TRAIN_RULES, eval_clip_indices, train_indices
from video_adapt.data.store import FrameStore, StoreError, class_counts, label_indices
from video_adapt.data.transforms import crop_resize, normalize_clips, to_tensor_clip

NO_BOX = (-1, -1, -1, -1)


# ----------------------------------------------------------------------------------------------- sources
class StoredVideo:
    """One video of a store split: its stored frame count and random access to its frames."""

    def __init__(self, store: FrameStore, split: str, index: int):
        self.store, self.split, self.index = store, split, index
        self.num_frames = store.split(split).stored_frames(index)

    @property
    def size(self) -> tuple[int, int]:
        cols = self.store.split(self.split).columns
        return int(cols["video_height"][self.index]), int(cols["video_width"][self.index])

    def read(self, positions: np.ndarray) -> np.ndarray:
        return self.store.frames(self.split, self.index, positions)

    def payloads(self, positions: np.ndarray) -> list[torch.Tensor]:
        return [torch.frombuffer(bytearray(p), dtype=torch.uint8)
                for p in self.store.payloads(self.split, self.index, positions)]


def multi_hot(indices: Sequence[int], num_classes: int) -> np.ndarray:
    """A multi-label video's target: float32 (C,), 1 at its classes."""
    target = np.zeros(num_classes, np.float32)
    target[list(indices)] = 1.0
    return target


def labels_tensor(labels: Sequence[Any]) -> torch.Tensor:
    """A batch's labels as one tensor: class indices (B,), or multi-hot targets (B, C) of a multi-label task."""
    if len(labels) and isinstance(labels[0], np.ndarray):
        return torch.from_numpy(np.stack(labels))
    return torch.as_tensor(labels)


class VideoSource:
    """A labelled list of videos the sampling rules can read: `video(i)` has `num_frames` and `read(positions)`.
    Labels are class indices, or for a multi-label source float32 multi-hot targets (C,)."""

    classes: list[str]
    labels: list[Any]
    ids: list[str]
    multilabel: bool = False
    keep_every: int = 1  # the rules' stride is divided by this (a store may keep every k-th frame)
    codec: str = "video"
    flip_allowed: bool = True
    dataset: str = "other"

    def __len__(self) -> int:
        return len(self.labels)

    def video(self, i: int) -> Any:
        raise NotImplementedError


class StoreSource(VideoSource):
    """One split of a frame store (the fast path: no video decoder, frames by memory-mapped random access).

    `cache_mb` > 0 keeps up to that many MB of decoded JPEG frames in memory per process, and decodes the whole split
    up front when it fits (see `FrameStore`)."""

    def __init__(self, root: str | Path, split: str, cache_mb: int = 0):
        self.store = FrameStore(root, cache_bytes=cache_mb * 2**20)
        self.root, self.split = str(root), split
        index = self.store.split(split)
        self.classes = self.store.classes
        self.multilabel = self.store.meta.multilabel
        cells = [index.videos[r]["label"] for r in index.video_rows]
        self.labels = [multi_hot(label_indices(c), len(self.classes)) for c in cells] if self.multilabel \
            else [int(c) for c in cells]
        self.ids = [index.videos[r]["id"] for r in index.video_rows]
        self.keep_every = self.store.meta.keep_every
        self.codec = self.store.codec
        self.flip_allowed = self.store.meta.flip
        self.dataset = self.store.meta.dataset
        if not self.labels:
            raise StoreError(f"{root}: split {split!r} holds no videos")
        if cache_mb > 0:
            self.store.preload(split)

    def video(self, i: int) -> StoredVideo:
        return StoredVideo(self.store, self.split, i)


class FileSource(VideoSource):
    """Video files decoded on the fly in the loader's workers (decord first, as the official loaders)."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int | Sequence[int]], classes: Sequence[str],
                 ids: Sequence[str] | None = None, flip_allowed: bool = True, dataset: str = "other",
                 multilabel: bool = False):
        self.paths = [str(p) for p in paths]
        self.classes = list(classes)
        self.multilabel = multilabel
        self.labels = [multi_hot(label, len(self.classes)) for label in labels] if multilabel \
            else [int(label) for label in labels]
        self.ids = list(ids) if ids is not None else [Path(p).stem for p in self.paths]
        self.flip_allowed = flip_allowed
        self.dataset = dataset
        if not self.paths:
            raise StoreError("no videos in the list")

    def video(self, i: int):
        return open_video(self.paths[i])


def effective_stride(stride: int, keep_every: int, rule: str) -> int:
    """The rule's stride on a store that kept every k-th frame: exact only when k divides it. Segment rules
    (seg, ssv2) have no stride and take the stored frames as they are."""
    if rule in ("seg", "ssv2"):
        return 1
    if stride % keep_every:
        raise StoreError(f"stride {stride} is not a multiple of the store's keep_every {keep_every}; "
                         "prepare with a keep_every that divides the sampling stride")
    return stride // keep_every


# ----------------------------------------------------------------------------------------------- views
@dataclass(frozen=True)
class TrainView:
    """How training clips are drawn: the training half of a data protocol."""

    num_frames: int = 8
    img_size: int = 224
    sampling: str = "tsn"  # tsn | lin | seg
    stride: int = 4
    crop: str = "msc"  # msc (multi-scale corner crop) | rrc (random resized crop)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # rrc area range
    flip: bool = False
    randaugment: str | None = None  # e.g. "rand-m7-n4-mstd0.5-inc1"
    reprob: float = 0.0  # random erasing probability (one box per clip)
    num_sample: int = 1  # independently augmented copies of each clip in the batch (repeated augmentation)

    def __post_init__(self) -> None:
        if self.sampling not in TRAIN_RULES:
            raise ValueError(f"unknown training sampling {self.sampling!r}; use one of {', '.join(TRAIN_RULES)}")
        if self.crop not in ("msc", "rrc"):
            raise ValueError(f"unknown training crop {self.crop!r}; use msc or rrc")
        if self.num_sample < 1:
            raise ValueError("num_sample must be at least 1")


@dataclass(frozen=True)
class EvalView:
    """Every test view of a video: temporal clips x spatial crops (the test half of a data protocol)."""

    num_frames: int = 8
    img_size: int = 224
    sampling: str = "dense"  # dense | ssv2
    stride: int = 4
    clips: int = 4
    crops: int = 3
    short_side: int = 224

    def __post_init__(self) -> None:
        if self.sampling not in TEST_RULES:
            raise ValueError(f"unknown test sampling {self.sampling!r}; use one of {', '.join(TEST_RULES)}")

    @property
    def views(self) -> int:
        return self.clips * self.crops


@dataclass
class SpatialPlan:
    """The spatial augmentation drawn for one clip, applied after decoding (in the worker, or on the GPU)."""

    box: tuple[int, int, int, int]
    size: int
    antialias: bool
    flip: bool
    erase: tuple[int, int, int, int] = NO_BOX

    @classmethod
    def draw(cls, height: int, width: int, view: TrainView, rng: np.random.Generator) -> "SpatialPlan":
        if view.crop == "msc":  # AF:datasets/videomae_transforms.py:92-162 (PIL bilinear resize)
            box, antialias = msc_box(height, width, rng, size=view.img_size), True
        else:  # VM:video_transforms.py:499-573 (torch bilinear, no antialias)
            box, antialias = rrc_box(height, width, rng, scale=view.crop_scale), False
        flip = bool(view.flip and rng.random() < 0.5)
        erase = erase_box(view.img_size, view.img_size, rng, prob=view.reprob) if view.reprob > 0 else None
        return cls(tuple(box), view.img_size, antialias, flip, tuple(erase) if erase is not None else NO_BOX)

    def apply(self, clip: torch.Tensor) -> torch.Tensor:
        clip = crop_resize(clip, self.box, self.size, antialias=self.antialias)
        return clip.flip(-1) if self.flip else clip


@dataclass
class EncodedClip:
    """A training clip before decoding: its JPEG frames and the augmentation already drawn for it."""

    payloads: list[torch.Tensor]
    plan: SpatialPlan = field(default_factory=lambda: SpatialPlan(NO_BOX, 0, False, False))


class TrainClips(Dataset):
    """Training clips: (uint8 (S, 3, T, img, img), label, erase boxes (S, 4)) with S = view.num_sample copies.

    decode="batch" (JPEG stores, no RandAugment, one copy) returns the clip still encoded, for one batched
    `decode_jpeg` call per batch on the GPU (`decode_batch`).
    """

    def __init__(self, source: VideoSource, view: TrainView, seed: int = 0, decode: str = "worker"):
        if decode not in ("worker", "batch"):
            raise ValueError(f"decode must be 'worker' or 'batch', not {decode!r}")
        if decode == "batch" and (source.codec != "jpeg" or view.randaugment or view.num_sample > 1):
            raise StoreError("decode='batch' needs a JPEG store, no RandAugment and num_sample 1")
        self.source, self.view, self.seed, self.decode = source, view, seed, decode
        self.stride = effective_stride(view.stride, source.keep_every, view.sampling)
        self.randaugment = ClipRandAugment(view.randaugment, img_size=view.img_size) if view.randaugment else None
        self.epoch = 0
        self._warned: set[int] = set()

    @property
    def labels(self) -> list[int]:
        return self.source.labels

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def _open(self, i: int) -> tuple[int, Any]:
        """The video, or for a file that fails to decode the next readable one (warned once): one corrupt
        video must not stop a long run."""
        for k in range(len(self.source)):
            j = (i + k) % len(self.source)
            try:
                return j, self.source.video(j)
            except VideoDecodeError as err:
                if j not in self._warned:
                    self._warned.add(j)
                    warnings.warn(f"skipping unreadable training video: {err}", stacklevel=2)
        raise StoreError("no training video could be decoded")

    def __getitem__(self, i: int):
        rng = np.random.default_rng((self.seed, self.epoch, i))
        j, video = self._open(i)
        label = self.source.labels[j]
        idx = train_indices(self.view.sampling, video.num_frames, self.view.num_frames, self.stride, rng)
        if self.decode == "batch":
            plan = SpatialPlan.draw(*video.size, self.view, rng)
            return EncodedClip(video.payloads(idx), plan), label
        clip = to_tensor_clip(video.read(idx))
        copies, boxes = [], []
        for _ in range(self.view.num_sample):  # VM:ssv2.py:93-103: one temporal sample, independent augmentation
            augmented = self.randaugment(clip, rng) if self.randaugment is not None else clip
            plan = SpatialPlan.draw(*augmented.shape[-2:], self.view, rng)
            copies.append(plan.apply(augmented))
            boxes.append(plan.erase)
        # one copy: a view, not a stacked copy (the collate copies every clip into the batch once anyway)
        clips = copies[0].unsqueeze(0) if len(copies) == 1 else torch.stack(copies)
        return clips, label, torch.tensor(boxes, dtype=torch.int64)


def collate_encoded(batch: list[tuple[EncodedClip, int]]) -> tuple[list[EncodedClip], torch.Tensor]:
    """DataLoader collate for decode='batch': clips stay encoded, labels become a tensor."""
    return [clip for clip, _ in batch], labels_tensor([label for _, label in batch])


def decode_batch(clips: list[EncodedClip], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """All frames of a batch through one `torchvision.io.decode_jpeg` call (nvJPEG on CUDA), then each clip's plan:
    uint8 (B, 1, 3, T, S, S) and erase boxes (B, 1, 4), the worker path's shapes."""
    payloads = [p for clip in clips for p in clip.payloads]
    with warnings.catch_warnings():  # torchvision 0.29 points to torchcodec; decode_jpeg still works
        warnings.simplefilter("ignore", (UserWarning, DeprecationWarning))
        from torchvision.io import decode_jpeg
        frames = decode_jpeg(payloads, device=device)
    out, at = [], 0
    for clip in clips:
        t = len(clip.payloads)
        out.append(clip.plan.apply(torch.stack(frames[at:at + t], dim=1)))
        at += t
    boxes = torch.tensor([[clip.plan.erase] for clip in clips], dtype=torch.int64)
    return torch.stack(out).unsqueeze(1), boxes


def normalize_and_erase(clips: torch.Tensor, boxes: torch.Tensor | None, device: torch.device,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 clips (B, 3, T, H, W) -> normalised floats on the device, with their random-erasing boxes filled by
    fresh N(0, 1) noise per frame (VM:random_erasing.py:109-150: erasing follows normalisation)."""
    x = normalize_clips(clips.to(device, non_blocking=True))
    if boxes is not None and bool((boxes[:, 0] >= 0).any()):
        x = apply_erasing(x, [tuple(int(v) for v in b) if b[0] >= 0 else None for b in boxes], generator)
    return x


class EvalClips(Dataset):
    """Every test view of a video: (uint8 (V, 3, T, img, img), label, index), V = clips x crops, in the protocol's
    order (clip-major)."""


    def __init__(self, source: VideoSource, view: EvalView):
        self.source, self.view = source, view
        self.stride = effective_stride(view.stride, source.keep_every, view.sampling)

    @property
    def labels(self) -> list[int]:
        return self.source.labels

    @property
    def video_ids(self) -> list[str]:
        return self.source.ids

    @property
    def views_per_video(self) -> int:
        return self.view.views

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        video = self.source.video(i)
        return views_of(video, self.view, self.stride), self.source.labels[i], i


def views_of(video: Any, view: EvalView, stride: int, start: int = 0, end: int | None = None) -> torch.Tensor:
    """uint8 (V, 3, T, S, S): the test views of frames [start, end) of an opened video (store or file)."""
    return views_of_windows(video, view, stride, [(start, video.num_frames if end is None else end)])[0]


def views_of_windows(video: Any, view: EvalView, stride: int, windows: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """The test views of each window [start, end) of an opened video, uint8 (V, 3, T, S, S) each. The frames of all
    windows are read in one call: a decoder without random access decodes the video once per call, not per window."""
    clips = [[idx + start for idx in eval_clip_indices(view.sampling, end - start, view.num_frames, stride, view.clips)]
             for start, end in windows]
    wanted = np.unique(np.concatenate([idx for window in clips for idx in window]))
    frames = video.read(wanted)
    lookup = {int(f): k for k, f in enumerate(wanted)}
    out = []
    for window in clips:
        views = []
        for idx in window:
            clip = to_tensor_clip(frames[[lookup[int(f)] for f in idx]])
            views += eval_crops(clip, short_side=view.short_side, crop=view.img_size, num_crops=view.crops)
        out.append(torch.stack(views))
    return out


class MonitorClips(Dataset):
    """The per-epoch validation view (VAL-EPOCH): one clip by the training rule, resized so the short side is the
    input size, centre-cropped (AF:datasets/kinetics.py:73-80; VM:ssv2.py:51-58). Monitoring only: the reported
    number is the final multi-view test. The temporal draw is fixed per video so epochs are comparable."""

    def __init__(self, source: VideoSource, view: TrainView, seed: int = 0):
        self.source, self.view, self.seed = source, view, seed
        self.stride = effective_stride(view.stride, source.keep_every, view.sampling)

    @property
    def labels(self) -> list[int]:
        return self.source.labels

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        rng = np.random.default_rng((self.seed, 1_000_003, i))
        video = self.source.video(i)
        idx = train_indices(self.view.sampling, video.num_frames, self.view.num_frames, self.stride, rng)
        clip = to_tensor_clip(video.read(idx))
        views = eval_crops(clip, short_side=self.view.img_size, crop=self.view.img_size, num_crops=1)
        return torch.stack(views), self.source.labels[i], i


def split_statistics(store: FrameStore) -> dict[str, Any]:
    """Videos per class and split, frames and bytes: what `video-adapt prep check` prints."""
    out: dict[str, Any] = {}
    for split in store.meta.splits:
        s = store.split(split)
        counts = class_counts([s.videos[r]["label"] for r in s.video_rows], len(store.classes))
        out[split] = {"videos": len(s.video_rows), "frames": int(len(s.frame_offset)),
                      "bytes": int(s.frame_length.sum()), "per_class": counts, "failed": len(s.failed)}
    return out
