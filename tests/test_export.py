"""Export (video_adapt.export, `video-adapt export`) and the runtimes behind inference (`infer --runtime`): every
method in every format with tiny models, the self-check, the Hugging Face format through `from_pretrained` and the
`video-classification` pipeline on real mp4 files, int8, and the one-line errors."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_models import clips, randomize_, tiny_model
from videos import write
from video_adapt.checkpoint import save_adapters, to_hf_keys, to_videomae_keys
from video_adapt.data.synthetic import SyntheticSpec, generate_clip
from video_adapt.errors import CheckpointError, ExportError
from video_adapt.export import export_model, load_runtime
from video_adapt.export.check import compare_logits
from video_adapt.export.manifest import EXPORT_CONFIG, read_manifest
from video_adapt.models.methods import METHODS

NAMES = [f"class {i}" for i in range(5)]
# the run's data section as training records it: what inference needs to make the test views
DATA = {"num_frames": 4, "img_size": 32, "test_sampling": "ssv2", "test_clips": 2, "test_crops": 1,
        "test_short_side": 32, "view_average": "logits", "stride": 4}
MERGEABLE = ("full", "linear", "bitfit", "lora")
SHAPE = (3, 4, 32, 32)


def trained_like(method: str, seed: int = 0):
    """A tiny model of `method` whose every tensor (adapters, LoRA's B, head_bn statistics) is away from its initial
    value, so that no zero hides a mapping or folding mistake."""
    kwargs = {"head_bn": True} if method in ("adaptformer", "linear") else {}
    if method == "bitfit":
        kwargs["init_values"] = 0.1  # layer scale folds into the Hugging Face weights too
    model = randomize_(tiny_model(method, **kwargs), seed=seed, std=0.2).eval()
    if model.head_bn is not None:
        model.head_bn.running_mean.normal_(0, 0.5)
        model.head_bn.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def mp4s(tmp_path_factory) -> list[Path]:
    """Real H.264 files of the synthetic task at the tiny model's size: 16 frames at 8 fps (2 s)."""
    folder = tmp_path_factory.mktemp("export_videos")
    spec = SyntheticSpec(size=32, frames=16)
    return [write(folder / f"clip{c}.mp4", generate_clip(c, np.random.default_rng(c), spec), fps=8) for c in range(3)]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """An adapter directory of a full fine-tune, as training writes it (weights, build args, class names, data)."""
    out = tmp_path_factory.mktemp("full_run") / "adapters"
    save_adapters(trained_like("full", seed=3), out, NAMES, extra={"data": DATA})
    return out


@pytest.fixture(scope="module")
def exported(full_run, tmp_path_factory) -> Path:
    """`video-adapt export` of the full fine-tune in every graph format, int8 included."""
    from video_adapt.cli.export import main
    out = tmp_path_factory.mktemp("exported")
    assert main([str(full_run), "--format", "onnx", "openvino", "torch-export", "--int8", "--out", str(out)]) == 0
    return out


def test_hf_names_are_ours_read_backwards():
    state = trained_like("full").state_dict()
    hf = to_hf_keys({k: v for k, v in state.items() if not k.startswith("head_bn.")})
    assert "videomae.encoder.layer.1.attention.attention.query.bias" in hf and "classifier.weight" in hf
    back = to_videomae_keys(hf)
    assert set(back) == {k for k in state if not k.startswith("head_bn.")}
    assert all(torch.equal(back[k], state[k]) for k in back)
    with pytest.raises(CheckpointError, match="blocks.0.mlp_adapter.down.weight: Hugging Face VideoMAE has no place"):
        to_hf_keys(trained_like("adaptformer").state_dict())


def test_export_leaves_the_model_runnable_in_eager_mode():
    """torch.export traces with fake tensors; a position table cached while tracing broke every later eager call."""
    model = tiny_model(embed_dim=24).eval()  # a width no other test uses: its table is computed while tracing
    torch.export.export(model, (clips(2),))
    with torch.no_grad():
        out = model(clips(2))
    assert type(out) is torch.Tensor and torch.isfinite(out).all()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_exports_checked_and_runs_in_every_runtime(method, tmp_path):
    model = trained_like(method)
    formats = ["onnx", "openvino", "torch-export"] + (["hf"] if method in MERGEABLE else [])
    result = export_model(model, NAMES, DATA, formats, tmp_path)
    manifest = read_manifest(tmp_path)
    assert set(manifest["files"]) == set(formats) and manifest["method"] == method
    assert manifest["class_names"] == NAMES and manifest["data"] == DATA
    assert manifest["input"]["shape"] == ["batch", *SHAPE]
    for name in formats:
        assert result.checks[name].max_abs_diff < 1e-4 and manifest["checks"][name]["max_abs_diff"] < 1e-4
    assert not list(tmp_path.glob(".staging-*"))
    x = clips(5, seed=11)  # a batch the self-check did not use
    with torch.no_grad():
        ref = model(x)
    for runtime in ("onnx", "openvino", "torch"):
        session = load_runtime(tmp_path, runtime)
        assert session.class_names == NAMES
        assert (session(x) - ref).abs().max() < 1e-4, runtime
    if method in MERGEABLE:
        from transformers import VideoMAEForVideoClassification
        hf = VideoMAEForVideoClassification.from_pretrained(str(tmp_path)).eval()
        assert hf.config.id2label[4] == "class 4" and hf.config.num_frames == 4
        with torch.no_grad():
            assert (hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits - ref).abs().max() < 1e-4


@pytest.mark.parametrize("method", ["adaptformer", "vpt", "st_adapter"])
def test_methods_that_do_not_merge_are_refused_the_hf_format_in_one_line(method, tmp_path):
    with pytest.raises(ExportError, match=r"^" + method + r": .* do not merge .*--format onnx") as err:
        export_model(trained_like(method), NAMES, DATA, ["onnx", "hf"], tmp_path)
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())  # refused before anything was written


def test_self_check_fails_on_a_tampered_file_and_publishes_nothing(tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper
    from video_adapt.export import graphs

    real = graphs.write_onnx

    def tampered(program, path, weight_bytes):
        files = real(program, path, weight_bytes)
        graph = onnx.load(str(path))
        for init in graph.graph.initializer:
            if init.name.endswith("head.bias"):
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.5, init.name))
        onnx.save(graph, str(path))
        return files

    monkeypatch.setattr(graphs, "write_onnx", tampered)
    with pytest.raises(ExportError, match=r"onnx: self-check failed: logits differ from eager PyTorch by 0\.5\d* "
                                          r"\(max abs\) .* above the tolerance 0\.0001; nothing was written"):
        export_model(trained_like("full"), NAMES, DATA, ["onnx"], tmp_path)
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / EXPORT_CONFIG).exists()
    assert not list(tmp_path.glob(".staging-*"))


def test_compare_logits_catches_nan_a_wrong_shape_and_a_crash():
    model = trained_like("full")
    with pytest.raises(ExportError, match="above the tolerance"):
        compare_logits(model, lambda x: model(x) * float("nan"), SHAPE, "x")
    with pytest.raises(ExportError, match=r"logits of shape \(1, 4\)"):
        compare_logits(model, lambda x: model(x)[:, :4], SHAPE, "x")
    with pytest.raises(ExportError, match=r"x: the exported model does not run on a batch of 1 \(boom\)"):
        compare_logits(model, lambda x: (_ for _ in ()).throw(RuntimeError("boom")), SHAPE, "x")
    measured = compare_logits(model, lambda x: model(x) + 1.0, SHAPE, "x", tolerance=None)
    assert measured.max_abs_diff == pytest.approx(1.0, abs=1e-5) and measured.top1_agreement == 1.0


def test_a_second_export_of_the_same_weights_adds_formats_and_other_weights_replace_them(tmp_path):
    export_model(trained_like("full"), NAMES, DATA, ["torch-export"], tmp_path)
    export_model(trained_like("full"), NAMES, DATA, ["onnx"], tmp_path)
    assert set(read_manifest(tmp_path)["files"]) == {"torch-export", "onnx"}
    export_model(trained_like("full", seed=1), NAMES, DATA, ["onnx"], tmp_path)
    assert set(read_manifest(tmp_path)["files"]) == {"onnx"} and not (tmp_path / "model.pt2").exists()


def test_int8_file_is_measured_and_runs(exported):
    manifest = read_manifest(exported)
    assert manifest["files"]["onnx-int8"] == "model.int8.onnx" and manifest["checks"]["onnx-int8"]["tolerance"] is None
    import onnx
    fp32_graph, int8_graph = (onnx.load(str(exported / name)).graph for name in ("model.onnx", "model.int8.onnx"))
    weights = {i.name for i in fp32_graph.initializer}
    with_weights = [n for n in fp32_graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]
    # every product with a constant weight runs on int8; attention's activation x activation products stay fp32
    assert sum(n.op_type == "MatMulInteger" for n in int8_graph.node) == len(with_weights) > 0
    fp32, int8 = load_runtime(exported, "onnx"), load_runtime(exported, "onnx", "int8")
    x = clips(4, seed=5)
    assert 0 < (int8(x) - fp32(x)).abs().max() < 0.2 * fp32(x).abs().max()


def test_infer_runtimes_give_torchs_top_k_and_timeline_on_mp4_files(full_run, exported, mp4s, tmp_path):
    from video_adapt.cli.infer import main
    from video_adapt.inference import Predictor
    files = [str(p) for p in mp4s]
    outputs = {}
    for runtime, checkpoint in (("torch", full_run), ("onnx", exported), ("openvino", exported),
                                ("torch-export", exported)):
        out = tmp_path / f"{runtime}.json"
        flags = ["--runtime", "torch" if runtime == "torch-export" else runtime]
        assert main([*files, "--checkpoint", str(checkpoint), *flags, "--topk", "3", "--json", str(out)]) == 0
        outputs[runtime] = json.loads(out.read_text())
    ref = outputs["torch"]
    for runtime, rows in outputs.items():
        assert [[t["label"] for t in r["top"]] for r in rows] == [[t["label"] for t in r["top"]] for r in ref], runtime
        assert np.allclose([[t["prob"] for t in r["top"]] for r in rows],
                           [[t["prob"] for t in r["top"]] for r in ref], atol=1e-4), runtime
    eager, onnx = Predictor.load(str(full_run), device="cpu"), Predictor.load(str(exported), runtime="onnx")
    assert onnx.runtime.startswith("onnxruntime fp32") and onnx.protocol.views_text() == eager.protocol.views_text()
    long = write(tmp_path / "long.mp4", np.concatenate(
        [generate_clip(c, np.random.default_rng(c), SyntheticSpec(size=32, frames=16)) for c in (0, 1, 2)]), fps=8)
    a, b = eager.timeline(str(long), 2, 1), onnx.timeline(str(long), 2, 1)
    assert [(w.start_s, w.end_s, w.label) for w in a.windows] == [(w.start_s, w.end_s, w.label) for w in b.windows]


def test_the_web_page_serves_an_export(exported, full_run, mp4s):
    from video_adapt.app import classify_file
    from video_adapt.inference import Predictor
    page = classify_file(Predictor.load(str(exported), runtime="openvino"), str(mp4s[0]), 2, 1, 10**7)
    ref = classify_file(Predictor.load(str(full_run), device="cpu"), str(mp4s[0]), 2, 1, 10**7)
    assert page.ok and list(page.top) == list(ref.top)
    assert np.allclose(list(page.top.values()), list(ref.top.values()), atol=1e-4)
    assert np.array_equal(page.strip, ref.strip)


def _pipeline_inputs_of_ours(frames: np.ndarray) -> torch.Tensor:
    """Our test-time transform (short side to 32, one centre crop, ImageNet normalisation) of decoded frames, in
    Hugging Face's layout (1, T, 3, H, W)."""
    from video_adapt.data.augment import eval_crops
    from video_adapt.data.transforms import normalize_clips, to_tensor_clip
    view = eval_crops(to_tensor_clip(frames), short_side=32, crop=32, num_crops=1)[0]
    return normalize_clips(view).permute(1, 0, 2, 3).unsqueeze(0)


@pytest.fixture(scope="module")
def hf_export(tmp_path_factory):
    model = trained_like("linear", seed=4)
    out = tmp_path_factory.mktemp("hf_export")
    export_model(model, NAMES, DATA, ["hf"], out)
    return model, out


def _torchcodec_decodes() -> bool:
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401  the decoder transformers' video processor uses
        return True
    except Exception:  # not installed, or no FFmpeg libraries for it to load
        return False


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.skipif(not _torchcodec_decodes(), reason="transformers' video processor decodes files with torchcodec, "
                                                      "which needs `pip install torchcodec` and FFmpeg's libraries")
def test_hf_pipeline_classifies_an_mp4_as_our_model_does(hf_export, mp4s):
    from transformers import pipeline
    model, out = hf_export
    pipe = pipeline("video-classification", model=str(out))
    inputs = pipe.preprocess(str(mp4s[1]))
    with torch.no_grad():
        ours = model(inputs["pixel_values"].permute(0, 2, 1, 3, 4)).softmax(-1)[0]
    top = pipe(str(mp4s[1]), top_k=5)
    assert [t["label"] for t in top] == [NAMES[i] for i in ours.argsort(descending=True)]
    assert np.allclose([t["score"] for t in top], ours.sort(descending=True).values.numpy(), atol=1e-4)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_hf_pipeline_with_its_pyav_reader_sees_our_pixels_and_gives_our_scores(hf_export, mp4s):
    """The pipeline's image-processor path (PyAV: the first num_frames frames): our preprocessor config resizes,
    crops and normalises as our test views do, and the scores are our model's."""
    import av
    from transformers import pipeline
    model, out = hf_export
    pipe = pipeline("video-classification", model=str(out))
    pipe.video_processor = None  # its own fallback for models with an image processor only; decodes with PyAV
    inputs = pipe.preprocess(str(mp4s[2]))
    with av.open(str(mp4s[2])) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)][:4])
    assert torch.allclose(inputs["pixel_values"], _pipeline_inputs_of_ours(frames), atol=1e-5)
    with torch.no_grad():
        ours = model(_pipeline_inputs_of_ours(frames).permute(0, 2, 1, 3, 4)).softmax(-1)[0]
    top = pipe(str(mp4s[2]), top_k=5)
    assert [t["label"] for t in top] == [NAMES[i] for i in ours.argsort(descending=True)]
    assert np.allclose([t["score"] for t in top], ours.sort(descending=True).values.numpy(), atol=1e-4)


def test_bad_input_is_one_line_and_exit_2(full_run, tmp_path, capsys, monkeypatch):
    from video_adapt.cli.export import main
    from video_adapt.cli.infer import main as infer
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  tuning: full\n")
    cases = {
        "no weights": ([str(run), "--format", "onnx", "--out", str(tmp_path / "a")],
                       "a training run without trained weights"),
        "unknown format": ([str(full_run), "--format", "tflite", "--out", str(tmp_path / "b")],
                           "unknown export format 'tflite'; one of onnx, openvino, torch-export, hf"),
        "not an export": (None, "runs an export directory; write one with video-adapt export"),
    }
    for name, (argv, message) in cases.items():
        code = main(argv) if argv else infer([str(tmp_path), "--checkpoint", str(full_run), "--runtime", "onnx"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and err.startswith("error: ") and "\n" not in err, name
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the optional package were not installed
    assert main([str(full_run), "--format", "openvino", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: openvino is not installed (OpenVINO files and runtime need it): "
                   "pip install 'video_adapt[openvino]'")
    assert not (tmp_path / "c" / EXPORT_CONFIG).exists()


def test_a_runtime_without_its_file_names_the_export_that_writes_it(tmp_path):
    export_model(trained_like("full"), NAMES, DATA, ["torch-export"], tmp_path)
    with pytest.raises(ExportError, match=r"holds no onnx-int8 file; write it with .* --format onnx --int8"):
        load_runtime(tmp_path, "onnx", "int8")
    with pytest.raises(ExportError, match="--precision bf16 is not offered by the onnx runtime"):
        load_runtime(tmp_path, "onnx", "bf16")
    (tmp_path / EXPORT_CONFIG).write_text("{not json")
    with pytest.raises(ExportError, match=r"export_config.json: not valid JSON"):
        load_runtime(tmp_path, "torch")


@pytest.mark.slow
def test_export_of_a_trained_run_with_accuracy_of_fp32_and_int8(synthetic_store, backbone, tmp_path):
    """A trained AdaptFormer run (real backbone file, frame store, test views): --evaluate tests eager PyTorch and
    each file on the run's test split; fp32 files score what eager scores."""
    from conftest import tiny_overrides
    from video_adapt.cli.export import main
    from video_adapt.config import load_config
    from video_adapt.engine import train
    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(synthetic_store, run, "model.tuning=adaptformer",
                                           f"model.pretrained={backbone}", "train.epochs=1")))
    out = tmp_path / "export"
    assert main([str(run), "--format", "onnx", "openvino", "--int8", "--evaluate", "--out", str(out)]) == 0
    accuracy = read_manifest(out)["accuracy"]
    assert set(accuracy) == {"torch eager fp32", "onnx fp32", "onnx int8", "openvino fp32", "openvino bf16"}
    summary = json.loads((run / "summary.json").read_text())
    assert accuracy["torch eager fp32"]["top1"] == pytest.approx(summary["final_top1"])
    assert accuracy["onnx fp32"]["top1"] == accuracy["openvino fp32"]["top1"] == accuracy["torch eager fp32"]["top1"]
    assert accuracy["onnx int8"]["videos"] == accuracy["onnx fp32"]["videos"] == summary["test_videos"]


def test_openvino_models_freed_in_any_order_leave_the_threads_signal_stack_as_it_was(exported):
    """OpenVINO's CPU plugin swaps in an alternate signal stack of its own when it compiles; two models freed in the
    order they were compiled used to leave the thread on a freed stack, and the next SIGCHLD killed the process."""
    import gc
    from video_adapt.export.signal_stack import current_signal_stack
    before = current_signal_stack()
    first, second = load_runtime(exported, "openvino"), load_runtime(exported, "openvino", "bf16")
    x = clips(1, *SHAPE[1:3])
    assert torch.allclose(first(x), second(x), atol=0.5)  # both really compiled and ran
    del first
    gc.collect()
    del second
    gc.collect()
    assert current_signal_stack() == before


def test_keep_signal_stack_gives_the_thread_back_its_stack_whatever_the_body_installed():
    import ctypes
    from video_adapt.export import signal_stack as ss
    before = ss.current_signal_stack()
    if before is None:
        pytest.skip("no sigaltstack on this platform")
    buffer = ctypes.create_string_buffer(1 << 16)
    other = ss._Stack(ctypes.cast(buffer, ctypes.c_void_p), 0, len(buffer))
    with ss.keep_signal_stack():
        assert ss._SIGALTSTACK(ctypes.byref(other), None) == 0
        assert ss.current_signal_stack() == (ctypes.addressof(buffer), len(buffer), 0)
    assert ss.current_signal_stack() == before
