import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from videos import make_broken, make_hmdb51, make_ssv2, make_video
from data_prep import check, folder, hmdb51, ssv2
from video_adapt.data.check import check_store
from video_adapt.data.listing import hmdb51_splits
from video_adapt.data.datasets import StoreSource, EvalClips, EvalView, TrainClips, TrainView
from video_adapt.data.store import FrameStore

SMALL = ["--short-side", "24"]


def class_folders(root: Path, classes=("jump", "run"), per_class=3) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            make_video(root / name / f"{name}{i}.mp4", n=10 + i, seed=10 * c + i)
    return root


def failed_rows(store: Path) -> list[dict]:
    with (store / "failed.csv").open() as f:
        return list(csv.DictReader(f))


def test_folder_classes_round_trip_to_batches(tmp_path):
    videos = class_folders(tmp_path / "videos")
    out = tmp_path / "store"
    assert folder.main(["--videos", str(videos), "--val-videos", str(videos), "--out", str(out), *SMALL]) == 0
    store = FrameStore(out)
    assert store.classes == ["jump", "run"] and store.meta.dataset == "other" and store.meta.keep_every == 1
    split = store.split("train")
    assert [split.stored_frames(i) for i in range(6)] == [10, 11, 12, 10, 11, 12]  # every frame of every video
    train = TrainClips(StoreSource(out, "train"), TrainView(num_frames=4, img_size=16, crop="rrc", crop_scale=(0.5, 1.0)))
    clips, label, boxes = train[0]
    assert clips.shape == (1, 3, 4, 16, 16) and clips.dtype == torch.uint8 and label == 0
    assert boxes.tolist() == [[-1, -1, -1, -1]]
    assert clips.float().std() > 1
    test = EvalClips(StoreSource(out, "val"), EvalView(num_frames=2, img_size=16, sampling="dense", stride=2, clips=2,
                                                     crops=3, short_side=16))
    views, label, index = test[5]
    assert views.shape == (2 * 3, 3, 2, 16, 16) and label == 1 and index == 5
    from video_adapt.data.transforms import normalize_clips
    x = normalize_clips(torch.stack([train[i][0][0] for i in range(4)]))
    assert x.dtype == torch.float32 and -2.2 < float(x.min()) and float(x.max()) < 2.7
    assert check_store(out, progress=False) == []


def test_stored_frames_are_resized_but_never_upscaled(tmp_path):
    videos = class_folders(tmp_path / "videos", per_class=1)
    for side, expected in ((24, (24, 30)), (100, (32, 40)), (0, (32, 40))):
        out = tmp_path / f"s{side}"
        folder.main(["--videos", str(videos), "--out", str(out), "--short-side", str(side)])
        frames = FrameStore(out).frames("train", 0, np.arange(10))
        assert frames.shape == (10, *expected, 3)


def test_stored_frames_are_the_decoded_frames_in_order(tmp_path):
    """Raw codec, source size: the store holds exactly what the decoder gives, frame for frame."""
    from video_adapt.data.decode import open_video
    path = make_video(tmp_path / "videos" / "a" / "v.mp4", n=17)
    out = tmp_path / "store"
    assert folder.main(["--videos", str(tmp_path / "videos"), "--out", str(out), "--codec", "raw"]) == 0
    reader = open_video(path)
    assert np.array_equal(FrameStore(out).frames("train", 0, np.arange(17)), reader.read(np.arange(17)))
    every3 = tmp_path / "every3"
    assert folder.main(["--videos", str(tmp_path / "videos"), "--out", str(every3), "--codec", "raw",
                        "--keep-every", "3"]) == 0
    store = FrameStore(every3)
    assert store.split("train").stored_frames(0) == 6 and store.meta.keep_every == 3
    assert np.array_equal(store.frames("train", 0, np.arange(6)), reader.read(np.arange(0, 17, 3)))
    assert check_store(every3, progress=False) == []


def test_the_default_jpeg_store_is_the_decoded_frames_within_a_few_grey_levels(tmp_path):
    """The JPEG q90 default re-encodes each decoded frame once (the official loaders use the decoder's pixels; the
    raw codec stores those exactly, test above)."""
    make_video(tmp_path / "videos" / "a" / "v.mp4", n=12)
    stores = {}
    for codec in ("jpeg", "raw"):
        assert folder.main(["--videos", str(tmp_path / "videos"), "--out", str(tmp_path / codec), "--codec", codec]) == 0
        stores[codec] = FrameStore(tmp_path / codec).frames("train", 0, np.arange(12)).astype(int)
    assert FrameStore(tmp_path / "jpeg").meta.codec == "jpeg"
    diff = np.abs(stores["jpeg"] - stores["raw"])
    assert 0 < diff.mean() < 3


def test_raw_frames_of_every_video_at_any_positions(tmp_path):
    """The raw read takes one view of a video's frames and gathers the wanted ones: every video of a shard (not only
    the first), positions unsorted and repeated, each frame what the decoder gives."""
    from video_adapt.data.decode import open_video
    class_folders(tmp_path / "videos")  # 6 videos of 10-12 frames in one shard
    out = tmp_path / "store"
    assert folder.main(["--videos", str(tmp_path / "videos"), "--out", str(out), "--codec", "raw"]) == 0
    store = FrameStore(out)
    split = store.split("train")
    assert len(split) == 6
    for i, row in enumerate(split.video_rows):
        n = split.stored_frames(i)
        positions = np.array([n - 1, 0, 3, 3, n // 2])
        expected = open_video(split.videos[row]["source"]).read(positions)
        assert np.array_equal(store.frames("train", i, positions), expected)
    assert store.frames("train", 0, np.array([], np.int64)).shape == (0, 32, 40, 3)


def test_list_file_with_names_and_escaping_paths(tmp_path):
    videos = class_folders(tmp_path / "videos")
    listing = tmp_path / "train.csv"
    listing.write_text("jump/jump0.mp4 jump\nrun/run1.mp4,run\n../outside.mp4 run\n")
    make_video(tmp_path / "outside.mp4")
    out = tmp_path / "store"
    code = folder.main(["--list", str(listing), "--root", str(videos), "--out", str(out), *SMALL, "--strict"])
    assert code == 1  # --strict: a refused line fails the exit code
    rows = failed_rows(out)
    assert len(rows) == 1 and "escapes --root" in rows[0]["reason"]
    assert FrameStore(out).meta.splits["train"].videos == 2


def test_videomae_style_index_lists(tmp_path):
    videos = class_folders(tmp_path / "videos")
    (tmp_path / "train.csv").write_text("jump/jump0.mp4 0\njump/jump1.mp4 0\nrun/run0.mp4 1\n")
    (tmp_path / "val.csv").write_text("run/run2.mp4 1\n")
    out = tmp_path / "store"
    assert folder.main(["--list", str(tmp_path / "train.csv"), "--val-list", str(tmp_path / "val.csv"),
                        "--root", str(videos), "--out", str(out), *SMALL]) == 0
    assert FrameStore(out).classes == ["0", "1"]
    assert FrameStore(out).meta.splits["val"].videos == 1


def test_corrupt_empty_and_missing_videos_never_stop_the_job(tmp_path):
    class_folders(tmp_path / "videos")
    broken = make_broken(tmp_path / "videos" / "run")
    (tmp_path / "videos" / "jump" / "zero.mp4").write_bytes(b"")
    out = tmp_path / "store"
    assert folder.main(["--videos", str(tmp_path / "videos"), "--out", str(out), *SMALL]) == 0
    reasons = {Path(r["source"]).name: r["reason"] for r in failed_rows(out)}
    assert {"empty.mp4", "garbage.mp4", "notes.avi", "zero.mp4"} <= set(reasons)
    assert all("\n" not in r for r in reasons.values())
    meta = FrameStore(out).meta
    assert meta.splits["train"].videos + len(reasons) == 6 + len(broken) + 1
    assert check_store(out, progress=False) == []
    assert folder.main(["--videos", str(tmp_path / "videos"), "--out", str(out), *SMALL, "--strict"]) == 1


def test_ssv2_official_layout(tmp_path):
    videos, labels = make_ssv2(tmp_path)
    out = tmp_path / "ssv2"
    assert ssv2.main(["--videos", str(videos), "--labels", str(labels), "--out", str(out), "--with-test", *SMALL]) == 0
    store = FrameStore(out)
    assert store.classes[0] == "Pushing something from left to right"
    assert store.meta.flip is False and store.meta.dataset == "ssv2"
    assert store.meta.splits["train"].per_class == [2, 2, 2]
    assert store.meta.splits["test"].videos == 1
    assert StoreSource(out, "train").flip_allowed is False


def test_ssv2_reencoded_to_h264_mp4_as_the_official_runs_prepares_with_extension_mp4(tmp_path):
    """The official runs decode SSv2 after `ffmpeg -i x.webm -c:v libx264 x.mp4` (AF:DATASET.md:9; VM:DATASET.md:9):
    the same frames, count and size through a second lossy encoding."""
    import av
    from videos import write
    videos, labels = make_ssv2(tmp_path)
    for webm in sorted(videos.glob("*.webm")):  # the official re-encoding, with PyAV's libx264
        with av.open(str(webm)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        write(webm.with_suffix(".mp4"), frames)
    stores = {}
    for ext in ("webm", "mp4"):
        out = tmp_path / ext
        assert ssv2.main(["--videos", str(videos), "--labels", str(labels), "--out", str(out), "--codec", "raw",
                          "--extension", ext]) == 0
        stores[ext] = StoreSource(out, "train")
    webm, mp4 = stores["webm"], stores["mp4"]
    assert len(webm) == len(mp4) == 6 and webm.ids == mp4.ids
    for i in range(len(webm)):
        a, b = webm.video(i), mp4.video(i)
        assert a.num_frames == b.num_frames == 14 and a.size == b.size
        positions = np.arange(a.num_frames)
        diff = np.abs(a.read(positions).astype(int) - b.read(positions).astype(int))
        assert 0 < diff.mean() < 8  # a second lossy encoding: close, not equal


def test_ssv2_unknown_templates_are_listed(tmp_path, capsys):
    videos, labels = make_ssv2(tmp_path, per_class=1)
    items = json.loads((labels / "train.json").read_text())
    items[0]["template"] = "Juggling [something]"
    (labels / "train.json").write_text(json.dumps(items))
    assert ssv2.main(["--videos", str(videos), "--labels", str(labels), "--out", str(tmp_path / "o")]) == 2
    assert "Juggling something" in capsys.readouterr().err


def test_hmdb51_split_files_pick_train_and_test(tmp_path):
    videos, splits = make_hmdb51(tmp_path)
    classes, train, test = hmdb51_splits(videos, splits, 1)
    assert classes == ["brush_hair", "cartwheel", "chew"]
    # split 1: clip i gets tag (i + 1) % 3 -> clip0 test(2)? mapping {0: '1', 1: '2', 2: '0'}: clip2 train, clip0 test
    assert sorted(e.id for e in train) == ["brush_hair/brush_hair_clip2", "cartwheel/cartwheel_clip2", "chew/chew_clip2"]
    assert sorted(e.id for e in test) == ["brush_hair/brush_hair_clip0", "cartwheel/cartwheel_clip0", "chew/chew_clip0"]
    out = tmp_path / "h"
    assert hmdb51.main(["--videos", str(videos), "--splits", str(splits), "--split", "2", "--out", str(out), *SMALL]) == 0
    meta = FrameStore(out).meta
    assert meta.dataset == "hmdb51" and meta.flip is True
    assert set(meta.splits) == {"train", "test"}


def test_rerun_with_other_options_needs_overwrite(tmp_path):
    videos = class_folders(tmp_path / "videos", per_class=1)
    out = tmp_path / "store"
    assert folder.main(["--videos", str(videos), "--out", str(out), *SMALL]) == 0
    assert folder.main(["--videos", str(videos), "--out", str(out), "--short-side", "16"]) == 2
    assert folder.main(["--videos", str(videos), "--out", str(out), "--short-side", "16", "--overwrite"]) == 0
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("keep me")
    assert folder.main(["--videos", str(videos), "--out", str(tmp_path / "precious"), "--overwrite"]) == 2
    assert (tmp_path / "precious" / "thesis.txt").exists()


# SIGKILL while the fourth training shard is half written: at the same point on every machine, not after a race
# between a polling loop and the job's speed
KILLED_IN_THE_FOURTH_SHARD = """
import os, signal, sys
from data_prep import folder
from video_adapt.data.store import ShardWriter
add_video = ShardWriter.add_video
def add_video_then_die(self, *args):
    add_video(self, *args)
    if self.directory.name == "train" and self.index == 3:
        os.kill(os.getpid(), signal.SIGKILL)
ShardWriter.add_video = add_video_then_die
folder.main(sys.argv[1:])
"""


@pytest.mark.slow
def test_killed_job_resumes_and_matches_an_uninterrupted_run(tmp_path):
    videos = class_folders(tmp_path / "videos", per_class=12)
    args = ["--videos", str(videos), *SMALL, "--shard-size", "2"]
    clean = tmp_path / "clean"
    assert folder.main([*args, "--out", str(clean)]) == 0
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLED_IN_THE_FOURTH_SHARD, *args, "--out", str(killed)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-1500:]
    assert sorted(p.name for p in (killed / "train").glob("shard-*.npz")) == [f"shard-0000{i}.npz" for i in range(3)]
    assert (killed / "train" / "shard-00003.bin.tmp").exists() and not (killed / "meta.json").exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in (killed / "train").glob("shard-*.npz")}
    assert folder.main([*args, "--out", str(killed)]) == 0
    for name, stamp in stamps.items():  # finished shards were kept, not redone
        assert (killed / "train" / name).stat().st_mtime_ns == stamp
    a, b = FrameStore(clean), FrameStore(killed)
    assert len(a.split("train")) == len(b.split("train")) == 24
    for i in range(24):
        n = a.split("train").stored_frames(i)
        assert np.array_equal(a.frames("train", i, np.arange(n)), b.frames("train", i, np.arange(n)))
    assert not list(killed.rglob("*.tmp*"))


def test_check_rejects_a_damaged_store(tmp_path, capsys):
    videos = class_folders(tmp_path / "videos")
    out = tmp_path / "store"
    folder.main(["--videos", str(videos), "--out", str(out), *SMALL])
    shard = out / "train" / "shard-00000.bin"
    shard.write_bytes(shard.read_bytes()[:100])
    assert check.main([str(out)]) == 1
    assert "truncated" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    meta["splits"]["train"]["videos"] = 99
    (out / "meta.json").write_text(json.dumps(meta))
    assert any("99 videos" in p for p in check_store(out, progress=False))
    assert check_store(tmp_path / "videos", progress=False)[0].endswith("prepare one with video-adapt prep <name>")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["ssv2", "hmdb51", "folder", "synthetic", "check"])
def test_data_prep_scripts_have_help_both_ways(script):
    for cmd in ([sys.executable, "-m", f"data_prep.{script}", "--help"], [sys.executable, f"data_prep/{script}.py", "--help"]):
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0 and "usage" in out.stdout, out.stderr[-300:]


def test_workers_give_the_same_store_as_one_process(tmp_path):
    videos = class_folders(tmp_path / "videos", per_class=3)
    a, b = tmp_path / "a", tmp_path / "b"
    folder.main(["--videos", str(videos), "--out", str(a), *SMALL])
    folder.main(["--videos", str(videos), "--out", str(b), *SMALL, "--workers", "2"])
    sa, sb = FrameStore(a), FrameStore(b)
    for i in range(len(sa.split("train"))):
        n = sa.split("train").stored_frames(i)
        assert np.array_equal(sa.frames("train", i, np.arange(n)), sb.frames("train", i, np.arange(n)))


def test_a_writer_killed_before_publishing_its_index_leaves_nothing_named_like_a_shard(tmp_path, monkeypatch):
    """Readers and resumes list `shard-*.npz`; the index's temporary must not match it, or a killed job's half-written
    file is read as a finished shard (the killed-shard resume test saw `shard-00014.npz.tmp.npz`)."""
    from video_adapt.data import store as store_module
    writer = store_module.ShardWriter(tmp_path, 3)

    def killed(src, dst):
        raise KeyboardInterrupt  # the process dies between writing the index and publishing it

    monkeypatch.setattr(store_module.os, "replace", lambda src, dst: os.rename(src, dst)
                        if str(src).endswith(".bin.tmp") else killed(src, dst))
    with pytest.raises(KeyboardInterrupt):
        writer.close()
    assert list(tmp_path.glob("shard-*.npz")) == [] and list(tmp_path.glob(".shard-00003.tmp.npz"))


def test_store_meta_is_typed_and_a_damaged_one_is_one_line(tmp_path):
    from video_adapt.data.store import SplitCounts, StoreError, StoreMeta
    videos = class_folders(tmp_path / "videos", per_class=1)
    out = tmp_path / "store"
    folder.main(["--videos", str(videos), "--out", str(out), *SMALL])
    written = json.loads((out / "meta.json").read_text())
    meta = StoreMeta.read(out / "meta.json")
    assert meta.as_dict() == written and list(meta.as_dict()) == list(written)  # the same file, key for key
    assert isinstance(meta.splits["train"], SplitCounts) and meta.splits["train"].videos == 2
    del written["codec"]
    (out / "meta.json").write_text(json.dumps(written))
    with pytest.raises(StoreError, match=r"meta.json: damaged meta.json \(KeyError: 'codec'\)"):
        FrameStore(out)
