"""Lists of labelled videos: class folders (`<class>/<video>`), list files of `path label` lines, and the official
split files of SSv2 (label JSON files) and HMDB51 (`<class>_test_split<k>.txt`).

Shared by `data_prep.folder` (which prepares a frame store from them) and training straight from video files
(`data.source: videos`). List files: one video per line, `path label` separated by a space, tab or comma
(VideoMAE's train.csv / val.csv work as they are); the label is a class index or a class name; paths are relative
to a root and may not escape it (such lines are kept with an error, so one bad line never stops a job).
Multi-label lists (`multilabel=True`): everything after the path is the video's set of labels, `path l1 l2 l3` or
`path,l1,l2` (indices or names, any of the same separators; a path alone: none of the classes).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from video_adapt.data.decode import VIDEO_EXTENSIONS
from video_adapt.data.prepare import PrepError, VideoEntry

HMDB51_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>[123])\.txt$")


def scan_class_folders(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[VideoEntry]]:
    """`root/<class>/<video>`: classes are the sorted folder names (or the given list)."""
    if not root.is_dir():
        raise PrepError(f"{root}: no such directory")
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    classes = classes or found
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise PrepError(f"{root}: class folders {unknown} are not among the training classes")
    entries = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and (path.suffix.lower() in VIDEO_EXTENSIONS or not path.suffix):
                entries.append(VideoEntry(str(path.relative_to(root).with_suffix("")), str(path), label))
    if not entries:
        raise PrepError(f"{root}: no videos found in class folders")
    return classes, entries


def read_list(path: Path, root: Path, classes: list[str] | None,
              multilabel: bool = False) -> tuple[list[str], list[VideoEntry]]:
    """`path label` lines; labels are indices or class names. Paths escaping `root` are refused per line.
    `multilabel`: `path label label ...`, the labels after the path a set (a tuple of class indices per entry)."""
    if not path.is_file():
        raise PrepError(f"{path}: no such list file")
    lines = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"[,\t ]+", line)
        if multilabel:
            lines.append((parts[0], parts[1:], n))
            continue
        if len(parts) < 2:
            raise PrepError(f"{path}:{n}: expected 'path label', got {line!r}")
        lines.append((parts[0], [parts[-1] if len(parts) == 2 else parts[1]], n))
    labels = [label for _, names, _ in lines for label in names]
    names_are_ints = all(re.fullmatch(r"-?\d+", label) for label in labels)
    if classes is None:
        if names_are_ints:
            classes = [str(i) for i in range(max((int(l) for l in labels), default=-1) + 1)]
        else:
            classes = sorted(set(labels))
    root_resolved = root.resolve()
    entries = []
    for rel, names, n in lines:
        indices = []
        for label in names:
            if names_are_ints:
                index = int(label)
                if not 0 <= index < len(classes):
                    raise PrepError(f"{path}:{n}: label {index} out of range 0..{len(classes) - 1}")
            elif label in classes:
                index = classes.index(label)
            else:
                raise PrepError(f"{path}:{n}: unknown class {label!r}")
            indices.append(index)
        full = (root / rel).resolve()
        error = None
        if root_resolved not in full.parents and full != root_resolved:
            error = f"{rel}: path escapes --root {root}; refused"
        label = tuple(sorted(set(indices))) if multilabel else indices[0]
        entries.append(VideoEntry(os.path.splitext(rel)[0], str(full), label, error))
    return classes, entries


def holdout(entries: list[VideoEntry], fraction: float, seed: int) -> tuple[list[VideoEntry], list[VideoEntry]]:
    """Every class keeps at least one training video; about `fraction` of each class goes to validation. Multi-label
    videos have no one class: about `fraction` of all of them, at random (at least one stays for training)."""
    rng = np.random.default_rng(seed)
    multilabel = any(isinstance(e.label, tuple) for e in entries)
    groups = [entries] if multilabel else [[e for e in entries if e.label == label]
                                           for label in sorted({e.label for e in entries})]
    train, val = [], []
    for items in groups:
        order = rng.permutation(len(items))
        k = min(int(round(fraction * len(items))), len(items) - 1)
        val += [items[i] for i in sorted(order[:k])]
        train += [items[i] for i in sorted(order[k:])]
    return train, val


def read_json(path: Path) -> Any:
    """A JSON file, or a one-line error naming it."""
    if not path.is_file():
        raise PrepError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PrepError(f"{path}: not valid JSON ({err})") from None


def ssv2_classes(labels_dir: Path) -> list[str]:
    """SSv2's class names ordered by their index in labels.json (template -> index as a string)."""
    mapping = read_json(labels_dir / "labels.json")
    by_index = sorted(((int(i), name) for name, i in mapping.items()))
    if [i for i, _ in by_index] != list(range(len(by_index))):
        raise PrepError(f"{labels_dir / 'labels.json'}: class indices are not 0..{len(by_index) - 1}")
    return [name for _, name in by_index]


def ssv2_entries(labels_dir: Path, split_file: str, videos: Path, classes: list[str],
                 labelled: bool = True, extension: str = "webm") -> list[VideoEntry]:
    """The videos of an SSv2 split file (`train.json`, `validation.json`, `test.json`), `<id>.<extension>` in
    `videos`: templates are matched to labels.json with their [brackets] removed; templates it lacks stop the job."""
    items = read_json(labels_dir / split_file)
    index = {name: i for i, name in enumerate(classes)}
    entries, unknown = [], set()
    for item in items:
        label = -1
        if labelled:
            template = item["template"].replace("[", "").replace("]", "")
            if template not in index:
                unknown.add(template)
                continue
            label = index[template]
        entries.append(VideoEntry(str(item["id"]), str(videos / f"{item['id']}.{extension}"), label))
    if unknown:
        shown = "; ".join(sorted(unknown)[:5])
        raise PrepError(f"{labels_dir / split_file}: {len(unknown)} templates not in labels.json: {shown}")
    return entries


def hmdb51_splits(videos: Path, splits: Path, k: int) -> tuple[list[str], list[VideoEntry], list[VideoEntry]]:
    """HMDB51's classes (sorted split-file names) and the train/test entries of official split k: lines
    `<name>.avi <0|1|2>` (1 train, 2 test, 0 unused) of `<class>_test_split<k>.txt`."""
    if not splits.is_dir():
        raise PrepError(f"{splits}: no such directory")
    files = sorted(p for p in splits.iterdir() if (m := HMDB51_SPLIT_FILE.match(p.name)) and int(m["k"]) == k)
    if not files:
        raise PrepError(f"{splits}: no <class>_test_split{k}.txt files")
    classes = [HMDB51_SPLIT_FILE.match(p.name)["cls"] for p in files]
    train, test = [], []
    for label, path in enumerate(files):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise PrepError(f"{path}:{n}: expected '<name>.avi <0|1|2>', got {line!r}")
            name, tag = parts
            entry = VideoEntry(f"{classes[label]}/{Path(name).stem}", str(videos / classes[label] / name), label)
            if tag == "1":
                train.append(entry)
            elif tag == "2":
                test.append(entry)
    return classes, train, test
