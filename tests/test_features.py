"""`video-adapt features`: window features of real encoded videos, their index, resuming, bad files, layers."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from videos import make_broken, make_video
from video_adapt.checkpoint import architecture_of, load_pretrained, save_adapters
from video_adapt.data.augment import eval_crops
from video_adapt.data.datasets import EvalView, views_of, views_of_windows
from video_adapt.data.decode import open_video
from video_adapt.data.protocol import DataProtocol
from video_adapt.data.sampling import window_starts
from video_adapt.data.transforms import normalize_clips, to_tensor_clip
from video_adapt.errors import ConfigError
from video_adapt.features import extract_features, load_feature_model, read_features, video_ids
from video_adapt.files import NpyWriter
from video_adapt.models.factory import create_model

FPS = 10
LENGTHS = {"a": 40, "b": 23, "c": 30}  # frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("feature_videos")
    for seed, (name, n) in enumerate(LENGTHS.items()):
        make_video(folder / f"{name}.mp4", n=n, h=32, w=40, fps=FPS, seed=seed)
    return folder


def backbone_model(backbone: Path) -> torch.nn.Module:
    model = create_model("vit_nano_patch8_32", num_classes=0)
    load_pretrained(model, backbone)
    return model.eval()


def clip_of(path: Path, indices: list[int]) -> torch.Tensor:
    """The normalised centre-cropped clip of these frames, made by hand (32 px short side, 32 px crop)."""
    clip = to_tensor_clip(open_video(path).read(indices))
    return normalize_clips(eval_crops(clip, short_side=32, crop=32, num_crops=1)[0]).unsqueeze(0)


def test_window_starts_keep_whole_windows_and_one_for_a_short_video():
    assert window_starts(40, 16, 8).tolist() == [0, 8, 16, 24]
    assert window_starts(40, 16, 16).tolist() == [0, 16]
    assert window_starts(16, 16, 4).tolist() == [0]
    assert window_starts(10, 16, 4).tolist() == [0]


def test_a_bad_window_or_stride_is_one_line_naming_the_option(videos, backbone, tmp_path):
    for option, bad in (("window", "2.5f"), ("window", "0"), ("stride", "-3"), ("stride", "ten")):
        with pytest.raises(ConfigError, match=f"--{option} '{bad}'"):
            extract_features(videos, tmp_path, backbone=backbone, workers=0, progress=False, **{option: bad})


def test_views_of_windows_equals_views_of_each_window(videos):
    reader = open_video(videos / "a.mp4")
    view = EvalView(num_frames=4, img_size=32, sampling="dense", stride=4, clips=2, crops=1, short_side=32)
    spans = [(0, 16), (8, 24), (24, 40)]
    together = views_of_windows(reader, view, 4, spans)
    assert [tuple(v.shape) for v in together] == [(2, 3, 4, 32, 32)] * 3
    for (start, end), views in zip(spans, together):
        assert torch.equal(views, views_of(reader, view, 4, start, end))


def test_window_count_and_start_times_follow_fps_and_length(videos, backbone, tmp_path):
    report = extract_features(videos, tmp_path / "f", backbone=backbone, window="16f", stride="8f", workers=0,
                              progress=False)
    assert (report.written, report.skipped, report.failures) == (3, 0, [])
    rows = {r["id"]: r for r in json.loads((tmp_path / "f" / "index.json").read_text())["videos"]}
    expected = {name: list(range(0, n - 16 + 1, 8)) for name, n in LENGTHS.items()}
    assert expected == {"a": [0, 8, 16, 24], "b": [0], "c": [0, 8]}
    for name, starts in expected.items():
        row = rows[name]
        assert (row["fps"], row["frames"], row["windows"]) == (FPS, LENGTHS[name], len(starts))
        assert row["window_start_frames"] == starts
        assert row["window_start_s"] == pytest.approx([s / FPS for s in starts])
        assert np.load(tmp_path / "f" / f"{name}.npy").shape == (len(starts), 32)
    assert report.windows == 7
    csv_lines = (tmp_path / "f" / "index.csv").read_text().splitlines()
    assert csv_lines[1].startswith("a,") and ",ok,a.npy,10.0,40,4,16,8,0 8 16 24,0.0 0.8 1.6 2.4," in csv_lines[1]
    # the same windows in seconds, decoded by two worker processes: the same arrays
    again = extract_features(videos, tmp_path / "s", backbone=backbone, window="1.6s", stride="0.8s", workers=2,
                             progress=False)
    assert again.written == 3
    for name in LENGTHS:
        assert np.allclose(np.load(tmp_path / "s" / f"{name}.npy"), np.load(tmp_path / "f" / f"{name}.npy"), atol=1e-5)


def test_pooled_feature_of_a_window_equals_the_models_feature_of_that_clip(videos, backbone, tmp_path):
    """Window 1 of a.mp4 (window 16, stride 8) starts at frame 8; 4 frames at stride 4 are frames 8, 12, 16, 20."""
    extract_features([videos / "a.mp4"], tmp_path, backbone=backbone, window="16f", stride="8f", workers=0, progress=False)
    features, row = read_features(tmp_path, "a")
    model = backbone_model(backbone)
    with torch.no_grad():
        for k, start in enumerate(row["window_start_frames"]):
            direct = model.forward_features(clip_of(videos / "a.mp4", [start, start + 4, start + 8, start + 12]))[0]
            assert np.allclose(features[k], direct.numpy(), atol=1e-4), k
    assert not np.allclose(features[0], features[1], atol=1e-2)  # the windows differ


def test_layer_choice_equals_a_forward_hook_on_that_block(videos, backbone, tmp_path):
    extract_features([videos / "c.mp4"], tmp_path / "l0", backbone=backbone, layer=0, workers=0, progress=False)
    extract_features([videos / "c.mp4"], tmp_path / "last", backbone=backbone, layer=-1, pool="mean", workers=0,
                     progress=False)
    first, row = read_features(tmp_path / "l0", "c")
    last, _ = read_features(tmp_path / "last", "c")
    settings = json.loads((tmp_path / "l0" / "index.json").read_text())["settings"]
    assert (settings["layer"], settings["pool"]) == (0, "mean")  # before the last block: the plain mean token
    model = backbone_model(backbone)
    captured = {}
    model.blocks[0].register_forward_hook(lambda module, args, output: captured.__setitem__("block0", output))
    with torch.no_grad():
        for k, start in enumerate(row["window_start_frames"]):
            final = model.forward_pooled(clip_of(videos / "c.mp4", [start + 4 * i for i in range(4)]))[0]
            assert np.allclose(first[k], captured["block0"][0].mean(0).numpy(), atol=1e-4)
            assert np.allclose(last[k], final.numpy(), atol=1e-4)
    assert np.abs(first - last).max() > 1e-2  # block 1 changes the features, 100x the tolerance above


def test_token_layout_keeps_the_token_grid(videos, backbone, tmp_path):
    extract_features([videos / "a.mp4"], tmp_path / "t", backbone=backbone, layer=0, pool="tokens", workers=0,
                     dtype="float16", progress=False)
    extract_features([videos / "a.mp4"], tmp_path / "m", backbone=backbone, layer=0, pool="mean", workers=0,
                     progress=False)
    tokens, _ = read_features(tmp_path / "t", "a")
    index = json.loads((tmp_path / "t" / "index.json").read_text())
    # 4 frames / tubelet 2, 32 px / 8 px patches, 32 wide: T' x H' x W' x D per window
    assert tokens.shape == (2, 2, 4, 4, 32) and tokens.dtype == np.float16
    assert index["settings"]["feature_shape"] == [2, 4, 4, 32]
    assert index["layout"] == "one <id>.npy per video: (windows, T'=2, H'=4, W'=4, D=32)"
    mean, _ = read_features(tmp_path / "m", "a")
    assert np.allclose(tokens.astype(np.float32).mean((1, 2, 3)), mean, atol=2e-3)


def test_resume_skips_done_videos_and_finishes_after_an_interruption(videos, backbone, tmp_path, monkeypatch):
    import video_adapt.features as features
    out = tmp_path / "f"
    real = features.views_of_windows

    def interrupted(reader, *args):
        if reader.path.endswith("b.mp4"):
            raise KeyboardInterrupt
        return real(reader, *args)

    monkeypatch.setattr(features, "views_of_windows", interrupted)
    with pytest.raises(KeyboardInterrupt):  # a batch of 2 windows: a.mp4's two windows are done before b.mp4 starts
        extract_features(videos, out, backbone=backbone, batch_size=2, workers=0, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "index.csv", "index.json"]  # no temporary left
    assert [r["id"] for r in json.loads((out / "index.json").read_text())["videos"]] == ["a"]
    done = (out / "a.npy").stat().st_mtime_ns
    monkeypatch.setattr(features, "views_of_windows", real)
    report = extract_features(videos, out, backbone=backbone, workers=0, progress=False)
    assert (report.written, report.skipped) == (2, 1)
    assert (out / "a.npy").stat().st_mtime_ns == done
    assert sorted(p.name for p in out.glob("*.npy")) == ["a.npy", "b.npy", "c.npy"]
    rows = json.loads((out / "index.json").read_text())["videos"]
    assert [(r["id"], r["status"]) for r in rows] == [("a", "ok"), ("b", "ok"), ("c", "ok")]
    # an array without its index row (killed between the two) is made again; other settings are refused
    index = json.loads((out / "index.json").read_text())
    index["videos"] = index["videos"][:2]
    (out / "index.json").write_text(json.dumps(index))
    assert extract_features(videos, out, backbone=backbone, workers=0, progress=False).written == 1
    with pytest.raises(ConfigError, match="other settings .*window '16f', now '8f'"):
        extract_features(videos, out, backbone=backbone, window="8f", workers=0, progress=False)
    with pytest.raises(ConfigError, match="3 frames at 32 px do not divide into the model's tubelets of 2 frames"):
        extract_features(videos, tmp_path / "odd", backbone=backbone, num_frames=3, workers=0, progress=False)


def test_a_corrupt_file_is_named_counted_and_skipped(videos, backbone, tmp_path, capsys):
    from video_adapt.cli.features import main
    bad = make_broken(tmp_path / "bad")
    inputs = [str(videos / "a.mp4"), str(bad["garbage"]), str(bad["truncated"]), str(videos / "b.mp4")]
    code = main([*inputs, "--backbone", str(backbone), "--out", str(tmp_path / "f"), "--workers", "0"])
    captured = capsys.readouterr()
    assert code == 0
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 2 and str(bad["garbage"]) in errors[0] and str(bad["truncated"]) in errors[1]
    assert "Traceback" not in captured.err
    assert "features of 2 videos written, 0 already done, 2 failed" in captured.out
    rows = {r["id"]: r for r in json.loads((tmp_path / "f" / "index.json").read_text())["videos"]}
    assert {k: r["status"] for k, r in rows.items()} == {"a": "ok", "garbage": "failed", "truncated": "failed",
                                                          "b": "ok"}
    assert str(bad["garbage"]) in rows["garbage"]["error"]
    assert sorted(p.name for p in (tmp_path / "f").glob("*.npy")) == ["a.npy", "b.npy"]
    assert main([str(bad["garbage"]), "--backbone", str(backbone), "--out", str(tmp_path / "g")]) == 1


def test_features_with_adapters_come_from_the_tuned_model(videos, backbone, tmp_path):
    torch.manual_seed(3)
    tuned = create_model("vit_nano_patch8_32", num_classes=3, tuning="adaptformer", bottleneck=4)
    load_pretrained(tuned, backbone)
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "adapter" in name:
                p.normal_(0, 0.2)
    record = DataProtocol(num_frames=4, img_size=32, stride=2, test_clips=1, test_crops=1).record()
    save_adapters(tuned, tmp_path / "adapters", ["x", "y", "z"], extra={"data": record})
    extract_features([videos / "b.mp4"], tmp_path / "f", backbone=backbone, adapters=tmp_path / "adapters",
                     workers=0, progress=False)
    features, row = read_features(tmp_path / "f", "b")
    assert row["window_frames"] == 8 and row["window_start_frames"] == [0, 8]  # 4 frames x the protocol's stride 2
    with torch.no_grad():
        direct = tuned.eval().forward_features(clip_of(videos / "b.mp4", [8, 10, 12, 14]))[0].numpy()
        plain = backbone_model(backbone).forward_features(clip_of(videos / "b.mp4", [8, 10, 12, 14]))[0].numpy()
    assert np.allclose(features[1], direct, atol=1e-4)
    assert np.abs(features[1] - plain).max() > 0.1
    model, protocol = load_feature_model(backbone, tmp_path / "adapters")
    assert model.tuning.method == "adaptformer" and protocol.stride == 2


def test_names_that_collide_stop_the_job_before_it_starts(videos, tmp_path):
    make_video(tmp_path / "other" / "a.mp4", n=12)
    assert video_ids([str(videos / "a.mp4"), str(videos / "b.mp4")]) == ["a", "b"]
    with pytest.raises(ConfigError, match="same name"):
        video_ids([str(videos / "a.mp4"), str(tmp_path / "other" / "a.mp4")])


def test_a_backbone_file_is_rebuilt_from_its_shapes(backbone, tmp_path):
    assert architecture_of(backbone) == ("vit_nano_patch8_32", {})
    wide = create_model("vit_tiny_patch8_32", num_classes=0, tubelet_size=1, mlp_ratio=2.0)
    torch.save(wide.state_dict(), tmp_path / "w.pth")
    assert architecture_of(tmp_path / "w.pth") == ("vit_tiny_patch8_32", {"tubelet_size": 1, "mlp_ratio": 2.0})
    odd = create_model("vit_nano_patch8_32", num_classes=0, embed_dim=48, num_heads=2)
    torch.save(odd.state_dict(), tmp_path / "odd.pth")
    with pytest.raises(Exception, match="no model preset is 48 wide with 2 blocks and 8 px patches"):
        architecture_of(tmp_path / "odd.pth")


def test_npy_writer_publishes_only_complete_arrays(tmp_path):
    writer = NpyWriter(tmp_path / "x.npy", (3, 2), "float16")
    writer.array[:2] = 1.0
    assert not (tmp_path / "x.npy").exists() and [p.name for p in tmp_path.iterdir()] == [f".x.tmp{os.getpid()}.npy"]
    writer.array[2] = 2.0
    writer.commit()
    assert np.load(tmp_path / "x.npy").tolist() == [[1, 1], [1, 1], [2, 2]]
    dropped = NpyWriter(tmp_path / "y.npy", (1,), "float32")
    dropped.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_forward_layer_stops_after_the_block_asked_for(backbone):
    model = backbone_model(backbone)
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.pool_tokens(model.forward_layer(x)), model.forward_pooled(x))
        tokens = model.forward_tokens(model.embed(x), model.patch_embed.grid(4, 32, 32), blocks=1)
        assert torch.equal(model.forward_layer(x, 0), tokens) and torch.equal(model.forward_layer(x, -2), tokens)
    with pytest.raises(ValueError, match="not a block"):
        model.forward_layer(x, 2)
