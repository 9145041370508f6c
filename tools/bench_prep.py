"""Preparation cost on sources like the real datasets: store bytes per source byte, videos/s per worker and merge
time, and what they mean for full Something-Something v2 and HMDB51 on one machine and on 8 (16 workers each).

    python tools/bench_prep.py                  # 24 videos per kind, JPEG q90 and raw at the decoded size
    python tools/bench_prep.py --smoke          # tiny sizes, seconds (used by the tests)

Sources are footage-like (video_adapt/benchmarks/sources.py): SSv2-like 45 frames of 320 x 240 at 12 fps, VP9 webm
at SSv2's bit rate (~90 KB per video); HMDB51-like 90 frames of 320 x 240 at 30 fps, MPEG-4 avi at HMDB51's
(~300 KB per video, 2 GB for 6,766). Each store is prepared with one worker as 2 parts (`--shard 0/2`, `1/2`, run
one after the other) and merged, so the timed path is the one a cluster runs. A worker's rate is videos per CPU
second of the preparing process (decoder threads included): on a shared host the wall clock measures the neighbours,
the CPU time does not. The full-dataset figures scale it linearly to 16 workers per machine, one core each (workers
share nothing but the disk, whose write rate the figures list), plus the merge, timed per shard file here.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
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


def measure(kind: Kind, sources: list[Path], codec: str, out: Path, shard_size: int) -> dict[str, float]:
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


def full_dataset(kind: Kind, m: dict[str, float], workers: int, machines: int, shard_size: int) -> dict[str, float]:
    """Disk size and wall time of the whole dataset, scaling the per-worker rate linearly."""
    rate = m["videos/s per worker"] * workers * machines
    shards = -(-kind.full_videos // shard_size) + machines  # about one short shard more per part
    merge_s = m["merge ms per shard file"] * shards / 1e3 if machines > 1 else 0.0
    return {"store GB": kind.full_gb * m["store bytes per source byte"],
            "minutes": (kind.full_videos / rate + merge_s) / 60, "merge s": merge_s,
            "write MB/s per machine": m["store KB per video"] / 1e3 * rate / machines}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24, help="source videos per kind")
    parser.add_argument("--codecs", nargs="+", default=["jpeg", "raw"], choices=["jpeg", "raw"])
    parser.add_argument("--workers", type=int, default=16, help="workers per machine in the extrapolation")
    parser.add_argument("--machines", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--shard-size", type=int, default=4,
                        help="videos per shard here (the merge is timed per shard file)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    kinds = KINDS
    if args.smoke:
        args.videos, args.codecs = 3, ["jpeg"]
        kinds = tuple(Kind(k.name, 6, k.fps, 48, 64, k.suffix, k.codec, k.bit_rate, k.full_videos, k.full_gb)
                      for k in KINDS)
    results: dict[str, dict[str, float]] = {}
    rows = ["| dataset | store | bytes per source byte | store KB / video | videos/s per worker | full store, GB | "
            + " | ".join(f"{m} x {args.workers} workers, min" for m in args.machines) + " | writes, MB/s per machine |",
            "|---" * (7 + len(args.machines)) + "|"]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            sources = make_sources(Path(tmp) / kind.name, kind, args.videos)
            for codec in args.codecs:
                m = measure(kind, sources, codec, Path(tmp) / f"{kind.name}-{codec}", args.shard_size)
                full = {n: full_dataset(kind, m, args.workers, n, 500) for n in args.machines}
                results[f"{kind.name} {codec}"] = {**m, **{f"{n} machines {k}": v for n, f in full.items()
                                                          for k, v in f.items()}}
                rows.append(f"| {kind.name} ({kind.full_videos:,} videos, {kind.full_gb} GB) | {codec} | "
                            f"{m['store bytes per source byte']:.1f} | {m['store KB per video']:.0f} | "
                            f"{m['videos/s per worker']:.1f} | {full[args.machines[0]]['store GB']:.0f} | "
                            + " | ".join(f"{f['minutes']:.1f}" for f in full.values())
                            + f" | {full[args.machines[0]]['write MB/s per machine']:.0f} |")
    for name, figures in results.items():
        print(name + ": " + ", ".join(f"{k} {v:.3g}" for k, v in figures.items()))
    print("\n".join(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
