"""The official temporal index rules, checked against transcriptions of the official loaders' loops.

Each reference below follows the cited lines step by step (offsets, clamps, padding), with the random draw made
explicit, so that every possible draw can be enumerated: for each draw value our rule must give the official
indices, and our draw must range over the same values.
"""
import numpy as np
import pytest

from video_adapt.data.sampling import (
    dense_test_clips,
    lin_indices,
    seg_indices,
    ssv2_test_clips,
    eval_clip_indices,
    train_indices,
    tsn_indices,
)

LENGTHS = [1, 2, 3, 5, 7, 8, 15, 16, 17, 29, 31, 32, 33, 45, 64, 90, 301]


class FixedDraws:
    """A stand-in for numpy's Generator whose `integers` returns chosen values (and records its bounds)."""

    def __init__(self, *values):
        self.values = list(values)
        self.bounds = []

    def integers(self, low, high=None, size=None):
        self.bounds.append((low, high, size))
        value = self.values.pop(0)
        return np.asarray(value) if size is not None else value


def official_tsn(n, t, r, draw):
    """VM:kinetics.py:515-550 (`_sample_train_indices`, num_segments=1, no jitter; `_video_TSN_decord_batch_loader`),
    identical at AF:datasets/kinetics.py:539-574. `draw` is np.random.randint(average_duration)."""
    skip_length = t * r
    average_duration = (n - skip_length + 1) // 1
    if average_duration > 0:
        offsets = [0 + draw]
    elif n > max(1, skip_length):
        raise AssertionError("unreachable for one segment")
    else:
        offsets = [0]
    offsets = [o + 1 for o in offsets]
    frame_ids = []
    for seg in offsets:
        offset = int(seg)
        for _ in range(0, skip_length, r):
            frame_ids.append(offset - 1 if offset + 0 <= n else offset - 1)
            if offset + r < n:
                offset += r
    return frame_ids


def official_lin(n, t, r, draw):
    """VM:kinetics.py:251-272 (num_segment=1); AF:datasets/kinetics.py:275-296. `draw` is randint(converted_len, seg_len)."""
    converted_len = t * r
    seg_len = n
    if seg_len <= converted_len:
        index = np.linspace(0, seg_len, num=seg_len // r)
        index = np.concatenate((index, np.ones(t - seg_len // r) * seg_len))
        index = np.clip(index, 0, seg_len - 1).astype(np.int64)
    else:
        end_idx = draw
        str_idx = end_idx - converted_len
        index = np.linspace(str_idx, end_idx, num=t)
        index = np.clip(index, str_idx, end_idx - 1).astype(np.int64)
    return list(index)


def official_seg(n, t, draws):
    """VM:ssv2.py:250-263 (training branch). `draws` is randint(average_duration, size=T)."""
    average_duration = n // t
    if average_duration > 0:
        return list(np.multiply(list(range(t)), average_duration) + np.asarray(draws))
    if n > t:
        raise AssertionError("unreachable: average_duration == 0 means n < t")
    return list(np.zeros((t,), dtype=np.int64))


def official_dense_test(n, t, r, s):
    """VM:kinetics.py:243-249 (all_index) and 137-152 (temporal_start); AF:datasets/kinetics.py:267-273, 162-177."""
    all_index = [x for x in range(0, n, r)]
    while len(all_index) < t:
        all_index.append(all_index[-1])
    buffer = np.asarray(all_index)
    clips = []
    for chunk_nb in range(s):
        temporal_step = max(1.0 * (buffer.shape[0] - t) / (s - 1), 0)
        temporal_start = int(chunk_nb * temporal_step)
        clips.append(list(buffer[temporal_start:temporal_start + t]))
    return clips


def official_ssv2_test(n, t):
    """VM:ssv2.py:238-248 (all_index, test_num_segment = 2) and VM:ssv2.py:140-147 (buffer[temporal_start::2])."""
    tick = n / float(t)
    all_index = list(np.array([int(tick / 2.0 + tick * x) for x in range(t)] + [int(tick * x) for x in range(t)]))
    while len(all_index) < t * 2:
        all_index.append(all_index[-1])
    buffer = np.sort(np.array(all_index))
    return [list(buffer[c::2]) for c in range(2)]


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("t,r", [(8, 4), (16, 2), (4, 1), (8, 2), (16, 4)])
def test_tsn_matches_the_official_loader_for_every_start(n, t, r):
    room = n - t * r + 1
    for draw in range(max(room, 1)):
        rng = FixedDraws(draw)
        ours = tsn_indices(n, t, r, rng) if room > 0 else tsn_indices(n, t, r, np.random.default_rng(0))
        assert ours.tolist() == official_tsn(n, t, r, draw if room > 0 else 0), (n, t, r, draw)
        if room > 0:
            assert rng.bounds == [(0, room, None)]  # the start is uniform over 0..N-T*r, as randint(N-T*r+1)
    assert all(0 <= i < n for i in tsn_indices(n, t, r, np.random.default_rng(1)))


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("t,r", [(8, 4), (16, 4), (16, 2), (4, 1)])
def test_lin_matches_the_official_loader_for_every_end(n, t, r):
    span = t * r
    if n <= span:
        assert lin_indices(n, t, r, np.random.default_rng(0)).tolist() == official_lin(n, t, r, None)
        return
    for end in range(span, n):
        rng = FixedDraws(end)
        assert lin_indices(n, t, r, rng).tolist() == official_lin(n, t, r, end), (n, t, r, end)
        assert rng.bounds == [(span, n, None)]  # randint(converted_len, seg_len): ends span..N-1


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("t", [2, 4, 8, 16])
def test_seg_matches_the_official_loader(n, t):
    a = n // t
    if a == 0:
        assert seg_indices(n, t, np.random.default_rng(0)).tolist() == [0] * t
        return
    rng = np.random.default_rng(n * 31 + t)
    for _ in range(20):
        draws = rng.integers(0, a, size=t)
        fixed = FixedDraws(draws)
        assert seg_indices(n, t, fixed).tolist() == [int(v) for v in official_seg(n, t, draws)]
        assert fixed.bounds == [(0, a, t)]  # randint(average_duration, size=T): independent per segment


def test_seg_reaches_every_frame_of_each_segment_and_none_beyond():
    rng = np.random.default_rng(0)
    seen = np.stack([seg_indices(19, 4, rng) for _ in range(800)])  # a = 4: frames 16-18 are never used
    for k in range(4):
        assert set(seen[:, k].tolist()) == set(range(4 * k, 4 * k + 4))


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("t,r,s", [(8, 4, 4), (16, 4, 5), (8, 2, 2), (16, 2, 5), (4, 1, 3)])
def test_dense_test_clips_match_the_official_views(n, t, r, s):
    ours = [c.tolist() for c in dense_test_clips(n, t, r, s)]
    assert ours == [[int(i) for i in c] for c in official_dense_test(n, t, r, s)]
    assert all(len(c) == t for c in ours)


def test_dense_single_clip_is_centred():
    # subsequence 0, 4, ..., 96 (25 frames): the centred window of 8 starts at (25 - 8) // 2 = 8 -> frame 32
    assert dense_test_clips(100, 8, 4, 1)[0].tolist() == list(range(32, 64, 4))


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("t", [2, 4, 8, 16])
def test_ssv2_test_clips_match_the_official_views(n, t):
    ours = [c.tolist() for c in ssv2_test_clips(n, t)]
    assert ours == [[int(i) for i in c] for c in official_ssv2_test(n, t)]


def test_ssv2_test_clips_are_segment_starts_then_centres():
    starts, centres = ssv2_test_clips(32, 8)
    assert starts.tolist() == [0, 4, 8, 12, 16, 20, 24, 28]
    assert centres.tolist() == [2, 6, 10, 14, 18, 22, 26, 30]


def test_training_rules_cover_the_whole_video_not_a_fixed_set_of_views():
    """Fresh draws every call: over many epochs every possible window start of a 300-frame video appears."""
    rng = np.random.default_rng(0)
    starts = {int(tsn_indices(300, 8, 4, rng)[0]) for _ in range(20000)}
    assert starts == set(range(300 - 32 + 1))


def test_tsn_start_distribution_is_uniform_chi_square():
    rng = np.random.default_rng(1)
    n, t, r = 60, 8, 4  # 29 possible starts
    counts = np.bincount([int(tsn_indices(n, t, r, rng)[0]) for _ in range(29 * 400)], minlength=29)
    expected = 400
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 70  # 28 degrees of freedom: P(chi2 > 70) < 1e-4


def test_rule_names_and_errors():
    rng = np.random.default_rng(0)
    assert train_indices("seg", 16, 4, 4, rng).shape == (4,)
    assert len(eval_clip_indices("dense", 40, 8, 4, 4)) == 4
    with pytest.raises(ValueError, match="unknown training sampling rule"):
        train_indices("segment", 16, 4, 4, rng)
    with pytest.raises(ValueError, match="unknown test sampling rule"):
        eval_clip_indices("centre", 16, 4, 4, 2)
    with pytest.raises(ValueError, match="1 or 2 temporal clips"):
        ssv2_test_clips(16, 4, 3)
    with pytest.raises(ValueError, match="at least 1"):
        tsn_indices(0, 8, 4, rng)


def test_window_spans_are_seconds_or_frames():
    from video_adapt.data.sampling import parse_span, span_frames, span_text, window_starts
    assert [parse_span(t) for t in ("2", "0.5s", "16f", " 3F ")] == [2.0, 0.5, "16f", "3f"]
    for bad in ("0", "-1", "1.5f", "two", "0f"):
        with pytest.raises(ValueError):
            parse_span(bad)
    assert [span_frames(s, 8) for s in (2.0, "0.5s", "16f", 0.01)] == [16, 4, 16, 1]
    assert (span_text(2.0), span_text("16f")) == ("2 s", "16 frames")
    # the offline timeline's rule: windows that fit, every stride; a shorter video is one window
    assert window_starts(48, span_frames(2.0, 8), span_frames(1.0, 8)).tolist() == [0, 8, 16, 24, 32]
    assert window_starts(32, span_frames(1.0, 16), span_frames("4f", 16)).tolist() == [0, 4, 8, 12, 16]
    assert window_starts(10, span_frames(1.0, 16), span_frames(0.25, 16)).tolist() == [0]
