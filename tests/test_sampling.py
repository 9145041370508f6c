import numpy as np
import pytest

from video_adapt.data.sampling import (
    dense_indices,
    dense_test_indices,
    dense_train_indices,
    eval_clip_indices,
    segment_indices,
    subsample_positions,
)


def test_segment_test_clips_are_centres_then_starts():
    # 16 frames, 4 segments of 4 frames: centres 2, 6, 10, 14; starts 0, 4, 8, 12
    assert segment_indices(16, 4, train=False, clip=0).tolist() == [2, 6, 10, 14]
    assert segment_indices(16, 4, train=False, clip=1).tolist() == [0, 4, 8, 12]
    # 10 frames, 4 segments: edges 0, 2.5, 5, 7.5, 10 -> centres 1.25, 3.75, 6.25, 8.75
    assert segment_indices(10, 4, train=False).tolist() == [1, 3, 6, 8]


def test_segment_training_draws_one_frame_inside_each_segment():
    rng = np.random.default_rng(0)
    seen = np.stack([segment_indices(16, 4, train=True, rng=rng) for _ in range(400)])
    for s in range(4):
        assert set(seen[:, s].tolist()) == {4 * s, 4 * s + 1, 4 * s + 2, 4 * s + 3}


def test_short_video_pads_by_repeating_frames():
    assert segment_indices(3, 8, train=False).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert dense_indices(5, 4, stride=2, start=0).tolist() == [0, 2, 4, 4]
    assert dense_train_indices(1, 4, 3).tolist() == [0, 0, 0, 0]


def test_dense_rules_by_hand():
    assert dense_indices(100, 4, stride=4, start=10).tolist() == [10, 14, 18, 22]
    # span 13 frames in a 33-frame video: room 20, 3 clips start at 0, 10, 20
    assert [c[0] for c in dense_test_indices(33, 4, 4, 3)] == [0, 10, 20]
    assert dense_test_indices(33, 4, 4, 1)[0].tolist() == [10, 14, 18, 22]
    rng = np.random.default_rng(1)
    starts = {int(dense_train_indices(20, 4, 2, rng)[0]) for _ in range(300)}
    assert starts == set(range(0, 14))  # span 7: starts 0..13


def test_eval_clip_indices_dispatches_and_rejects_unknown_rules():
    assert len(eval_clip_indices("segment", 30, 8, 2)) == 2
    assert len(eval_clip_indices("dense", 30, 8, 5, stride=2)) == 5
    with pytest.raises(ValueError, match="unknown sampling rule"):
        eval_clip_indices("uniform", 30, 8, 2)


def test_derived_segments_are_uniform_over_the_larger_segment():
    rng = np.random.default_rng(0)
    picks = np.stack([subsample_positions(16, 4, "segment", True, rng) for _ in range(800)])
    assert set(picks[:, 1].tolist()) == {4, 5, 6, 7}  # one of the 4 stored frames of merged segment 1
    assert subsample_positions(16, 4, "segment", False).tolist() == [2, 6, 10, 14]
    assert subsample_positions(16, 4, "dense", False).tolist() == [6, 7, 8, 9]
    with pytest.raises(ValueError):
        subsample_positions(16, 3, "segment", True)


def test_empty_video_is_an_error():
    with pytest.raises(ValueError, match="0 frames"):
        segment_indices(0, 4, train=False)
