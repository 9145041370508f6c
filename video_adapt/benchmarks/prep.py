"""What tools/bench_prep.py measures: preparation cost on footage-like sources of each dataset's kind (store bytes per
source byte, videos per CPU second of one worker, merge time per shard file) and its linear extrapolation to the full
Something-Something v2 and HMDB51 on one machine or several."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from video_adapt.benchmarks.sources import SSV2_BIT_RATE, footage_like
from video_adapt.data.merge import merge_parts
from video_adapt.data.prepare import PrepOptions, SplitSpec, VideoEntry, part_name, prepare_store
from video_adapt.data.synthetic import write_video

HMDB51_BIT_RATE = 800_000  # 2.0 GB / 6,766 videos = ~300 KB per ~3 s clip


@dataclass(frozen=True)
class Kind:
    """A source like one dataset's videos, and that dataset's full size."""

    name: str
    frames: int
    fps: int
    height: int
    width: int
    suffix: str
    codec: str
    bit_rate: int
    full_videos: int
    full_gb: float  # the dataset's source videos, GB (1e9 bytes)


KINDS = (Kind("SSv2", 45, 12, 240, 320, ".webm", "libvpx-vp9", SSV2_BIT_RATE, 220_847, 19.4),
         Kind("HMDB51", 90, 30, 240, 320, ".avi", "mpeg4", HMDB51_BIT_RATE, 6_766, 2.0))


def make_sources(folder: Path, kind: Kind, count: int) -> list[Path]:
    """`count` footage-like source videos of `kind` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"v{i:03d}{kind.suffix}"
        write_video(str(path), footage_like(i, kind.frames, kind.height, kind.width), fps=kind.fps, codec=kind.codec,
                    bit_rate=kind.bit_rate)
        paths.append(path)
    return paths


def tree_bytes(path: Path) -> int:
    """Bytes on disk of a store (each hard-linked shard counted once)."""
    seen, total = set(), 0
    for p in path.rglob("*"):
        if p.is_file() and (st := p.stat()).st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_size
    return total


def measure(kind: Kind, sources: list[Path], *, codec: str, out: Path, shard_size: int) -> dict[str, float]:
    """Prepare `sources` as 2 parts with one worker each, merge, and return the per-worker and per-byte figures."""
    entries = [VideoEntry(p.stem, str(p), 0) for p in sources]
    opts = PrepOptions(codec=codec, shard_size=shard_size)
    seconds, cpu = 0.0, time.process_time()
    for i in range(2):
        report = prepare_store(out / part_name(i, 2), ["a"], [SplitSpec("train", entries)], opts, source=kind.name,
                               flip=True, progress=False, shard=(i, 2))
        seconds += report.seconds
        if report.failed:
            raise RuntimeError(f"{report.failures[0]}")
    cpu = time.process_time() - cpu  # one worker = this process (decoder threads included)
    start = time.perf_counter()
    merged = merge_parts(out, remove_parts=True)
    merge_s = time.perf_counter() - start
    source_bytes = sum(p.stat().st_size for p in sources)
    store_bytes = tree_bytes(out)
    return {"videos/s per worker": len(sources) / cpu, "videos/s here (wall)": len(sources) / seconds,
            "source KB per video": source_bytes / len(sources) / 1e3,
            "store KB per video": store_bytes / len(sources) / 1e3,
            "store bytes per source byte": store_bytes / source_bytes,
            "merge ms per shard file": 1e3 * merge_s / merged.shards}


def full_dataset(kind: Kind, m: dict[str, float], *, workers: int, machines: int, shard_size: int) -> dict[str, float]:
    """Disk size and wall time of the whole dataset, scaling the per-worker rate linearly."""
    rate = m["videos/s per worker"] * workers * machines
    shards = -(-kind.full_videos // shard_size) + machines  # about one short shard more per part
    merge_s = m["merge ms per shard file"] * shards / 1e3 if machines > 1 else 0.0
    return {"store GB": kind.full_gb * m["store bytes per source byte"],
            "minutes": (kind.full_videos / rate + merge_s) / 60, "merge s": merge_s,
            "write MB/s per machine": m["store KB per video"] / 1e3 * rate / machines}


def smoke_kinds() -> tuple[Kind, ...]:
    """The kinds at tiny sizes (6 frames of 64 x 48), for the CI smoke run."""
    return tuple(replace(k, frames=6, height=48, width=64) for k in KINDS)

