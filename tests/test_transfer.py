"""The transfer suite: its task families (video_adapt.data.transfer), the pretraining corpus's random scenes
(video_adapt.data.scenes) and `video-adapt transfer` end to end on real mp4 files."""
import json
import math

import cv2
import numpy as np
import pytest
import yaml

from video_adapt.data.decode import open_video
from video_adapt.data.scenes import (
    SOURCE_CLASSES,
    SceneObject,
    SceneSpec,
    generate_scene,
    generate_source_clip,
    render_scene,
)
from video_adapt.data.synthetic import polygon
from video_adapt.data.transfer import FAMILIES, TransferSpec, family_clip, motion_path, pink_noise
from video_adapt.errors import ConfigError
from video_adapt.experiments import Cell
from video_adapt.transfer_suite import backbone_key, difference, load_suite, prepare_family, suite_rows, suite_table

TINY = {"size": 32, "video_frames": 16, "train_per_class": 2, "val_per_class": 1, "seed": 0}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_paired_classes_are_the_same_frames_played_backwards(name):
    """So the frames of paired classes have one distribution: no single frame (nor a bag of them) tells them apart."""
    classes = FAMILIES[name].classes
    assert len(classes) == 6 and len(set(classes)) == 6
    for seed in (0, 1):
        for base in range(3):
            forward = family_clip(name, 2 * base, np.random.default_rng(seed))
            backward = family_clip(name, 2 * base + 1, np.random.default_rng(seed))
            assert forward.shape == (16, 32, 32, 3) and forward.dtype == np.uint8
            assert np.array_equal(backward, forward[::-1])
            # ... and order does decide: a clip is far from its own reversal (not a symmetric motion)
            assert np.abs(forward.astype(float) - forward[::-1]).mean() > 3.0


def test_clips_are_fixed_by_the_random_stream_and_labels_are_checked():
    a = family_clip("camera", 2, np.random.default_rng(4), TransferSpec(size=24, frames=8))
    assert a.shape == (8, 24, 24, 3)
    assert np.array_equal(a, family_clip("camera", 2, np.random.default_rng(4), TransferSpec(size=24, frames=8)))
    assert not np.array_equal(a, family_clip("camera", 2, np.random.default_rng(5), TransferSpec(size=24, frames=8)))
    with pytest.raises(ValueError, match="out of range 0..5"):
        family_clip("motion", 6, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="unknown transfer family 'nope'; one of: motion, appearance"):
        family_clip("nope", 0, np.random.default_rng(0))


def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far the content of frame a moved to reach frame b (x, y in pixels), by phase correlation."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float64) for f in (a, b)]
    return np.array(cv2.phaseCorrelate(grey[0], grey[1])[0])


def test_camera_zooming_in_magnifies_the_scene():
    spec = TransferSpec(noise=0.0)
    for seed in range(4):
        zoom = family_clip("camera", 0, np.random.default_rng(seed), spec).astype(np.float32)
        # the last frame is the first one's middle (1.6-2x smaller) blown up: far closer than the first frame itself
        middle = cv2.resize(zoom[0][7:25, 7:25], (32, 32), interpolation=cv2.INTER_LINEAR)
        assert np.abs(middle - zoom[-1]).mean() < 0.5 * np.abs(zoom[0] - zoom[-1]).mean()


def _centroid(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Where a moving object is: the centre of the pixels far from the clip's median frame (the ground stays)."""
    ys, xs = np.nonzero(np.abs(frame.astype(float) - background).sum(-1) > 60)
    return np.array([xs.mean(), ys.mean()])


def test_appearance_fill_drifts_inside_a_still_outline_on_a_still_ground():
    for seed in range(3):
        clip = family_clip("appearance", 2, np.random.default_rng(seed), TransferSpec(noise=0.0)).astype(float)
        change = np.abs(clip - clip[0]).sum(-1).max(0)  # each pixel's largest change over the clip
        assert change[:4].max() == change[-4:].max() == change[:, :4].max() == change[:, -4:].max() == 0
        assert np.median(change[13:19, 13:19]) > 20


def test_motion_paths_circle_clockwise_bounce_lower_and_speed_up():
    t = np.linspace(0, 1, 161)
    for seed in range(4):
        x, y = motion_path(0, np.random.default_rng(seed), 32, t, 4.0)
        cx, cy = (x.max() + x.min()) / 2, (y.max() + y.min()) / 2
        r = np.hypot(x - cx, y - cy)
        assert np.allclose(r, r[0], atol=1e-6) and 6.4 <= r[0] <= 8
        turn = np.unwrap(np.arctan2(y - cy, x - cx))
        assert np.all(np.diff(turn) > 0) and math.isclose(turn[-1] - turn[0], 2 * math.pi)  # clockwise on screen
        x, y = motion_path(1, np.random.default_rng(seed), 32, t, 4.0)
        floor = 32 - 4.0 - 1
        peaks = [floor - y[t < 0.5].min(), floor - y[t >= 0.5].min()]
        assert y.max() <= floor + 1e-9 and peaks[1] < 0.8 * peaks[0]  # the bounces die down
        x, y = motion_path(2, np.random.default_rng(seed), 32, t, 4.0)
        step = np.hypot(np.diff(x), np.diff(y))
        assert np.all(np.diff(step) > 0)  # faster and faster
        assert math.isclose(np.hypot(x[-1] - x[80], y[-1] - y[80]), 3 * np.hypot(x[80] - x[0], y[80] - y[0]))


def test_pink_noise_has_a_falling_spectrum_zero_mean_and_unit_std():
    field = pink_noise(np.random.default_rng(0), 64)
    assert abs(field.mean()) < 1e-5 and abs(field.std() - 1) < 1e-3
    power = np.abs(np.fft.fft2(field)) ** 2
    assert power[1:3, 1:3].mean() > 20 * power[16:32, 16:32].mean()


def _where(frame: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """The centre of the pixels of one colour (within a few grey levels: edges are antialiased)."""
    ys, xs = np.nonzero(np.abs(frame.astype(float) - colour).sum(-1) < 30)
    return np.array([xs.mean(), ys.mean()])


def test_a_panning_camera_moves_the_ground_and_what_stands_on_it_against_the_pan():
    spec = SceneSpec(noise=0.0)
    pan = np.array([12.0, -6.0])
    still = SceneObject(polygon(np.random.default_rng(0)), np.array([230.0, 20.0, 20.0]), None, np.array([16.0, 16.0]),
                        np.zeros(2), 5.0, 0.0, 0.0, 0.0)
    clip = render_scene(np.random.default_rng(1), spec, [still], pan)
    assert np.allclose(_shift(clip[0], clip[-1]), -pan, atol=0.5)
    assert np.allclose(_where(clip[-1], still.colour) - _where(clip[0], still.colour), -pan, atol=1.0)
    walker = SceneObject(still.shape, still.colour, None, np.array([10.0, 16.0]), np.array([12.0, 0.0]), 5.0, 0.0,
                         0.0, 0.0)
    clip = render_scene(np.random.default_rng(1), spec, [walker], pan)
    assert np.allclose(_where(clip[-1], still.colour) - _where(clip[0], still.colour), walker.velocity - pan, atol=1.0)


def test_scene_source_classes_slide_one_object_the_way_they_are_named():
    directions = {4: (1, 0), 5: (-1, 0), 6: (0, 1), 7: (0, -1)}
    for label, direction in directions.items():
        for seed in range(3):
            slide = generate_source_clip(label, np.random.default_rng(seed), SceneSpec(noise=0.0))
            first, last = (_centroid(slide[i], np.median(slide, 0)) for i in (0, -1))
            assert np.dot(last - first, direction) > 5, (label, seed, first, last)
    assert [generate_source_clip(k, np.random.default_rng(0)).shape for k in range(4)] == [(16, 32, 32, 3)] * 4
    with pytest.raises(ValueError, match="out of range 0..7"):
        generate_source_clip(len(SOURCE_CLASSES), np.random.default_rng(0))


def test_random_scenes_are_fixed_by_the_random_stream_and_vary():
    a = generate_scene(np.random.default_rng(3))
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, generate_scene(np.random.default_rng(3)))
    assert np.abs(a.astype(float) - generate_scene(np.random.default_rng(4))).mean() > 10


def test_broad_corpus_is_half_benchmark_half_scenes_and_the_cache_gives_the_same_clips():
    import torch
    from video_adapt.data.synthetic import CLASSES, SyntheticSpec, generate_clip
    from video_adapt.pretraining import SyntheticClips, corpus_video
    benchmark = [int(np.array_equal(corpus_video("broad", i, 0, 32, 16), generate_clip(
        int(np.random.default_rng((0, 7, i)).integers(0, len(CLASSES))), np.random.default_rng((0, 8, i)),
        SyntheticSpec(size=32)))) for i in range(60)]
    assert 20 <= sum(benchmark) <= 40
    cached = SyntheticClips(12, 8, 32, corpus="broad", cache=True)
    fresh = SyntheticClips(12, 8, 32, corpus="broad")
    for epoch in (0, 3):
        cached.set_epoch(epoch)
        fresh.set_epoch(epoch)
        assert all(torch.equal(cached[i], fresh[i]) for i in range(12))


def test_each_family_writes_balanced_mp4_files_and_a_store(tmp_path):
    from video_adapt.data.store import FrameStore
    for name in FAMILIES:
        store = prepare_family(tmp_path / name, name, TINY, progress=False)
        for split, per_class in (("train", 2), ("val", 1)):
            rows = (tmp_path / name / f"{split}.csv").read_text().split("\n")[:-1]
            labels = [int(row.split()[1]) for row in rows]
            assert sorted(labels) == sorted(list(range(6)) * per_class)
            for row in rows[:2]:
                path = tmp_path / name / "videos" / row.split()[0]
                assert path.suffix == ".mp4"
                frames = open_video(path).read(np.arange(16))
                assert frames.shape == (16, 32, 32, 3)
        assert FrameStore(store).classes == list(FAMILIES[name].classes)


def test_difference_and_rows_compare_each_variant_with_the_control():
    cells = {"motion": [Cell("adaptformer", 8, 3, 60.0, 2.0, 5, 0.02, 10.0, 1.0),
                        Cell("random", 8, 3, 40.0, 1.0, 5, 0.02, 10.0, 1.0)]}
    diff, se = difference(*cells["motion"])
    assert diff == 20.0 and math.isclose(se, math.sqrt(4 / 3 + 1 / 3))
    rows = suite_rows(cells, "random")
    assert len(rows) == 1 and rows[0]["difference"] == 20.0 and rows[0]["control_mean"] == 40.0
    table = suite_table(rows, "demo_backbone-abc", "random")
    assert "| motion | 8 | 60.0 ± 2.0 | 40.0 ± 1.0 | +20.0 | 1.3 |" in table
    assert "adaptformer on demo_backbone-abc" in table


def test_backbone_runs_are_named_by_the_file_hash(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b" / "a.safetensors"
    b.parent.mkdir()
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert backbone_key(None) == backbone_key("none") == "none"
    assert backbone_key(str(a)).startswith("a-") and backbone_key(str(a)) != backbone_key(str(b))
    with pytest.raises(ConfigError, match="backbone file not found"):
        backbone_key(str(tmp_path / "missing.pth"))


def test_suite_grid_names_its_data_and_control(tmp_path):
    grid = load_suite()
    assert grid["data"]["families"] == list(FAMILIES) and grid["frames"] == [8] and grid["seeds"] == [0, 1, 2]
    assert grid["data"]["control"] in [v.name for v in grid["variants"]]
    bad = tmp_path / "grid.yaml"
    bad.write_text(yaml.safe_dump({"data": {k: v for k, v in TINY.items() if k != "seed"}, "frames": [8],
                                   "seeds": [0], "variants": {"a": [], "b": []}}))
    with pytest.raises(ConfigError, match="data.families is missing"):
        load_suite(bad)


@pytest.mark.slow
def test_transfer_command_runs_the_suite_end_to_end_and_reuses_its_runs(tmp_path, backbone, capsys):
    """Two families on tiny mp4 datasets, a tiny backbone file against the random control, one epoch."""
    from video_adapt.cli.transfer import main
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "data": {**TINY, "families": ["interaction", "camera"], "control": "random"}, "frames": [4], "seeds": [0],
        "variants": {"adaptformer": ["model.tuning=adaptformer"],
                     "random": ["model.tuning=adaptformer", "model.pretrained=none"]}}))
    tiny = ["model.name=vit_nano_patch8_32", "model.bottleneck=4", "train.epochs=1", "train.warmup_epochs=0",
            "data.batch_size=4"]
    out = tmp_path / "out"
    argv = [*tiny, "--grid", str(grid), "--backbone", str(backbone), "--out", str(out)]
    assert main(argv) == 0
    key = backbone_key(str(backbone))
    summary = json.loads((out / f"summary_{key}.json").read_text())
    assert [r["family"] for r in summary["rows"]] == ["interaction", "camera"]
    for row in summary["rows"]:
        run = json.loads((out / "runs" / row["family"] / key / "adaptformer" / "4f" / "seed0" / "summary.json")
                         .read_text())
        control = json.loads((out / "runs" / row["family"] / "random" / "random" / "4f" / "seed0" / "summary.json")
                             .read_text())
        assert row["top1_mean"] == run["final_top1"] and row["control_mean"] == control["final_top1"]
        assert math.isclose(row["difference"], run["final_top1"] - control["final_top1"])
        assert run["pretrained"] == str(backbone) and control["pretrained"] == "none"
    table = (out / f"table_{key}.md").read_text()
    assert table.count("\n| interaction | 4 |") + table.count("\n| camera | 4 |") == 2
    capsys.readouterr()
    stamp = (out / "runs" / "camera" / key / "adaptformer" / "4f" / "seed0" / "summary.json").stat().st_mtime_ns
    assert main(argv) == 0  # finished runs are reused, nothing trains again
    assert "epoch" not in capsys.readouterr().err
    assert (out / "runs" / "camera" / key / "adaptformer" / "4f" / "seed0" / "summary.json").stat().st_mtime_ns == stamp


def test_transfer_command_refuses_an_unknown_family_in_one_line(tmp_path, capsys):
    from video_adapt.cli.transfer import main
    assert main(["--families", "motion", "weather", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "error: unknown transfer family 'weather'; one of: motion, appearance, interaction, camera\n"
    assert not (tmp_path / "data").exists()
