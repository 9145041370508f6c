"""Clips from a frame store and from video files: fresh temporal samples every epoch, by the official rules."""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep import folder
from videos import write
from video_adapt.data.datasets import (
    FileSource,
    MonitorClips,
    StoreSource,
    EvalClips,
    EvalView,
    TrainClips,
    TrainView,
    normalize_and_erase,
)
from video_adapt.data.sampling import eval_clip_indices, tsn_indices
from video_adapt.data.store import FrameStore, StoreError

LEVEL = 4  # grey levels per frame index in the counting videos


def counting_video(path: Path, n: int, h: int = 24, w: int = 32) -> Path:
    """Flat frames whose grey level encodes their index (frame i = 8 + 4 i), lossless enough to read back."""
    frames = np.stack([np.full((h, w, 3), 8 + LEVEL * i, np.uint8) for i in range(n)])
    return write(path, frames, fps=12)


def frame_index(clip: torch.Tensor) -> list[int]:
    """(3, T, H, W) uint8 clip of a counting video -> the source index of each frame."""
    return [int(round((float(clip[:, t].float().mean()) - 8) / LEVEL)) for t in range(clip.shape[1])]


def make_counting_store(root: Path, codec: str) -> Path:
    """Counting videos of 60, 45 and 7 frames, as the train and the val split of one store."""
    for k, n in enumerate((60, 45, 7)):
        counting_video(root / "videos" / "c" / f"v{k}.mp4", n)
    out = root / "store"
    assert folder.main(["--videos", str(root / "videos"), "--val-videos", str(root / "videos"), "--out", str(out),
                        "--codec", codec]) == 0
    return out


@pytest.fixture(scope="module")
def counting_store(tmp_path_factory):
    return make_counting_store(tmp_path_factory.mktemp("counting"), "raw")


@pytest.fixture(scope="module")
def jpeg_counting_store(tmp_path_factory):
    return make_counting_store(tmp_path_factory.mktemp("counting_jpeg"), "jpeg")  # JPEG q90


def test_decoded_cache_gives_the_decoders_frames_within_its_budget(jpeg_counting_store, monkeypatch):
    """data.cache_mb: a cached video is decoded once, reads of any positions are the decoder's frames (copies the
    caller may change), the least recently used video leaves when the budget is reached."""
    import video_adapt.data.store as store_module
    plain = FrameStore(jpeg_counting_store)
    expected = [plain.frames("train", i, np.arange(n)) for i, n in enumerate((60, 45, 7))]
    frame_bytes = 24 * 32 * 3
    cached = FrameStore(jpeg_counting_store, cache_bytes=(60 + 45) * frame_bytes)  # videos 0 and 1, not all three
    decoded = []
    real = store_module.decode_jpegs
    monkeypatch.setattr(store_module, "decode_jpegs", lambda payloads: decoded.append(len(payloads)) or real(payloads))
    positions = np.array([5, 0, 59, 5])
    first = cached.frames("train", 0, positions)
    assert np.array_equal(first, expected[0][positions])
    first[:] = 0  # the caller's copy, not the cache
    assert np.array_equal(cached.frames("train", 0, np.array([59, 1])), expected[0][[59, 1]])
    assert decoded == [60]  # the whole video once, then from memory
    assert np.array_equal(cached.frames("train", 1, np.array([44])), expected[1][[44]])
    assert decoded == [60, 45] and cached._decoded_bytes == (60 + 45) * frame_bytes
    cached.frames("train", 2, np.array([0]))  # over budget: video 0, the least recently used, leaves
    assert list(cached._decoded) == [("train", 1), ("train", 2)] and cached._decoded_bytes <= cached.cache_bytes
    cached.frames("train", 0, np.array([3]))
    assert decoded == [60, 45, 7, 60]
    with pytest.raises(StoreError, match="7 stored frames"):
        cached.frames("train", 2, np.array([7]))
    small = FrameStore(jpeg_counting_store, cache_bytes=50 * frame_bytes)  # video 0 (60 frames) can never fit
    decoded.clear()
    assert np.array_equal(small.frames("train", 0, positions), expected[0][positions])
    assert decoded == [4] and not small._decoded  # only the asked frames: no whole-video decode that is thrown away


def test_a_split_that_fits_is_decoded_up_front_for_forked_workers(jpeg_counting_store):
    """StoreSource(cache_mb) decodes the split before the DataLoader forks its workers, which then read memory;
    cached and uncached training clips are identical."""
    store = FrameStore(jpeg_counting_store, cache_bytes=10**6)
    assert store.decoded_bytes("train") == (60 + 45 + 7) * 24 * 32 * 3
    assert store.preload("train") and len(store._decoded) == 3
    assert not FrameStore(jpeg_counting_store, cache_bytes=10**4).preload("train")  # does not fit: lazily, LRU
    view = TrainView(num_frames=4, img_size=16, sampling="tsn", stride=4, crop="msc")
    cached = TrainClips(StoreSource(jpeg_counting_store, "train", cache_mb=1), view, seed=3)
    assert len(cached.source.store._decoded) == 3
    plain = TrainClips(StoreSource(jpeg_counting_store, "train"), view, seed=3)
    loader = torch.utils.data.DataLoader(cached, batch_size=3, num_workers=1)
    for epoch in range(3):
        cached.set_epoch(epoch)
        plain.set_epoch(epoch)
        (clips, labels, _), = list(loader)
        assert torch.equal(clips, torch.stack([plain[i][0] for i in range(3)]))


def test_store_source_reads_every_frame_in_order(counting_store):
    source = StoreSource(counting_store, "train")
    video = source.video(0)
    assert video.num_frames == 60
    assert frame_index(torch.from_numpy(video.read(np.arange(60))).permute(3, 0, 1, 2)) == list(range(60))


def test_training_clips_are_fresh_official_samples_over_many_epochs(counting_store):
    """S-TSN, r = 4, T = 4 on a 60-frame video: over epochs the starts cover 0..44 uniformly (chi-square), every
    clip is an official S-TSN index set, and nothing is confined to a few stored views."""
    view = TrainView(num_frames=4, img_size=16, sampling="tsn", stride=4, crop="msc")
    data = TrainClips(StoreSource(counting_store, "train"), view, seed=0)
    starts = []
    for epoch in range(900):
        data.set_epoch(epoch)
        clips, label, _ = data[0]
        idx = frame_index(clips[0])
        assert idx == [idx[0] + 4 * k for k in range(4)]  # never clamped: 60 >= T*r
        starts.append(idx[0])
    counts = np.bincount(starts, minlength=45)
    assert len(counts) == 45 and (counts > 0).all()  # every start of the official rule appears
    chi2 = ((counts - 20) ** 2 / 20).sum()
    assert chi2 < 95  # 44 degrees of freedom: P(chi2 > 95) < 1e-5


def test_segment_clips_draw_every_frame_of_each_segment(counting_store):
    view = TrainView(num_frames=4, img_size=16, sampling="seg", crop="rrc", crop_scale=(0.5, 1.0))
    data = TrainClips(StoreSource(counting_store, "train"), view, seed=1)
    seen = [set() for _ in range(4)]
    for epoch in range(300):
        data.set_epoch(epoch)
        for k, i in enumerate(frame_index(data[1][0][0])):  # 45 frames: a = 11, frames 44 never drawn
            seen[k].add(i)
    assert seen == [set(range(11 * k, 11 * k + 11)) for k in range(4)]


def test_short_video_is_padded_as_the_official_rule(counting_store):
    data = TrainClips(StoreSource(counting_store, "train"), TrainView(num_frames=4, img_size=16, stride=4), seed=0)
    expected = tsn_indices(7, 4, 4, np.random.default_rng(0)).tolist()  # s = 0; K = 1: 0, 4, 4, 4
    assert frame_index(data[2][0][0]) == expected == [0, 4, 4, 4]


def test_repeated_augmentation_shares_the_frames_and_draws_its_own_crops(counting_store):
    """VM:ssv2.py:93-103: one temporal sample per video, `num_sample` independently augmented copies."""
    view = TrainView(num_frames=4, img_size=16, sampling="seg", crop="rrc", flip=True, num_sample=3, reprob=1.0)
    data = TrainClips(StoreSource(counting_store, "train"), view, seed=2)
    clips, label, boxes = data[0]
    assert clips.shape == (3, 3, 4, 16, 16) and boxes.shape == (3, 4)
    assert frame_index(clips[0]) == frame_index(clips[1]) == frame_index(clips[2])
    assert len({tuple(b) for b in boxes.tolist()}) > 1  # each copy has its own erasing box


def test_samples_depend_on_seed_epoch_and_index_only(counting_store):
    view = TrainView(num_frames=4, img_size=16, sampling="tsn", stride=2, crop="rrc", randaugment="rand-m7-n4-mstd0.5-inc1",
                     reprob=0.5, flip=True)
    a = TrainClips(StoreSource(counting_store, "train"), view, seed=5)
    b = TrainClips(StoreSource(counting_store, "train"), view, seed=5)
    a.set_epoch(3)
    b.set_epoch(3)
    for i in (2, 0, 1):
        x, y = a[i], b[i]
        assert torch.equal(x[0], y[0]) and x[1] == y[1] and torch.equal(x[2], y[2])
    b.set_epoch(4)
    assert not torch.equal(a[0][0], b[0][0])


def test_erasing_fills_normalised_noise_per_frame():
    clips = torch.full((2, 3, 4, 8, 8), 128, dtype=torch.uint8)
    boxes = torch.tensor([[2, 2, 4, 4], [-1, -1, -1, -1]])
    x = normalize_and_erase(clips, boxes, torch.device("cpu"), torch.Generator().manual_seed(0))
    plain = normalize_and_erase(clips, None, torch.device("cpu"))
    assert torch.equal(x[1], plain[1]) and torch.equal(x[0, :, :, :2], plain[0, :, :, :2])
    box = x[0, :, :, 2:6, 2:6]
    assert not torch.equal(box[:, 0], box[:, 1])  # fresh noise in every frame
    assert abs(float(box.std()) - 1.0) < 0.3


def test_test_views_follow_the_protocol(counting_store):
    source = StoreSource(counting_store, "val")
    dense = EvalClips(source, EvalView(num_frames=4, img_size=16, sampling="dense", stride=4, clips=4, crops=3,
                                       short_side=16))
    views, label, index = dense[0]
    assert views.shape == (12, 3, 4, 16, 16) and index == 0
    expected = eval_clip_indices("dense", 60, 4, 4, 4)
    for c in range(4):
        for crop in range(3):  # clip-major: the 3 crops of clip c share its frames
            assert frame_index(views[3 * c + crop]) == expected[c].tolist()
    ssv2 = EvalClips(source, EvalView(num_frames=4, img_size=16, sampling="ssv2", clips=2, crops=1, short_side=16))
    views = ssv2[1][0]
    assert [frame_index(v) for v in views] == [c.tolist() for c in eval_clip_indices("ssv2", 45, 4, 1, 2)]


def test_monitor_view_is_one_fixed_training_rule_clip(counting_store):
    view = TrainView(num_frames=4, img_size=16, sampling="seg")
    data = MonitorClips(StoreSource(counting_store, "val"), view, seed=0)
    views, label, index = data[0]
    assert views.shape == (1, 3, 4, 16, 16)
    assert torch.equal(views, data[0][0])  # the same every epoch
    idx = frame_index(views[0])
    assert all(15 * k <= i < 15 * (k + 1) for k, i in enumerate(idx))


def test_file_source_gives_the_store_clips(tmp_path, counting_store):
    """Training straight from video files: same rule, same randomness, same pixels as the raw store."""
    paths = sorted((counting_store.parent / "videos" / "c").glob("*.mp4"))
    files = FileSource(paths, [0, 0, 0], ["c"])
    view = TrainView(num_frames=4, img_size=16, sampling="tsn", stride=4, crop="rrc", flip=True)
    a, b = TrainClips(files, view, seed=3), TrainClips(StoreSource(counting_store, "train"), view, seed=3)
    for i in range(3):
        assert torch.equal(a[i][0], b[i][0])


def test_unreadable_training_file_is_skipped_with_a_warning(tmp_path):
    good = counting_video(tmp_path / "good.mp4", 20)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    data = TrainClips(FileSource([bad, good], [1, 0], ["a", "b"]), TrainView(num_frames=4, img_size=16, stride=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clips, label, _ = data[0]
    assert label == 0 and clips.shape == (1, 3, 4, 16, 16)
    assert any("bad.mp4" in str(w.message) for w in caught)


def test_keep_every_divides_the_stride(tmp_path):
    counting_video(tmp_path / "v" / "c" / "a.mp4", 30)
    out = tmp_path / "s"
    assert folder.main(["--videos", str(tmp_path / "v"), "--out", str(out), "--keep-every", "2", "--codec", "raw"]) == 0
    source = StoreSource(out, "train")
    data = TrainClips(source, TrainView(num_frames=4, img_size=16, sampling="tsn", stride=4), seed=0)
    idx = frame_index(data[0][0][0])
    assert idx == [idx[0] + 4 * k for k in range(4)] and idx[0] % 2 == 0  # stride 4 in source frames
    with pytest.raises(StoreError, match="not a multiple of the store's keep_every 2"):
        TrainClips(source, TrainView(num_frames=4, img_size=16, sampling="tsn", stride=3))
    TrainClips(source, TrainView(num_frames=4, img_size=16, sampling="seg", stride=3))  # seg has no stride

