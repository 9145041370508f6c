"""Real encoded test videos made with PyAV: mp4 (H.264), webm (VP9), avi (MPEG-4), and broken files."""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np

CODECS = {".mp4": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4", ".mkv": "ffv1"}


def frame_pattern(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Frames whose index can be read back from the mean brightness (20 grey levels per frame)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 20, (h, w, 3)).astype(np.int64)
    return np.stack([np.clip(base + 10 + 20 * (i % 12), 0, 255).astype(np.uint8) for i in range(n)])


def write(path: Path, frames: np.ndarray, fps: int = 10, pix_fmt: str = "yuv420p") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODECS[path.suffix], rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_video(path: Path, n: int = 12, h: int = 32, w: int = 40, seed: int = 0, **kw) -> Path:
    return write(Path(path), frame_pattern(n, h, w, seed), **kw)


def make_broken(folder: Path) -> dict[str, Path]:
    """Files that must fail cleanly: empty, random bytes, a text file, a truncated video."""
    folder.mkdir(parents=True, exist_ok=True)
    good = make_video(folder / "tmp_good.mp4", n=30)
    data = good.read_bytes()
    paths = {"empty": folder / "empty.mp4", "garbage": folder / "garbage.mp4", "text": folder / "notes.avi",
             "truncated": folder / "truncated.mp4"}
    paths["empty"].write_bytes(b"")
    paths["garbage"].write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    paths["text"].write_text("this is not a video\n" * 50)
    paths["truncated"].write_bytes(data[: len(data) // 3])
    good.unlink()
    return paths


def make_ssv2(root: Path, per_class: int = 2) -> tuple[Path, Path]:
    """Official SSv2 layout: <id>.webm and labels.json / train.json / validation.json / test.json."""
    videos, labels = root / "videos", root / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    templates = ["Pushing something from left to right", "Pushing something from right to left",
                 "Putting something on a surface"]
    (labels / "labels.json").write_text(json.dumps({t: str(i) for i, t in enumerate(templates)}))
    bracketed = ["Pushing [something] from left to right", "Pushing [something] from right to left",
                 "Putting [something] on a surface"]
    vid = 100
    splits = {}
    for split in ("train", "validation"):
        items = []
        for c, t in enumerate(bracketed):
            for _ in range(per_class):
                vid += 1
                make_video(videos / f"{vid}.webm", n=14, seed=vid)
                items.append({"id": str(vid), "label": templates[c].lower(), "template": t, "placeholders": ["a cup"]})
        splits[split] = items
        (labels / f"{split}.json").write_text(json.dumps(items))
    (labels / "test.json").write_text(json.dumps([{"id": splits["validation"][0]["id"]}]))
    return videos, labels


def make_hmdb51(root: Path, classes=("brush_hair", "cartwheel", "chew"), per_class: int = 3) -> tuple[Path, Path]:
    """HMDB51 layout: <class>/<name>.avi and <class>_test_split<k>.txt (1 train, 2 test, 0 unused)."""
    videos, splits = root / "videos", root / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    for c, name in enumerate(classes):
        for k in (1, 2, 3):
            lines = []
            for i in range(per_class):
                fname = f"{name}_clip{i}.avi"
                if k == 1:
                    make_video(videos / name / fname, n=20, seed=10 * c + i)
                tag = {0: "1", 1: "2", 2: "0"}[(i + k) % 3]
                lines.append(f"{fname} {tag}")
            (splits / f"{name}_test_split{k}.txt").write_text("\n".join(lines) + "\n")
    return videos, splits
