"""A web page for trying a trained model: drop a video, see the top-5 classes, the frames the model looked at and,
for a long video, a timeline of the top class per window.

    from video_adapt.app import build_app, launch
    from video_adapt.inference import Predictor
    launch(build_app(Predictor.load("runs/demo/runs/adaptformer/8f/seed0")), port=7860)   # http://127.0.0.1:7860

Everything the page shows comes from `video_adapt.inference.Predictor` (no second inference path): the top-5 and the
frame strip from `Predictor.predict_views`, the timeline from `Predictor.timeline`. A bad upload (not a video,
empty, corrupt, too large) gets a one-line message on the page; the server keeps serving.

Several tasks on one backbone (`video_adapt.serving.MultiTaskPredictor`) get their top-5 side by side and a timeline
row per task. The webcam tab streams the camera's frames into the ring-buffer classifier of `video-adapt infer
--stream` (video_adapt/stream.py `StreamClassifier`): a label per task every stride, with its latency.
"""
from __future__ import annotations

import os
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from video_adapt.data.decode import open_video
from video_adapt.inference import Prediction, Predictor, WindowPrediction
from video_adapt.serving import MultiTaskPredictor

UPLOAD_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv")
EXAMPLES_DIR = Path(tempfile.gettempdir()) / "video_adapt_app_examples"
THUMB_PX = 96  # frames are shown at least this tall, so 32 px models still show something a person can read
# white above (Gradio's label bar covers it), clip and crop on the left, frame numbers below, white between
STRIP_TOP, STRIP_MARGIN, STRIP_FOOT, STRIP_GAP = 32, 90, 26, 4


@dataclass
class PageResult:
    """What one classification puts on the page; when it failed, `ok` is False and only `message` is set."""

    message: str
    top: dict[str, float] = field(default_factory=dict)  # the (first) task's top-5
    strip: np.ndarray | None = None
    timeline: Figure | None = None
    ok: bool = True
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)  # every task's top-5, by task name


def check_upload(path: str | None, max_bytes: int) -> str | None:
    """The reason an uploaded file is refused before decoding (name, kind, size), or None."""
    if not path:
        return "no file given: drop a video file (mp4, webm, avi, mkv) on the box"
    name = Path(path).name
    if Path(path).suffix.lower() not in UPLOAD_SUFFIXES:
        return f"{name}: not a video file (expected {', '.join(UPLOAD_SUFFIXES)})"
    size = os.path.getsize(path)
    if size == 0:
        return f"{name}: empty file"
    if size > max_bytes:
        return f"{name}: {size / 2**20:.1f} MB is over this page's limit of {max_bytes / 2**20:g} MB (--max-mb)"
    return None


def frame_strip(views: torch.Tensor, crops: int) -> np.ndarray:
    """One picture of everything the model saw: a row per test view (clip x crop), its frames left to right.

    `views` is uint8 (V, 3, T, S, S) in Predictor's order, clip-major (view = clip * crops + crop). Frames are
    enlarged by whole-pixel repetition to at least THUMB_PX rows, so a 32 px model's input stays exactly its pixels."""
    import cv2
    scale = max(1, -(-THUMB_PX // views.shape[-2]))
    frames = views.permute(0, 2, 3, 4, 1).numpy().repeat(scale, 2).repeat(scale, 3)  # (V, T, h, w, 3)
    v, t, h, w, _ = frames.shape
    out = np.full((STRIP_TOP + v * (h + STRIP_GAP) + STRIP_FOOT, STRIP_MARGIN + t * (w + STRIP_GAP) - STRIP_GAP, 3),
                  255, np.uint8)

    def text(s: str, x: int, y: int) -> None:
        cv2.putText(out, s, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 40, 40), 1, cv2.LINE_AA)
    for i in range(v):
        top = STRIP_TOP + i * (h + STRIP_GAP)
        for j in range(t):
            left = STRIP_MARGIN + j * (w + STRIP_GAP)
            out[top:top + h, left:left + w] = frames[i, j]
        text(f"clip {i // crops + 1}", 8, top + h // 2 - 4)
        text(f"crop {i % crops + 1}", 8, top + h // 2 + 20)
    for j in range(t):
        text(f"frame {j + 1}", STRIP_MARGIN + j * (w + STRIP_GAP) + 4, out.shape[0] - 8)
    return out


def timeline_figure(windows: dict[str, list[WindowPrediction]], class_names: dict[str, list[str]], window_s: float,
                    stride_s: float) -> Figure:
    """A panel per task (titled by its name when there are several), a row per predicted class; each window owns the
    time until the next window starts, shaded by probability."""
    rows = {name: list(dict.fromkeys(w.label for w in ws)) for name, ws in windows.items()}  # first appearance
    fig = Figure(figsize=(8, 0.9 * len(rows) + 0.3 + 0.45 * sum(len(r) for r in rows.values())), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False, height_ratios=[len(r) + 1 for r in rows.values()])[:, 0]
    for ax, (name, ws) in zip(axes, windows.items()):
        labels = rows[name]
        for i, w in enumerate(ws):
            end = ws[i + 1].start_s if i + 1 < len(ws) else w.end_s
            colour = f"C{class_names[name].index(w.label) % 10}" if w.label in class_names[name] else "C0"
            ax.barh(labels.index(w.label), end - w.start_s, left=w.start_s, height=0.6, color=colour,
                    alpha=0.35 + 0.65 * w.prob)
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        ax.set_xlim(0, ws[-1].end_s)
        ax.grid(axis="x", alpha=0.3)
        if name:
            ax.set_title(name, fontsize=10, loc="left")
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(f"top class per {window_s:g} s window, every {stride_s:g} s (darker = more probable)", fontsize=10)
    return fig


def as_tasks(predictor: Predictor | MultiTaskPredictor) -> MultiTaskPredictor:
    """The page serves one model or several tasks alike."""
    return predictor if isinstance(predictor, MultiTaskPredictor) else MultiTaskPredictor.single(predictor)


def classify_file(predictor: Predictor | MultiTaskPredictor, path: str | None, window_s: float, stride_s: float,
                  max_bytes: int) -> PageResult:
    """Everything the page shows for one file; never raises (a bad file or a model error becomes the message)."""
    refused = check_upload(path, max_bytes)
    if refused:
        return PageResult(f"**Could not classify** {refused}", ok=False)
    name = Path(path).name
    tasks = as_tasks(predictor)
    try:
        result, views = tasks.predict_views(path)
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)  # the decoders' reasons, for whoever runs the server
            return PageResult(f"**Could not classify** {_for_people(result.error, path)}", ok=False)
        reader = open_video(path)
        duration = reader.num_frames / (reader.fps if reader.fps > 0 else 25.0)
        best = "; ".join(f"{task + ': ' if task else ''}{_found(p, tasks.tasks[task].threshold)}"
                         for task, p in result.tasks.items())
        message = f"**{name}**: {best}; {duration:.1f} s, {reader.num_frames} frames."
        figure = None
        if window_s > 0 and stride_s > 0 and duration >= window_s + stride_s:
            windows = {task: p.windows or [] for task, p in tasks.timeline(path, window_s, stride_s).tasks.items()}
            if all(len(ws) >= 2 for ws in windows.values()):
                figure = timeline_figure(windows, {t: tasks.tasks[t].class_names for t in windows}, window_s,
                                               stride_s)
        else:
            message += f" Timeline: needs at least {window_s + stride_s:g} s (window + stride)."
        tops = {task: dict(p.top) for task, p in result.tasks.items()}
        return PageResult(message, next(iter(tops.values())), frame_strip(views, tasks.view.crops), figure, tasks=tops)
    except Exception as err:  # a server keeps serving: the person sees one line, the console the traceback
        traceback.print_exc(file=sys.stderr)
        first = _for_people((str(err).splitlines() or [type(err).__name__])[0], path)
        return PageResult(f"**Could not classify** {first if name in first else f'{name}: {first}'}", ok=False)


def _found(prediction: Prediction, threshold: float) -> str:
    """What the page says a file shows: the top class, or a multi-label model's classes at or above the threshold."""
    if prediction.labels is None:
        return f"top class **{prediction.top[0][0]}** ({prediction.top[0][1]:.0%})"
    found = ", ".join(f"**{label}** ({p:.0%})" for label, p in prediction.labels) or "none"
    return f"classes at or above {threshold:.0%}: {found}"


def _for_people(error: str, path: str) -> str:
    """A decoder error without the server's upload folder or the per-backend details in brackets."""
    if error.startswith(str(path)):
        return Path(path).name + error[len(str(path)):].split(" (", 1)[0]
    return error.replace(str(path), Path(path).name)


def synthetic_examples(folder: Path, class_names: list[str], size: int) -> list[list[str]]:
    """[video path, true class] rows from the synthetic task, if the model was trained on it (else none)."""
    from video_adapt.data.synthetic import CLASSES, SyntheticSpec, generate_clip, write_video
    if list(class_names) != list(CLASSES[:len(class_names)]):
        return []
    folder = folder / f"{size}px"
    folder.mkdir(parents=True, exist_ok=True)
    spec = SyntheticSpec(size=size, frames=16)
    n = len(class_names)
    rows = []
    for label in sorted({int(round(x)) for x in np.linspace(0, n - 1, min(n, 5))}):  # spread over the classes
        path = folder / f"{CLASSES[label].replace(' ', '_')}.mp4"
        if not path.exists():
            _write_atomic(path, generate_clip(label, np.random.default_rng(1000 + label), spec), write_video)
        rows.append([str(path), CLASSES[label]])
    long = sorted({0, n // 2, n - 1})  # three actions in a row: a video for the timeline
    path = folder / "long_three_actions.mp4"
    if not path.exists():
        clip = np.concatenate([generate_clip(c, np.random.default_rng(2000 + c), spec) for c in long])
        _write_atomic(path, clip, write_video)
    rows.append([str(path), ", then ".join(CLASSES[c] for c in long) + " (2 s each)"])
    return rows


def _write_atomic(path: Path, frames: np.ndarray, write_video) -> None:
    from video_adapt.files import atomic_path
    with atomic_path(path) as tmp:  # the temporary keeps the .mp4 suffix the encoder picks its container by
        write_video(str(tmp), frames, fps=8)  # 16 frames = 2 s: the default window


class WebcamSession:
    """One browser's webcam stream: frames into the stream classifier of `video-adapt infer --stream`, and what the
    webcam tab shows after each frame (a line and every task's top-5 of the latest window)."""

    def __init__(self, predictor: Predictor | MultiTaskPredictor, fps: float, window: float | str,
                 stride: float | str):
        from video_adapt.stream import StreamClassifier
        self.classifier = StreamClassifier(as_tasks(predictor), fps, window, stride, topk=5)
        self.message = "waiting for the camera"
        self.tops: dict[str, dict[str, float] | None] = {name: None for name in self.classifier.predictor.names}

    def step(self, frame: np.ndarray | None) -> tuple[str, dict[str, dict[str, float] | None]]:
        if frame is None:
            return self.message, self.tops
        if self.classifier.ring.num_frames == 0:
            self.classifier.warm_up(*frame.shape[:2])  # the first window's latency is then the model's, not set-up's
        result = self.classifier.push(np.ascontiguousarray(frame[..., :3]))
        if result is not None:
            self.message = f"`{result.line()}`"
            self.tops = {name: dict(top) for name, top in result.tasks.items()}
        elif not self.classifier.results:
            self.message = (f"collecting the first window: {self.classifier.ring.num_frames} of "
                            f"{self.classifier.window} frames")
        return self.message, self.tops


def build_app(predictor: Predictor | MultiTaskPredictor, title: str = "video_adapt", max_mb: float = 200,
              window_s: float = 2.0, stride_s: float = 1.0, examples_dir: str | Path = EXAMPLES_DIR,
              webcam_every_s: float = 0.1):
    """The Gradio Blocks page around `predictor` (one model, or several tasks on one backbone); serve it with
    `launch`.

    Example videos are written under `examples_dir` (Gradio serves files from the temp dir and the working directory)
    when the model's classes are the synthetic task's. The webcam tab takes a frame every `webcam_every_s` seconds,
    so its windows count frames at 1 / webcam_every_s fps."""
    import gradio as gr
    tasks = as_tasks(predictor)
    names = tasks.names
    several = len(names) > 1
    first = tasks.tasks[names[0]]
    max_bytes = int(max_mb * 2**20)
    examples = [] if several else synthetic_examples(Path(examples_dir), first.class_names, tasks.view.img_size)
    idle = "Drop a video file on the box (or click an example) to classify it."

    def labels(prefix: str, what: str) -> list:
        if not several:
            return [gr.Label(num_top_classes=5, label=f"{what}top-5 classes", elem_id=prefix)]
        with gr.Row():
            return [gr.Label(num_top_classes=5, label=f"{what}{name}: top-5", elem_id=f"{prefix}-{name}")
                    for name in names]

    def run(path: str | None, window: float | None, stride: float | None):
        if path is None:  # the file was cleared: back to an empty page
            return idle, None, gr.Plot(value=None, visible=False), *[None] * len(names)
        result = classify_file(tasks, path, float(window or 0), float(stride or 0), max_bytes)
        return (result.message, result.strip, gr.Plot(value=result.timeline, visible=result.timeline is not None),
                *[result.tasks.get(name) or None for name in names])

    def webcam_frame(frame: np.ndarray | None, session: WebcamSession | None):
        session = session or WebcamSession(tasks, 1 / webcam_every_s, window_s, stride_s)
        message, tops = session.step(frame)
        return session, message, *[tops[name] for name in names]

    if several:
        about = " · ".join(f"{name}: {len(tasks.tasks[name].class_names)} classes" for name in names)
        about = f"{len(names)} tasks on one backbone ({about})"
    else:
        about = f"{len(first.class_names)} classes"
    multilabel = [name or "the model" for name in names if tasks.tasks[name].protocol.multilabel]
    if multilabel:
        about += f" · multi-label ({', '.join(multilabel)}): classes at or above {first.threshold:.0%} are listed"
    with gr.Blocks(title=f"{title}: try the model", analytics_enabled=False) as page:
        gr.Markdown(f"## {title}\n{about} · test views: {tasks.protocol.views_text()} · device: {tasks.device} · "
                    f"runtime: {first.runtime}", elem_id="about")
        with gr.Tab("video file", elem_id="file-tab"):
            with gr.Row():
                with gr.Column(scale=2):
                    video = gr.File(label="video file", type="filepath", elem_id="video")
                    gr.Markdown(f"mp4, webm, avi or mkv, at most {max_mb:g} MB. A video of at least window + stride "
                                "seconds also gets a timeline.")
                    truth = gr.Textbox(label="true class (examples only)", interactive=False, elem_id="truth")
                    with gr.Accordion("timeline settings", open=False):
                        window = gr.Number(window_s, label="window (s)", minimum=0.1, elem_id="window")
                        stride = gr.Number(stride_s, label="stride (s)", minimum=0.1, elem_id="stride")
                        button = gr.Button("classify again with these settings", size="sm", elem_id="classify")
                    if examples:
                        gr.Examples(examples, [video, truth], label="examples from the synthetic task (click one)")
                with gr.Column(scale=3):
                    status = gr.Markdown(idle, elem_id="status")
                    tops = labels("top5", "")
                    strip = gr.Image(label="what the model looked at: a row per test view, its frames in order",
                                     type="numpy", format="png", interactive=False, buttons=["download", "fullscreen"],
                                     elem_id="frames")  # png: the page shows the model's pixels, not a lossy copy
                    plot = gr.Plot(label="timeline: top class per window", visible=False, elem_id="timeline")
        with gr.Tab("webcam", elem_id="webcam-tab"):
            gr.Markdown(f"Live: the last {window_s:g} s of the camera (a frame every {webcam_every_s:g} s) is "
                        f"classified every {stride_s:g} s, as `video-adapt infer --stream 0` does.")
            with gr.Row():
                with gr.Column(scale=2):
                    camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="webcam",
                                      elem_id="webcam")
                with gr.Column(scale=3):
                    webcam_status = gr.Markdown("Start the camera to classify what it sees.", elem_id="webcam-status")
                    webcam_tops = labels("webcam-top5", "webcam ")
            session = gr.State(None)
        video.upload(lambda: "", outputs=truth)  # a person's own file has no known class
        for event in (video.change, button.click):
            event(run, [video, window, stride], [status, strip, plot, *tops], concurrency_id="model")
        camera.stream(webcam_frame, [camera, session], [session, webcam_status, *webcam_tops],
                      stream_every=webcam_every_s, concurrency_id="model", show_progress="hidden")
        camera.clear(lambda: None, outputs=session)  # a new stream starts a new ring buffer
    return page


def launch(page, port: int = 7860, on_network: bool = False, block: bool = True) -> None:
    """Serve on 127.0.0.1, or on every interface with `on_network`; returns at once unless `block`.

    The size limit is checked by the page itself (`check_upload`), not by Gradio's `max_file_size`, whose refusal
    shows only the word "Error" in the upload box."""
    page.launch(server_name="0.0.0.0" if on_network else "127.0.0.1", server_port=port, share=False,
                prevent_thread_lock=not block, quiet=not block, footer_links=[])
