"""Live streams (video_adapt/stream.py, `video-adapt infer --stream`, the page's webcam tab): windows and labels equal
the offline `Predictor.timeline` of the same video, whether it arrives through a pipe at real-time rate, as a file
that grows, as bare frames on stdin or over HTTP from this machine. No network, no camera, no ffmpeg binary: the
streams are written with PyAV by tests/stream_feeder.py."""
from __future__ import annotations

import functools
import http.server
import io
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from videos import write
from video_adapt.benchmarks.multitask import random_adapters
from video_adapt.data.protocol import DataProtocol
from video_adapt.data.synthetic import SyntheticSpec, generate_clip
from video_adapt.inference import Predictor
from video_adapt.serving import MultiTaskPredictor
from video_adapt.stream import (FrameRing, StreamClassifier, StreamError, open_stream, parse_raw, raw_frames,
                                run_stream)

ROOT = Path(__file__).resolve().parents[1]
FEEDER = ROOT / "tests" / "stream_feeder.py"
MODEL = "vit_nano_patch8_32"
PROTOCOL = DataProtocol(num_frames=4, img_size=32, test_clips=2, test_crops=1, view_average="logits")
FPS = 16
WINDOW, STRIDE = 1.0, 0.25  # 16 frames every 4: windows at 0, 0.25, ..., 1.0 s of a 2 s video


@pytest.fixture(scope="module")
def adapters(backbone, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("stream_tasks")
    return {"af": str(random_adapters(backbone, out / "af", MODEL, "adaptformer", 4, PROTOCOL, seed=1, bottleneck=4)),
            "probe": str(random_adapters(backbone, out / "probe", MODEL, "linear", 3, PROTOCOL, seed=2))}


@pytest.fixture(scope="module")
def predictor(adapters, backbone) -> Predictor:
    return Predictor.load(backbone=str(backbone), adapters=adapters["af"], device="cpu")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """2 s at 16 fps: two actions, so the windows' labels change along the video."""
    spec = SyntheticSpec(size=32, frames=16)
    frames = np.concatenate([generate_clip(c, np.random.default_rng(c), spec) for c in (0, 2)])
    return write(tmp_path_factory.mktemp("stream_video") / "two_actions.mp4", frames, fps=FPS)


@pytest.fixture(scope="module")
def offline(predictor, video):
    return predictor.timeline(str(video), WINDOW, STRIDE)


def _mkv(video: Path, out: Path) -> Path:
    """The video's packets remuxed into Matroska (no re-encoding: the decoded frames are the same)."""
    subprocess.run([sys.executable, str(FEEDER), str(video), "--speed", "1000", "--out", str(out)], check=True)
    return out


def _same_windows(rows: list[dict], offline, task: str | None = None) -> None:
    assert [(r["start_s"], r["end_s"]) for r in rows] == [(w.start_s, w.end_s) for w in offline.windows]
    got = [r["tasks"][task] if task else r for r in rows]
    assert [g["label"] for g in got] == [w.label for w in offline.windows]
    assert np.allclose([g["prob"] for g in got], [w.prob for w in offline.windows], atol=1e-4)


def test_frame_ring_reads_the_last_frames_by_stream_index():
    ring = FrameRing(3)
    for i in range(5):
        ring.append(np.full((2, 2, 3), i, np.uint8), arrived=float(i))
    assert ring.num_frames == 5 and [int(f[0, 0, 0]) for f in ring.read([2, 4, 3])] == [2, 4, 3]
    with pytest.raises(IndexError, match="holds 2..4"):
        ring.read([1])


def test_windows_come_every_stride_once_a_window_is_full(predictor, video, offline):
    tasks = MultiTaskPredictor.single(predictor)
    frames = av.open(str(video)).decode(video=0)
    classifier = StreamClassifier(tasks, FPS, WINDOW, "4f")
    done = [(i + 1, r) for i, f in enumerate(frames) if (r := classifier.push(f.to_ndarray(format="rgb24")))]
    assert [count for count, _ in done] == [16, 20, 24, 28, 32]
    assert [(r.start_frame, r.end_frame) for _, r in done] == [(0, 16), (4, 20), (8, 24), (12, 28), (16, 32)]
    _same_windows([r.as_dict() for _, r in done], offline)
    assert classifier.finish() is None  # full windows came: no extra one at the end


def test_a_stream_shorter_than_a_window_gets_one_window_as_offline(predictor, tmp_path):
    short = write(tmp_path / "short.mp4", generate_clip(1, np.random.default_rng(5), SyntheticSpec(32, 10)), fps=FPS)
    classifier = StreamClassifier(MultiTaskPredictor.single(predictor), FPS, WINDOW, STRIDE)
    assert all(classifier.push(f.to_ndarray(format="rgb24")) is None for f in av.open(str(short)).decode(video=0))
    last = classifier.finish()
    offline = predictor.timeline(str(short), WINDOW, STRIDE)
    assert (last.start_s, last.end_s) == (offline.windows[0].start_s, offline.windows[0].end_s) == (0.0, 0.625)
    assert last.tasks[""][0][0] == offline.windows[0].label


def test_a_growing_file_is_followed_until_it_stays_idle(predictor, video, offline, tmp_path):
    """Segments of a live Matroska stream are appended while the stream is read; it ends after the idle timeout."""
    data = _mkv(video, tmp_path / "whole.mkv").read_bytes()
    growing = tmp_path / "growing.mkv"
    parts = [data[i * len(data) // 4:(i + 1) * len(data) // 4] for i in range(4)]
    growing.write_bytes(parts[0])

    def append() -> None:
        for part in parts[1:]:
            time.sleep(0.4)
            with open(growing, "ab") as f:
                f.write(part)
    writer = threading.Thread(target=append)
    writer.start()
    start = time.perf_counter()
    source = open_stream(str(growing), idle_timeout=0.8)
    rows = []
    summary = run_stream(MultiTaskPredictor.single(predictor), source, WINDOW, STRIDE,
                         on_window=lambda w: rows.append(w.as_dict()))
    writer.join()
    assert time.perf_counter() - start >= 1.2 + 0.8  # read until the last segment, then the idle timeout
    assert summary.frames == 32 and summary.windows == 5 and not summary.interrupted
    _same_windows(rows, offline)


def test_a_url_is_read_over_http_from_this_machine(predictor, video, offline, tmp_path):
    _mkv(video, tmp_path / "live.mkv")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = open_stream(f"http://127.0.0.1:{server.server_address[1]}/live.mkv", idle_timeout=5)
        assert source.fps == FPS
        rows = []
        run_stream(MultiTaskPredictor.single(predictor), source, WINDOW, STRIDE, on_window=lambda w: rows.append(w.as_dict()))
    finally:
        server.shutdown()
    _same_windows(rows, offline)


def test_raw_frames_are_cut_at_their_size_and_converted(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    data = frames.tobytes() + b"\x01\x02"  # and a partial frame, dropped
    got = list(raw_frames(io.BytesIO(data), 5, 4, "rgb24"))
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, frames))
    bgr = list(raw_frames(io.BytesIO(frames[..., ::-1].tobytes()), 5, 4, "bgr24"))
    assert np.array_equal(bgr[1], frames[1])
    gray = list(raw_frames(io.BytesIO(frames[..., 0].tobytes()), 5, 4, "gray"))
    assert gray[2].shape == (4, 5, 3) and np.array_equal(gray[2][..., 1], frames[2, ..., 0])
    assert parse_raw("320x240") == (320, 240, "rgb24") and parse_raw("8x6:gray") == (8, 6, "gray")
    for bad in ("320", "0x4", "4x4:yuv420p"):
        with pytest.raises(StreamError, match="expected WIDTHxHEIGHT"):
            parse_raw(bad)


def test_sources_that_cannot_be_opened_are_one_line(tmp_path, adapters, backbone, capsys):
    from video_adapt.cli.infer import main
    model = ["--backbone", str(backbone), "--adapters", adapters["af"]]
    for argv, message in (
            (["--stream", "7"], "webcam 7: OpenCV cannot open it"),
            (["--stream", str(tmp_path / "nothing.mkv")], "nothing.mkv: no such file"),
            (["--stream", "-", "--raw", "32x32"], "--raw frames carry no frame rate: give --fps"),
            (["--stream", "-", str(tmp_path / "x.mp4")], "give it or video files"),
            (["x.mp4", "--jsonl", "a.jsonl"], "--jsonl is for --stream")):
        assert main(argv + model) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and err[-1].startswith("error: "), (argv, err)
    (tmp_path / "text.mkv").write_text("not a stream\n" * 100)
    with pytest.raises(StreamError, match="text.mkv: cannot open the stream"):
        open_stream(str(tmp_path / "text.mkv"), idle_timeout=0.1)


def _start_stream(args: list[str], stdin=subprocess.PIPE) -> subprocess.Popen:
    """`video-adapt infer --stream ...`, returned once it says it waits for its source (the model is loaded). It starts
    with Ctrl-C's default action even when this test runs with SIGINT ignored (a background job of a non-interactive
    shell ignores it, and a child inherits that: Python then installs no KeyboardInterrupt handler)."""
    proc = subprocess.Popen([sys.executable, "-m", "video_adapt", "infer", *args], cwd=ROOT, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    line = proc.stderr.readline()
    assert line.startswith("waiting for"), line + proc.stderr.read()[-800:]
    return proc


@pytest.mark.slow
def test_a_pipe_fed_at_real_time_gives_the_offline_windows(adapters, backbone, video, offline, predictor, tmp_path):
    """Two tasks, a Matroska stream through stdin at the video's frame rate: a line and a JSON line per window."""
    jsonl = tmp_path / "windows.jsonl"
    proc = _start_stream(["--stream", "-", "--backbone", str(backbone), "--adapters", f"af={adapters['af']}",
                          f"probe={adapters['probe']}", "--window", "1", "--stride", "0.25", "--jsonl", str(jsonl)])
    start = time.perf_counter()
    feeder = subprocess.run([sys.executable, str(FEEDER), str(video)], stdout=proc.stdin)
    out, err = proc.communicate(timeout=60)  # closes our end of its stdin: the stream ends
    assert feeder.returncode == 0 and proc.returncode == 0, err[-800:]
    assert time.perf_counter() - start >= 31 / FPS  # the feeder kept the video's pace
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    _same_windows(rows, offline, "af")
    probe = Predictor.load(backbone=str(backbone), adapters=adapters["probe"], device="cpu").timeline(
        str(video), WINDOW, STRIDE)
    _same_windows(rows, probe, "probe")
    lines = out.splitlines()
    assert lines[0].startswith("t=1.0s  af: ") and " probe: " in lines[0] and lines[0].endswith(" ms")
    assert [line.split()[0] for line in lines[:5]] == ["t=1.0s", "t=1.2s", "t=1.5s", "t=1.8s", "t=2.0s"]
    assert lines[5].startswith("5 windows of 16 frames every 4 from 32 frames (2.0 s at 16 fps); latency mean")
    latencies = [r["latency_ms"] for r in rows]
    assert max(latencies) < 2000 and max(r["lag_s"] for r in rows) < 2.0  # a 2-block model keeps up


@pytest.mark.slow
def test_raw_frames_on_stdin_and_ctrl_c_ends_with_the_summary(adapters, backbone, video, offline, tmp_path):
    """Bare rgb24 frames at real-time rate; Ctrl-C after the first windows ends cleanly with the summary. The feeder
    holds the pipe open after its last frame, so however slow the model, the stream cannot end before the Ctrl-C."""
    proc = _start_stream(["--stream", "-", "--raw", "32x32:rgb24", "--fps", str(FPS), "--backbone", str(backbone),
                          "--adapters", adapters["af"], "--window", "1", "--stride", "4f", "--json",
                          str(tmp_path / "r.json")])
    feeder = subprocess.Popen([sys.executable, str(FEEDER), str(video), "--raw", "--speed", "0.5", "--hold", "120"],
                              stdout=proc.stdin)
    first = proc.stdout.readline()  # 16 frames at 8 fps: the first window after 2 s
    assert first.startswith("t=1.0s  ") and first.split("  ")[1] == f"{offline.windows[0].label} " \
        f"({offline.windows[0].prob:.2f})"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    feeder.kill()  # still holding the pipe open
    feeder.wait(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err[-800:]
    assert "(interrupted)" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["summary"]["interrupted"] and result["summary"]["windows"] == len(result["windows"]) >= 1
    _same_windows(result["windows"], type(offline)(offline.path, windows=offline.windows[:len(result["windows"])]))


def test_webcam_tab_classifies_frames_as_the_stream_does(predictor, video, offline, adapters, backbone):
    from video_adapt.app import WebcamSession, build_app
    session = WebcamSession(predictor, FPS, WINDOW, STRIDE)
    shown = []
    for i, frame in enumerate(av.open(str(video)).decode(video=0)):
        message, tops = session.step(frame.to_ndarray(format="rgb24"))
        if i == 3:
            assert message == "collecting the first window: 4 of 16 frames" and tops == {"": None}
        if message.startswith("`t="):
            shown.append((message, tops[""]))
    windows = session.classifier.results
    assert [w.as_dict()["label"] for w in windows] == [w.label for w in offline.windows]
    assert shown[-1][0].startswith("`t=2.0s  ") and next(iter(shown[-1][1])) == offline.windows[-1].label
    assert session.step(None)[0] == shown[-1][0]  # no frame (camera stopped): the last result stays

    page = build_app(MultiTaskPredictor.load(adapters, str(backbone), device="cpu"))
    blocks = {getattr(b, "elem_id", None): b for b in page.blocks.values()}
    camera = blocks["webcam"]
    assert camera.streaming and camera.sources == ["webcam"] and blocks["webcam-tab"].label == "webcam"
    assert {"webcam-top5-af", "webcam-top5-probe", "top5-af", "top5-probe", "file-tab"} <= set(blocks)
    assert any(d.targets and d.targets[0][1] == "stream" for d in page.fns.values())
