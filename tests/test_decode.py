import subprocess
import sys

import numpy as np
import pytest

from videos import frame_pattern, make_broken, make_video
from video_adapt.data.decode import BACKENDS, VideoDecodeError, open_video


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi"])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_backend_reads_the_requested_frames(tmp_path, suffix, backend):
    path = make_video(tmp_path / f"v{suffix}", n=12, h=32, w=40)
    reader = open_video(path, [backend])
    assert (reader.num_frames, reader.height, reader.width) == (12, 32, 40)
    frames = reader.read([0, 5, 11, 5])
    assert frames.shape == (4, 32, 40, 3) and frames.dtype == np.uint8
    expected = frame_pattern(12, 32, 40)[[0, 5, 11, 5]].mean(axis=(1, 2, 3))
    assert np.allclose(frames.mean(axis=(1, 2, 3)), expected, atol=4)  # lossy codecs, right frames


@pytest.mark.parametrize("kind", ["empty", "garbage", "text", "truncated"])
def test_broken_files_fail_with_one_line_naming_the_file(tmp_path, kind):
    path = make_broken(tmp_path)[kind]
    if kind == "truncated":  # the frames before the damage are still usable
        try:
            reader = open_video(path)
        except VideoDecodeError as err:
            assert str(path) in str(err)
            return
        assert reader.num_frames >= 1
        assert reader.read([0]).shape[0] == 1
        return
    with pytest.raises(VideoDecodeError) as err:
        open_video(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(VideoDecodeError, match="no such file"):
        open_video(tmp_path / "nope.mp4")
    with pytest.raises(VideoDecodeError, match="directory"):
        open_video(tmp_path)


def test_odd_sizes_greyscale_and_single_frame(tmp_path):
    odd = make_video(tmp_path / "odd.avi", n=5, h=33, w=47)
    assert open_video(odd).read([4]).shape == (1, 33, 47, 3)
    grey = make_video(tmp_path / "grey.mkv", n=4, pix_fmt="gray")
    frames = open_video(grey).read([0, 3])
    assert frames.shape == (2, 32, 40, 3) and np.array_equal(frames[..., 0], frames[..., 1])
    one = make_video(tmp_path / "one.mp4", n=1)
    assert open_video(one).num_frames == 1


@pytest.mark.parametrize("size", [(36, 48), (18, 24)])
def test_a_size_decord_opens_but_cannot_batch_is_read_by_the_next_backend(tmp_path, size):
    """decord 0.6 opens these sizes and returns their single frames with 4 channels, but every batch read fails: the
    file must go to PyAV at open, not fail at the first read."""
    h, w = size
    path = make_video(tmp_path / "v.mp4", n=12, h=h, w=w)
    reader = open_video(path)
    frames = reader.read([0, 5, 11])
    assert frames.shape == (3, h, w, 3)
    expected = frame_pattern(12, h, w)[[0, 5, 11]].mean(axis=(1, 2, 3))
    assert np.allclose(frames.mean(axis=(1, 2, 3)), expected, atol=4)


def test_out_of_range_index_is_an_error(tmp_path):
    reader = open_video(make_video(tmp_path / "v.mp4", n=6))
    with pytest.raises(VideoDecodeError, match="out of range"):
        reader.read([6])


@pytest.mark.parametrize("first_import", ["av, decord", "video_adapt.data.decode"])
def test_vp9_encoding_works_after_our_decoder_module_is_imported(tmp_path, first_import):
    """decord bundles its own FFmpeg: loaded before PyAV it breaks PyAV's VP9 encoder (avcodec_open2 error 22).
    Our decode module imports av first, so encoding and decoding can share a process."""
    code = (f"import {first_import}\n"
            "import sys; sys.path.insert(0, 'tests')\n"
            "from videos import make_video\n"
            f"make_video(__import__('pathlib').Path(r'{tmp_path}') / 'x.webm', n=3)\n"
            "from video_adapt.data.decode import open_video\n"
            f"print(open_video(r'{tmp_path}/x.webm').num_frames)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "3"
