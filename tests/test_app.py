"""The web page for trying a model (video_adapt/app.py): its parts, and the whole page in a real headless Chromium.

The browser test uses Debian's `chromium` + `chromium-driver` through Selenium (nothing is downloaded at run time);
.ci/run installs them, so CI runs it. Without them it skips and says why.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from videos import make_broken, write
from video_adapt.app import (STRIP_FOOT, STRIP_GAP, STRIP_MARGIN, STRIP_TOP, PageResult, check_upload,
                            classify_file, frame_strip, synthetic_examples)
from video_adapt.config import load_config
from video_adapt.data.decode import open_video
from video_adapt.data.synthetic import CLASSES, SyntheticSpec, generate_clip
from video_adapt.engine import train
from video_adapt.inference import Predictor


@pytest.fixture(scope="module")
def predictor(synthetic_store, tmp_path_factory) -> Predictor:
    out = tmp_path_factory.mktemp("app_run")
    train(load_config(None, tiny_overrides(synthetic_store, out, "model.tuning=full", "train.epochs=1")))
    return Predictor.load(str(out), device="cpu")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("app_videos")
    spec = SyntheticSpec(size=32, frames=16)
    long = np.concatenate([generate_clip(c, np.random.default_rng(c), spec) for c in (0, 2, 3)])
    return {"short": write(folder / "short.mp4", generate_clip(1, np.random.default_rng(7), spec), fps=8),
            "long": write(folder / "long.webm", long, fps=8),  # 48 frames = 6 s: windows at 0..4 s
            "bad": make_broken(folder)["text"]}  # a text file named notes.avi


def test_check_upload_refuses_other_kinds_empty_and_too_large_files(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "big.mkv").write_bytes(b"x" * 3000)
    assert "a.txt: not a video file" in check_upload(str(tmp_path / "a.txt"), 10**6)
    assert check_upload(str(tmp_path / "empty.mp4"), 10**6) == "empty.mp4: empty file"
    assert "big.mkv" in check_upload(str(tmp_path / "big.mkv"), 2000) and "--max-mb" in check_upload(
        str(tmp_path / "big.mkv"), 2000)
    assert check_upload(str(tmp_path / "big.mkv"), 3000) is None
    assert "no file" in check_upload(None, 10)


def test_frame_strip_is_every_view_and_frame_pixel_for_pixel():
    views = torch.randint(0, 256, (6, 3, 4, 32, 32), dtype=torch.uint8)
    strip = frame_strip(views, crops=3)
    scale, gap, margin = 3, STRIP_GAP, STRIP_MARGIN  # 32 px -> 96 px rows
    assert strip.shape == (STRIP_TOP + 6 * (96 + gap) + STRIP_FOOT, margin + 4 * (96 + gap) - gap, 3)
    v, t = 4, 2  # clip 2, crop 2, third frame
    top, left = STRIP_TOP + v * (96 + gap), margin + t * (96 + gap)
    expected = views[v, :, t].permute(1, 2, 0).numpy().repeat(scale, 0).repeat(scale, 1)
    assert np.array_equal(strip[top:top + 96, left:left + 96], expected)


@pytest.mark.slow
def test_predict_views_are_the_views_predict_averaged(predictor, videos):
    pred, views = predictor.predict_views(str(videos["short"]), topk=3)
    v = predictor.view
    assert views.dtype == torch.uint8 and views.shape == (v.clips * v.crops, 3, v.num_frames, 32, 32)
    reference = predictor.predict([str(videos["short"])], topk=3)[0]
    assert [l for l, _ in pred.top] == [l for l, _ in reference.top]
    assert np.allclose([p for _, p in pred.top], [p for _, p in reference.top], atol=1e-5)
    bad, none = predictor.predict_views(str(videos["bad"]))
    assert none is None and "notes.avi" in bad.error


@pytest.mark.slow
def test_classify_file_shows_predict_and_a_timeline_only_for_long_videos(predictor, videos):
    short = classify_file(predictor, str(videos["short"]), 2.0, 1.0, 10**7)
    top1 = predictor.predict([str(videos["short"])])[0].top[0][0]
    assert short.ok and f"top class **{top1}**" in short.message and short.timeline is None
    assert list(short.top)[0] == top1 and "needs at least 3 s" in short.message
    long = classify_file(predictor, str(videos["long"]), 2.0, 1.0, 10**7)
    assert long.ok and long.timeline is not None
    assert len(long.timeline.axes[0].patches) == 5  # windows at 0, 1, 2, 3, 4 s


def test_classify_file_of_a_multilabel_model_lists_the_classes_at_or_above_the_threshold(predictor, videos):
    """A multi-label model's page names every class at or above the threshold (`video-adapt app --threshold`), as
    `video-adapt infer` does, not a top class."""
    from dataclasses import replace

    from video_adapt.serving import MultiTaskPredictor
    multi = Predictor(predictor.model, predictor.class_names, replace(predictor.protocol, multilabel=True), "cpu")
    probs = dict(multi.predict([str(videos["short"])], topk=len(multi.class_names))[0].top)
    threshold = sorted(probs.values())[-2]  # exactly two classes at or above it
    MultiTaskPredictor.single(multi).set_threshold(threshold)
    page = classify_file(multi, str(videos["short"]), 2.0, 1.0, 10**7)
    above = sorted(probs, key=probs.get, reverse=True)[:2]
    assert page.ok and f"classes at or above {threshold:.0%}: **{above[0]}**" in page.message
    assert f"**{above[1]}**" in page.message and "top class" not in page.message
    MultiTaskPredictor.single(multi).set_threshold(1.0)
    assert "classes at or above 100%: none" in classify_file(multi, str(videos["short"]), 2.0, 1.0, 10**7).message


@pytest.mark.slow
def test_classify_file_turns_a_bad_file_into_one_line_naming_it(predictor, videos, tmp_path):
    for path in (videos["bad"], make_broken(tmp_path)["garbage"], make_broken(tmp_path)["truncated"]):
        result = classify_file(predictor, str(path), 2.0, 1.0, 10**7)
        assert isinstance(result, PageResult) and not result.ok and result.strip is None
        assert path.name in result.message and str(path.parent) not in result.message
        assert "\n" not in result.message


def test_synthetic_examples_only_for_models_of_the_synthetic_task(tmp_path):
    rows = synthetic_examples(tmp_path, list(CLASSES[:4]), 32)
    assert [r[1] for r in rows[:-1]] == list(CLASSES[:4])
    assert rows[-1][1] == "sliding right, then sliding down, then sliding up (2 s each)"
    assert [open_video(p).num_frames for p, _ in rows] == [16] * 4 + [48]  # 2 s clips at 8 fps; three in a row
    assert synthetic_examples(tmp_path / "other", ["cat", "dog"], 32) == []


@pytest.mark.slow
def test_tool_without_a_model_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    from video_adapt.cli.app import DEMO_RUN
    out = subprocess.run([sys.executable, "-m", "video_adapt", "app"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and str(DEMO_RUN) in out.stderr and "video-adapt demo" in out.stderr
    from video_adapt.cli.app import main
    assert main(["--checkpoint", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'}: no such file or directory\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "--share-on-network" in help_text and "0.0.0.0" in help_text and "127.0.0.1" in help_text


# --- the page in a real browser ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (.ci/run does)")
    pytest.importorskip("selenium", reason="selenium is in requirements.txt")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_url(predictor, tmp_path_factory):
    from video_adapt.app import build_app, launch
    examples = tmp_path_factory.mktemp("app_examples")
    page = build_app(predictor, examples_dir=examples)
    port = _free_port()
    launch(page, port, block=False)
    yield f"http://127.0.0.1:{port}/"
    page.close()


def _wait(condition, timeout: float = 60.0, what: str = "the page"):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _upload(driver, path: Path) -> str:
    """Clear the file box if it holds a file, drop `path` in, and return the status line once it names the file."""
    from selenium.webdriver.common.by import By
    clear = driver.find_elements(By.CSS_SELECTOR, "#video button[aria-label='Clear']")
    if clear:
        clear[0].click()
    box = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#video input[type=file]"), what="the file box")
    box[0].send_keys(str(path))

    def status() -> str | None:
        text = driver.find_element(By.ID, "status").text
        return text if path.name in text and ("top class" in text or "Could not classify" in text) else None
    return _wait(status, what=f"the result for {path.name}")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")  # Gradio's queue on pandas 3
def test_page_in_a_real_browser(browser, page_url, predictor, videos):
    """Upload a video, a non-video file, then a long video, then click an example: results, the error line, and the
    page still works after the error."""
    from selenium.webdriver.common.by import By
    browser.get(page_url)
    expected = {k: predictor.predict([str(videos[k])])[0].top for k in ("short", "long")}

    status = _upload(browser, videos["short"])
    assert f"top class {expected['short'][0][0]}" in status
    heading = browser.find_element(By.CSS_SELECTOR, "#top5 .output-class").text
    assert heading == expected["short"][0][0]
    rows = browser.find_element(By.ID, "top5").text
    assert all(label in rows for label, _ in expected["short"])
    image = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#frames img"), what="the frame strip")[0]
    shown = cv2.imdecode(np.frombuffer(urllib.request.urlopen(image.get_attribute("src")).read(), np.uint8),
                         cv2.IMREAD_COLOR)[..., ::-1]
    _, views = predictor.predict_views(str(videos["short"]))
    assert np.array_equal(shown, frame_strip(views, predictor.view.crops))  # exactly what the model saw
    assert not any(e.is_displayed() for e in browser.find_elements(By.ID, "timeline"))  # a 2 s video: no timeline

    status = _upload(browser, videos["bad"])
    assert "Could not classify" in status and "notes.avi: not a readable video" in status
    assert "/tmp" not in status and not browser.find_elements(By.CSS_SELECTOR, "#frames img")

    status = _upload(browser, videos["long"])
    assert f"top class {expected['long'][0][0]}" in status
    assert _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#timeline img"), what="the timeline plot")
    assert browser.find_elements(By.CSS_SELECTOR, "#frames img")

    example = _wait(lambda: [e for e in browser.find_elements(By.XPATH, "//*[text()='sliding_left.mp4']")
                             if e.is_displayed()], what="the examples")
    example[0].click()  # an example: its true class is shown beside the result
    _wait(lambda: "sliding_left.mp4: top class" in browser.find_element(By.ID, "status").text, what="the example")
    assert browser.find_element(By.CSS_SELECTOR, "#truth textarea, #truth input").get_attribute("value") == (
        "sliding left")
