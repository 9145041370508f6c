"""Multi-label tasks (several actions per video, Charades-style): label-set lists, multi-label stores, sigmoid + BCE,
mixup of multi-hot targets, mAP in tests and tables, thresholds in inference; a generated multi-label task end to
end."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from videos import make_video
from data_prep import folder
from video_adapt.config import load_config
from video_adapt.data.check import check_store
from video_adapt.data.datasets import FileSource, StoreSource, labels_tensor, multi_hot
from video_adapt.data.listing import holdout, read_list
from video_adapt.data.prepare import PrepError, PrepOptions, SplitSpec, VideoEntry, prepare_store
from video_adapt.data.protocol import DataProtocol, combine_views
from video_adapt.data.store import FrameStore, class_counts, label_indices, label_text
from video_adapt.data.synthetic import SyntheticSpec, generate_clip, generate_multilabel_clip, make_synthetic_store
from video_adapt.engine.builders import MultiLabelLoss, VideoMixup, build_loss, smooth_multilabel
from video_adapt.engine.evaluation import average_precisions, summarize_multilabel
from video_adapt.errors import ConfigError
from video_adapt.experiments import GridResult, aggregate, markdown_table, write_csv


def test_average_precision_matches_a_hand_computed_example():
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float32)
    scores = np.array([[0.9, 0.2, 0.5], [0.8, 0.6, 0.1], [0.7, 0.4, 0.3], [0.1, 0.8, 0.9]])
    mean_ap, per_class = average_precisions(targets, scores)
    # class 0 ranks positive (0.9), negative (0.8), positive (0.7): precision 1 at recall 1/2, 2/3 at recall 1
    assert per_class[0] == pytest.approx(100 * (0.5 * 1 + 0.5 * 2 / 3))
    assert per_class[1] == pytest.approx(100.0)  # its three positives rank first
    assert np.isnan(per_class[2])  # no positive among the videos: left out of the mean
    assert mean_ap == pytest.approx((100 * (0.5 + 1 / 3) + 100) / 2)
    # scores that rank nothing: AP is the share of positives, the chance level
    assert average_precisions(targets[:, :2], np.zeros((4, 2)))[1] == pytest.approx([50.0, 75.0])


def test_multilabel_summary_lists_each_videos_classes_and_predictions():
    targets = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32)
    probs = np.array([[0.9, 0.3, 0.6], [0.2, 0.4, 0.1]])
    result = summarize_multilabel(np.array([5, 7]), targets, probs)
    assert result.multilabel and result.metric == "mAP" and result.score == result.mean_ap == pytest.approx(100.0)
    assert result.predictions == [{"index": 5, "labels": [0, 2], "pred": [0, 2], "top": 0, "score": 0.9},
                                  {"index": 7, "labels": [1], "pred": [], "top": 1, "score": 0.4}]
    bce = -np.mean(np.log([0.9, 0.7, 0.6, 0.8, 0.4, 0.9]))
    assert result.loss == pytest.approx(bce, rel=1e-6) and np.isnan(result.top1)


def test_label_set_lists_read_indices_names_and_videos_without_labels(tmp_path):
    (tmp_path / "names.csv").write_text("a.mp4 run jump\nb.mp4,sit\nc.mp4\t jump , run\nd.mp4\n")
    classes, entries = read_list(tmp_path / "names.csv", tmp_path, None, multilabel=True)
    assert classes == ["jump", "run", "sit"]
    assert [(e.id, e.label) for e in entries] == [("a", (0, 1)), ("b", (2,)), ("c", (0, 1)), ("d", ())]
    (tmp_path / "ints.csv").write_text("x.mp4 3 0\n")
    classes, entries = read_list(tmp_path / "ints.csv", tmp_path, None, multilabel=True)
    assert classes == ["0", "1", "2", "3"] and entries[0].label == (0, 3)
    (tmp_path / "bad.csv").write_text("x.mp4 run fly\n")
    with pytest.raises(PrepError, match="bad.csv:1: unknown class 'fly'"):
        read_list(tmp_path / "bad.csv", tmp_path, ["jump", "run"], multilabel=True)
    # single-label lists read as before; a multi-label hold-out draws from all videos
    (tmp_path / "single.csv").write_text("a.mp4 run\nb.mp4 jump\n")
    assert [e.label for e in read_list(tmp_path / "single.csv", tmp_path, None)[1]] == [1, 0]
    many = [VideoEntry(str(i), f"{i}.mp4", (i % 3,)) for i in range(10)]
    train, val = holdout(many, 0.3, seed=0)
    assert len(val) == 3 and len(train) == 7 and not {e.id for e in train} & {e.id for e in val}


def test_multilabel_store_records_label_sets(tmp_path):
    for i in range(3):
        make_video(tmp_path / "v" / f"{i}.mp4", n=8 + i, seed=i)
    (tmp_path / "train.csv").write_text("v/0.mp4 run jump\nv/1.mp4 sit\nv/2.mp4\n")
    code = folder.main(["--list", str(tmp_path / "train.csv"), "--root", str(tmp_path), "--multilabel",
                        "--out", str(tmp_path / "store")])
    assert code == 0
    store = FrameStore(tmp_path / "store")
    assert store.meta.multilabel and store.classes == ["jump", "run", "sit"]
    assert json.loads((tmp_path / "store" / "meta.json").read_text())["multilabel"] is True
    assert [store.split("train").videos[r]["label"] for r in range(3)] == ["0 1", "2", ""]
    assert store.meta.splits["train"].per_class == [1, 1, 1]
    source = StoreSource(tmp_path / "store", "train")
    assert source.multilabel and [s.tolist() for s in source.labels] == [[1, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert labels_tensor(source.labels).shape == (3, 3)
    assert check_store(tmp_path / "store", progress=False) == []
    # training takes the store's kind; a config that says otherwise stops before anything runs
    from video_adapt.engine.data import data_facts
    assert data_facts(load_config("demo/base", [f"data.root={tmp_path / 'store'}"])).multilabel
    with pytest.raises(ConfigError, match="data.multilabel=false but the store .* holds a set of labels per video"):
        data_facts(load_config("demo/base", [f"data.root={tmp_path / 'store'}", "data.multilabel=false"]))
    # training straight from the video files reads the same label sets
    from video_adapt.engine.data import open_source
    files = load_config("demo/base", ["data.source=videos", f"data.root={tmp_path}", "data.multilabel=true",
                                      f"data.train_list={tmp_path / 'train.csv'}"])
    assert data_facts(files).multilabel
    assert [t.tolist() for t in open_source(files, "train").labels] == [[1, 1, 0], [0, 0, 1], [0, 0, 0]]
    # single-label stores keep the meta.json they always had
    single = prepare_store(tmp_path / "single", ["a"], [SplitSpec("train", [VideoEntry("0", str(tmp_path / "v" / "0.mp4"), 0)])],
                           PrepOptions(), source="t", flip=True, progress=False)
    assert "multilabel" not in json.loads((single.out / "meta.json").read_text())
    with pytest.raises(PrepError, match="needs a set of labels per video"):
        prepare_store(tmp_path / "mixed", ["a"], [SplitSpec("train", [VideoEntry("0", "x.mp4", 0)])], PrepOptions(),
                      source="t", flip=True, progress=False, multilabel=True)


def test_class_folders_cannot_be_multilabel(tmp_path, capsys):
    make_video(tmp_path / "v" / "run" / "0.mp4", n=8)
    assert folder.main(["--videos", str(tmp_path / "v"), "--multilabel", "--out", str(tmp_path / "s")]) == 2
    assert "class folders give each video one label" in capsys.readouterr().err


def test_label_cells_and_targets():
    assert label_text(3) == "3" and label_text((0, 4)) == "0 4" and label_text(()) == ""
    assert label_indices("0 4") == [0, 4] and label_indices("") == [] and label_indices("-1") == [-1]
    assert class_counts(["0 2", "2", "", "1 2"], 3) == [1, 1, 3] and class_counts(["1", "-1"], 2) == [0, 1]
    assert multi_hot([0, 2], 4).tolist() == [1, 0, 1, 0]
    source = FileSource(["a.mp4", "b.mp4"], [(0, 2), ()], ["x", "y", "z"], multilabel=True)
    assert [t.tolist() for t in source.labels] == [[1, 0, 1], [0, 0, 0]]


def test_views_combine_through_a_sigmoid_per_class():
    logits = torch.tensor([[[2.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])  # one video, two views
    mean_logits = combine_views(logits, "logits", multilabel=True)
    assert torch.allclose(mean_logits, torch.sigmoid(torch.tensor([[1.0, 0.0, 0.0]])))
    mean_probs = combine_views(logits, "softmax", multilabel=True)
    assert torch.allclose(mean_probs, torch.sigmoid(logits).mean(1))
    assert not torch.allclose(mean_probs.sum(-1), torch.ones(1))  # independent per class, not a distribution
    assert DataProtocol.from_record({"num_frames": 4, "img_size": 32, "multilabel": True}).multilabel
    assert not DataProtocol.from_record({"num_frames": 4, "img_size": 32}).multilabel  # records made before


def test_mixup_mixes_multi_hot_targets_with_the_clips_weights():
    torch.manual_seed(0)
    np.random.seed(0)
    clips = torch.randn(4, 3, 2, 8, 8)
    labels = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=torch.float32)
    mixed, targets = VideoMixup(0.8, 0.0, 0.0, 3, multilabel=True)(clips.clone(), labels)
    lam = float(((mixed[0] - clips[3]) / (clips[0] - clips[3])).median())  # batch mode: x0 mixed with its mirror x3
    assert torch.allclose(mixed, lam * clips + (1 - lam) * clips.flip(0), atol=1e-5)
    assert torch.allclose(targets, lam * labels + (1 - lam) * labels.flip(0), atol=1e-6)
    mixed, targets = VideoMixup(0.0, 1.0, 0.1, 3, multilabel=True)(clips.clone(), labels)
    kept = (mixed[1] == clips[1]).float().mean()  # cutmix: the share of clip 1 left in place
    assert torch.allclose(targets[1], smooth_multilabel(kept * labels[1] + (1 - kept) * labels[2], 0.1), atol=1e-6)
    assert smooth_multilabel(torch.tensor([1.0, 0.0]), 0.1).tolist() == pytest.approx([0.95, 0.05])


def test_multilabel_loss_is_binary_cross_entropy_per_class():
    cfg = load_config("demo/base", ["train.label_smoothing=0.2", "data.multilabel=true"])
    mixup, loss = build_loss(cfg, 3)
    assert mixup is None and isinstance(loss, MultiLabelLoss)
    logits, targets = torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([[1.0, 0.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets * 0.8 + 0.1)
    assert torch.allclose(loss(logits, targets), expected)


def test_comparison_tables_report_map_and_never_mix_it_with_top1(tmp_path):
    def result(seed: int, metric: str) -> GridResult:
        final = {"final_map": 60.0 + seed} if metric == "mAP" else {"final_top1": 50.0}
        return GridResult("linear", 8, seed, str(tmp_path), {"metric": metric, **final, "trainable_params": 10,
                                                              "trainable_ratio": 0.1, "wall_time_s": 2.0})
    cells = aggregate([result(0, "mAP"), result(2, "mAP")])
    assert cells[0].metric == "mAP" and cells[0].top1_mean == pytest.approx(61.0)
    assert "mAP (%) of the final multi-view test" in markdown_table(cells)
    assert write_csv(cells, tmp_path / "t.csv").read_text().startswith("method,frames,seeds,map_mean,map_std")
    with pytest.raises(ConfigError, match="different metrics"):
        aggregate([result(0, "mAP"), result(1, "top-1")])


def test_synthetic_multilabel_clips_show_every_action_at_once():
    spec = SyntheticSpec(size=32, frames=8, num_classes=4, max_actions=3)
    clip = generate_multilabel_clip([0, 3], np.random.default_rng(1), spec)
    assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, generate_multilabel_clip([0, 3], np.random.default_rng(1), spec))
    # one action drawn through the multi-label path is the single-label clip
    assert np.array_equal(generate_multilabel_clip([2], np.random.default_rng(4), spec),
                          generate_clip(2, np.random.default_rng(4), spec))
    with pytest.raises(ValueError, match="distinct"):
        generate_multilabel_clip([1, 1], np.random.default_rng(0), spec)
    with pytest.raises(ValueError, match="max_actions"):
        SyntheticSpec(num_classes=2, max_actions=3)


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory) -> tuple[Path, Path]:
    """A generated multi-label task (4 motions, 1-3 at once, 32 training and 16 validation videos) and a linear probe
    of the demo backbone trained on it with mixup/cutmix, 6 epochs."""
    from video_adapt.engine import train
    out = tmp_path_factory.mktemp("multilabel")
    spec = SyntheticSpec(size=32, frames=16, num_classes=4, max_actions=3)
    report = make_synthetic_store(out / "data", spec, 8, 4, seed=0, progress=False)
    assert report.failed == 0
    train(load_config("demo/base", [f"data.root={out / 'data' / 'store'}", f"out_dir={out / 'run'}",
                                    "model.tuning=linear", "train.epochs=6", "train.warmup_epochs=1",
                                    "train.eval_every=1", "data.batch_size=8", "train.mixup=0.8", "train.cutmix=1.0",
                                    "train.label_smoothing=0.1"]))
    return out / "data", out / "run"


@pytest.mark.slow
def test_a_generated_multilabel_task_trains_above_chance(multilabel_run):
    data, run = multilabel_run
    lines = (data / "val.csv").read_text().splitlines()
    sets = [line.split()[1:] for line in lines]
    assert len(lines) == 16 and {len(s) for s in sets} == {1, 2, 3}
    chance = 100 * np.mean([[str(c) in s for c in range(4)] for s in sets])  # AP of an uninformed ranking
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metric"] == "mAP" and summary["final_top1"] is None
    assert summary["final_map"] > chance + 20, (summary["final_map"], chance)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[-2:] == ["val_map", "val_loss"] and len(rows) == 7
    assert float(rows[-1].split(",")[-2]) == pytest.approx(summary["monitor_map"])
    metrics = json.loads((run / "test_val" / "metrics.json").read_text())
    assert metrics["mAP"] == pytest.approx(summary["final_map"]) and metrics["multilabel"] is True
    per_class = (run / "test_val" / "per_class.csv").read_text().splitlines()
    assert per_class[0] == "class,positives,ap" and len(per_class) == 5
    assert (run / "test_val" / "predictions.csv").read_text().startswith("video,labels,predicted,top,score,exact")


@pytest.mark.slow
def test_test_command_and_inference_of_a_multilabel_run(multilabel_run, tmp_path, capsys):
    from video_adapt import predict
    from video_adapt.analysis import tsne_runs
    from video_adapt.cli import main
    data, run = multilabel_run
    assert main(["test", str(run), "--out", str(tmp_path / "t")]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert f"val: mAP {summary['final_map']:.2f}  (16 videos" in capsys.readouterr().out
    videos = sorted(str(p) for p in (data / "videos" / "val").glob("*.mp4"))[:3]
    results = predict(videos, checkpoint=str(run), topk=4, threshold=0.5)
    for r in results:
        probs = dict(r.top)
        assert len(probs) == 4 and all(0 < p < 1 for p in probs.values())
        assert [label for label, _ in r.labels] == [label for label, p in r.top if p >= 0.5]
        assert r.as_dict()["labels"] == [{"label": label, "prob": round(p, 6)} for label, p in r.labels]
    assert all(len(r.labels) == 4 for r in predict(videos, checkpoint=str(run), threshold=0.0))
    assert all(r.labels == [] for r in predict(videos, checkpoint=str(run), threshold=1.0))
    assert main(["infer", videos[0], "--checkpoint", str(run), "--threshold", "0.0"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  labels >= 0: "))
    assert set(line.removeprefix("  labels >= 0: ").split(", ")) == {"sliding right", "sliding left", "sliding down",
                                                                     "sliding up"}
    with pytest.raises(ConfigError, match="multi-label run"):
        tsne_runs({"linear": run}, tmp_path / "tsne.png")


@pytest.mark.slow
def test_linear_probe_on_cached_features_trains_a_multilabel_task(multilabel_run, tmp_path):
    from video_adapt.engine import train
    data, _ = multilabel_run
    summary = train(load_config("demo/base", [f"data.root={data / 'store'}", f"out_dir={tmp_path}",
                                              "model.tuning=linear", "train.feature_cache=3", "train.epochs=6",
                                              "train.warmup_epochs=1", "data.batch_size=8"]))
    assert summary["feature_cache"]["views"] == 3 and summary["metric"] == "mAP"
    sets = [line.split()[1:] for line in (data / "val.csv").read_text().splitlines()]
    chance = 100 * np.mean([[str(c) in s for c in range(4)] for s in sets])
    assert summary["final_map"] > chance + 20 and summary["monitor_map"] > chance + 20


@pytest.mark.slow
def test_a_multilabel_run_exports_with_map_and_a_sigmoid_hugging_face_config(multilabel_run, tmp_path, capsys):
    """--evaluate reports mAP for every runtime (top-1 is undefined for label sets), int8 included, and the Hugging
    Face directory says multi-label, so its pipeline scores each class with a sigmoid as `video-adapt infer` does."""
    pytest.importorskip("onnxruntime")
    transformers = pytest.importorskip("transformers")
    from video_adapt.cli.export import main
    from video_adapt.export.manifest import read_manifest
    _, run = multilabel_run
    out = tmp_path / "export"
    assert main([str(run), "--format", "onnx", "hf", "--int8", "--evaluate", "--out", str(out)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    accuracy = read_manifest(out)["accuracy"]
    assert set(accuracy) == {"torch eager fp32", "onnx fp32", "onnx int8"}
    assert accuracy["torch eager fp32"]["mAP"] == pytest.approx(summary["final_map"])
    assert accuracy["onnx fp32"]["mAP"] == pytest.approx(summary["final_map"], abs=1e-3)
    assert all("top1" not in a and np.isfinite(a["mAP"]) for a in accuracy.values())
    assert f"onnx int8: mAP {accuracy['onnx int8']['mAP']:.2f} on 16 videos" in capsys.readouterr().out
    config = transformers.AutoConfig.from_pretrained(str(out))
    assert config.problem_type == "multi_label_classification"
