"""Join the parts of a sharded preparation (`prepare_store(..., shard=(i, n))`) into one frame store.

Each part holds a contiguous share of every split's rows, with global row numbers and globally numbered shard files
(`shard_plan`), so the merged split is the union of the parts' shard files: they are hard-linked into the store
(no frame is copied, so joining hundreds of GB takes seconds), and only the small files (videos.csv, failed.csv,
prep.json, meta.json) are written anew. Everything is checked before anything is written: the parts must come from
the same options and source list, be finished, and cover every video exactly once. meta.json is removed first and
written last, so a killed merge leaves no store that looks complete, and a rerun finishes it (links already in
place are kept). The merged store serves exactly what a whole job's store serves; only its shard boundaries differ.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from video_adapt.data.prepare import PrepError, part_name, shard_plan
from video_adapt.data.store import SplitCounts, StoreError, StoreMeta, read_shard_index
from video_adapt.files import write_csv_atomic, write_json_atomic

VIDEOS_HEADER = ["row", "id", "label", "source", "num_frames", "stored_frames", "fps", "height", "width"]
FAILED_HEADER = ["split", "id", "source", "reason"]


class MergeError(PrepError):
    """The parts cannot be merged (missing, duplicated, unfinished or mismatched); one line naming the part."""


@dataclass
class Part:
    path: Path
    index: int
    parts: int
    options: dict[str, Any]  # prep.json without the shard
    meta: StoreMeta  # the part's meta.json

    @property
    def settings(self) -> StoreMeta:
        """What every part of one job shares: its meta.json without the part and the counts."""
        return replace(self.meta, part=None, splits={})


@dataclass
class MergeReport:
    out: Path
    parts: int
    videos: int
    failed: int
    shards: int
    seconds: float

    def summary(self) -> str:
        return (f"merged {self.parts} parts: {self.videos - self.failed} of {self.videos} videos ({self.failed} "
                f"failed), {self.shards} shard files linked in {self.seconds:.1f} s -> {self.out}")


def find_parts(out: Path) -> list[Path]:
    """The part directories a sharded job wrote into `out` (part-I-of-N)."""
    return sorted(p for p in out.glob("part-*-of-*") if p.is_dir())


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MergeError(f"{path.parent}: {what}") from None
    except (OSError, json.JSONDecodeError) as err:
        raise MergeError(f"{path}: unreadable ({err})") from None


def read_part(path: Path) -> Part:
    """A finished part's identity and settings; anything else is a one-line MergeError naming it."""
    if not path.is_dir():
        raise MergeError(f"{path}: no such part directory")
    prep = _read_json(path / "prep.json", "not a part of a sharded preparation (no prep.json)")
    if "shard" not in prep:
        raise MergeError(f"{path}: not a part of a sharded preparation (prepared without --shard)")
    index, parts = prep.pop("shard")
    if not (path / "meta.json").is_file():
        raise MergeError(f"{path}: part {index} of {parts} is not finished (no meta.json); rerun its "
                         f"--shard {index}/{parts} job")
    try:
        meta = StoreMeta.read(path / "meta.json")
    except StoreError as err:
        raise MergeError(str(err)) from None
    if meta.part != (index, parts):
        raise MergeError(f"{path}: meta.json and prep.json disagree on which part this is")
    return Part(path, index, parts, prep, meta)


def check_parts(parts: list[Part]) -> None:
    """Same job (options, source list, store settings), same n, every index 0..n-1 exactly once."""
    ref = parts[0]
    seen: dict[int, Path] = {}
    for p in parts:
        if p.parts != ref.parts:
            raise MergeError(f"{p.path}: part {p.index} of {p.parts}, but {ref.path} is a part of {ref.parts}")
        if p.options.get("entries") != ref.options.get("entries"):
            raise MergeError(f"{p.path}: prepared from another source list than {ref.path}")
        if p.options != ref.options or p.settings != ref.settings:
            raise MergeError(f"{p.path}: prepared with other options than {ref.path}")
        if p.index in seen:
            raise MergeError(f"{p.path}: part {p.index} of {p.parts} given twice (also {seen[p.index]})")
        seen[p.index] = p.path
    for i in range(ref.parts):
        if i not in seen:
            raise MergeError(f"part {i} of {ref.parts} missing (expected {ref.path.parent / part_name(i, ref.parts)})")


def part_shards(part: Part, split: str, rows: int) -> list[int]:
    """The shard numbers of `split` in `part`, after checking they hold exactly the part's share of rows."""
    directory = part.path / split
    plan = shard_plan(rows, part.options["opts"]["shard_size"], part.index, part.parts)
    expected = {f"shard-{number:05d}.{ext}" for number, _ in plan for ext in ("bin", "npz")}
    found = {p.name for p in directory.glob("shard-*")} if directory.is_dir() else set()
    for name in sorted(found - expected):
        raise MergeError(f"{directory / name}: not a shard of part {part.index} of {part.parts}")
    for number, share in plan:
        for ext in ("bin", "npz"):
            if f"shard-{number:05d}.{ext}" not in found:
                raise MergeError(f"{directory / f'shard-{number:05d}.{ext}'}: missing; rerun the part's job")
        try:
            z = read_shard_index(directory / f"shard-{number:05d}.npz")
        except StoreError as err:
            raise MergeError(str(err)) from None
        held = z["video_rows"].tolist() + z["failed_rows"].tolist()
        if sorted(held) != list(share):
            raise MergeError(f"{directory / f'shard-{number:05d}.npz'}: holds rows other than its share "
                             f"{share.start}..{share.stop - 1}")
    return [number for number, _ in plan]


def _read_csv(path: Path, header: list[str]) -> list[list[str]]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as err:
        raise MergeError(f"{path}: unreadable ({err.strerror})") from None
    if not rows or rows[0] != header:
        raise MergeError(f"{path}: not a {path.name} of this version (header {rows[0] if rows else 'missing'})")
    return rows[1:]


def _link(src: Path, dst: Path) -> None:
    """dst becomes another name of src's data (kept when it already is); never a copy."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)  # left by a killed merge
    if dst.exists() and os.path.samefile(src, dst):
        return
    try:
        os.link(src, tmp)
    except OSError as err:
        why = ("is on another filesystem; move the parts onto the output's filesystem first"
               if err.errno == errno.EXDEV else f"cannot be hard-linked ({err.strerror})")
        raise MergeError(f"{src}: {why} (the merge never copies frames)") from None
    os.replace(tmp, dst)


def merge_parts(out: str | Path, parts: list[str | Path] | None = None, remove_parts: bool = False) -> MergeReport:
    """Merge the parts (default: every part-*-of-* directory in `out`) into the store `out`; see the module doc."""
    start = time.perf_counter()
    out = Path(out)
    paths = [Path(p) for p in parts] if parts else find_parts(out)
    if not paths:
        raise MergeError(f"{out}: no part-*-of-* directories; pass the part directories after OUT")
    loaded = [read_part(p) for p in paths]
    for p in loaded:
        if out.exists() and os.path.samefile(p.path, out):
            raise MergeError(f"{p.path}: is the output directory itself; pass the store to write as OUT")
    check_parts(loaded)
    loaded.sort(key=lambda p: p.index)
    ref = loaded[0]
    options = {**ref.options, "merged_from": ref.parts}
    prep_path = out / "prep.json"
    if prep_path.exists() and _read_json(prep_path, "") != options:
        raise MergeError(f"{out}: holds a store prepared with other options; choose another OUT")
    splits: dict[str, int] = ref.options["splits"]
    shards = {(split, p.index): part_shards(p, split, rows) for split, rows in splits.items() for p in loaded}
    for split in splits:
        names = {f"shard-{n:05d}.{ext}" for p in loaded for n in shards[split, p.index] for ext in ("bin", "npz")}
        for stray in sorted((out / split).glob("shard-*")):
            if stray.name.removesuffix(".tmp") not in names:  # our own temporaries are cleared when linking
                raise MergeError(f"{stray}: not from these parts; remove it or choose another OUT")
    videos = {split: [r for p in loaded for r in _read_csv(p.path / split / "videos.csv", VIDEOS_HEADER)]
              for split in splits}
    failed_by_part = [_read_csv(p.path / "failed.csv", FAILED_HEADER) for p in loaded]

    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # from here on the store is incomplete until meta.json is back
    write_json_atomic(prep_path, options)
    linked = 0
    for split in splits:
        (out / split).mkdir(exist_ok=True)
        for p in loaded:
            for number in shards[split, p.index]:
                for ext in ("bin", "npz"):  # payload first, as a job writes them: an index implies its payload
                    _link(p.path / split / f"shard-{number:05d}.{ext}", out / split / f"shard-{number:05d}.{ext}")
                linked += 1
        write_csv_atomic(out / split / "videos.csv", VIDEOS_HEADER, videos[split])
    failures = [row for split in splits for rows in failed_by_part for row in rows if row[0] == split]
    write_csv_atomic(out / "failed.csv", FAILED_HEADER, failures)
    write_json_atomic(out / "meta.json", _merged_meta([p.meta for p in loaded]).as_dict())
    if remove_parts:
        for p in loaded:
            shutil.rmtree(p.path)
    total = sum(splits.values())
    return MergeReport(out, len(loaded), total, len(failures), linked, time.perf_counter() - start)


def _merged_meta(metas: list[StoreMeta]) -> StoreMeta:
    """A whole job's meta.json: the parts' settings, their per-split counts summed."""
    splits = {}
    for name in metas[0].splits:
        counts = [m.splits[name] for m in metas]
        splits[name] = SplitCounts(videos=sum(c.videos for c in counts), failed=sum(c.failed for c in counts),
                                   frames=sum(c.frames for c in counts),
                                   per_class=[sum(v) for v in zip(*(c.per_class for c in counts))])
    return replace(metas[0], part=None, splits=splits)
