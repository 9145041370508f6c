"""Validation of a frame store: every frame decodes to its video's size, labels are in range, the counts match
meta.json and no shard is missing or truncated (`video-adapt prep check`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from video_adapt.data.store import FrameStore, StoreError, label_indices


def check_store(root: Path, progress: bool = True) -> list[str]:
    """Problems found (empty when the store is sound)."""
    problems: list[str] = []
    try:
        store = FrameStore(root)
    except StoreError as err:
        return [str(err)]
    num_classes = len(store.classes)
    for split, info in store.meta.splits.items():
        try:
            index = store.split(split)
        except StoreError as err:
            problems.append(str(err))
            continue
        if len(index.video_rows) != info.videos:
            problems.append(f"{root / split}: meta.json says {info.videos} videos, the shards hold "
                            f"{len(index.video_rows)}")
        for row in index.video_rows:
            video = index.videos.get(row)
            if video is None:
                problems.append(f"{root / split}: video row {row} missing from videos.csv")
            elif not _labels_fit(video["label"], num_classes, store.meta.multilabel):
                problems.append(f"{root / split}: video {video['id']} has label {video['label']!r} outside "
                                f"0..{num_classes - 1}" + (" (a set of class indices)" if store.meta.multilabel else ""))
        end = index.frame_offset + index.frame_length
        sizes = [p.stat().st_size if p.exists() else -1 for p in index.shard_paths]
        for k, size in enumerate(sizes):
            in_shard = index.frame_shard == k
            if size < 0:
                problems.append(f"{index.shard_paths[k]}: missing")
            elif in_shard.any() and end[in_shard].max() > size:
                problems.append(f"{index.shard_paths[k]}: truncated ({size} bytes, index needs {end[in_shard].max()})")
        if any(p.startswith(str(index.shard_paths[0].parent)) for p in problems):
            continue
        cols = index.columns
        for i in tqdm(range(len(index)), desc=f"decoding {split}", disable=not progress, leave=False):
            row = index.video_rows[i]
            stored, n, keep = int(cols["video_stored"][i]), int(cols["video_frames"][i]), store.meta.keep_every
            if stored != -(-n // keep):
                problems.append(f"{root / split}: video row {row} stores {stored} frames, expected ceil({n}/{keep})")
                continue
            shape = (stored, int(cols["video_height"][i]), int(cols["video_width"][i]), 3)
            try:
                frames = store.frames(split, i, np.arange(stored))
                if frames.shape != shape:
                    problems.append(f"{root / split}: video row {row} decodes to {frames.shape}, index says {shape}")
            except Exception as err:
                problems.append(f"{root / split}: video row {row} does not decode ({str(err).splitlines()[0][:120]})")
    return problems


def _labels_fit(cell: str, num_classes: int, multilabel: bool) -> bool:
    """A class index in range (or -1, unlabelled); in a multi-label store a set of distinct in-range indices."""
    try:
        indices = label_indices(cell)
    except ValueError:
        return False
    if multilabel:
        return len(set(indices)) == len(indices) and all(0 <= c < num_classes for c in indices)
    return len(indices) == 1 and -1 <= indices[0] < num_classes
