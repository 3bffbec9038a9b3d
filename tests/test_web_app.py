"""The web demo: its logic (yolact_d2/demo/web.py, demo/app.py's DemoApp) with a fake
predictor, and the real page end to end in headless Chromium (Debian's ``chromium`` package driven
by Playwright's Python API, no browser download).

The end-to-end test starts ``demo/app.py`` as a subprocess on a free loopback port with a tiny
randomly initialised model (score threshold 0, so random weights give detections). It is skipped,
loudly, when Chromium, Playwright or Gradio is missing (``.ci/run`` installs them). The screenshot
goes to the test's tmp dir and, when ``YOLACT_D2_SCREENSHOT_DIR`` is set, there too.
"""
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from conftest import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(REPO, "demo", "app.py")
CHROMIUM = os.environ.get("YOLACT_D2_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _app_module():
    spec = importlib.util.spec_from_file_location("yolact_web_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metadata():
    from detectron2.data.catalog import Metadata

    return Metadata(name="web_test").set(
        thing_classes=["a", "b", "c"], thing_dataset_id_to_contiguous_id={1: 0, 4: 1, 9: 2}
    )


def _prediction(h=60, w=80):
    from yolact_d2.demo.web import Prediction

    masks = np.zeros((3, h, w), bool)
    masks[0, 5:25, 5:35] = True
    masks[1, 30:50, 40:70] = True
    masks[2, 10:20, 50:60] = True
    boxes = np.array([[5, 5, 35, 25], [40, 30, 70, 50], [50, 10, 60, 20]], np.float32)
    return Prediction(boxes, np.array([0.9, 0.6, 0.3], np.float32), np.array([0, 2, 2]), masks, 0.01)


class FakePredictor:
    """Returns the detections of :func:`_prediction` as Instances, counting its calls."""

    calls = 0

    def __call__(self, bgr):
        from detectron2.structures import Boxes, Instances

        self.calls += 1
        pred = _prediction(*bgr.shape[:2])
        inst = Instances(bgr.shape[:2])
        inst.pred_boxes, inst.scores = Boxes(torch.from_numpy(pred.boxes)), torch.from_numpy(pred.scores)
        inst.pred_classes, inst.pred_masks = torch.from_numpy(pred.classes), torch.from_numpy(pred.masks)
        return {"instances": inst}


# ------------------------------------------------------------------------------------------------
# Logic
# ------------------------------------------------------------------------------------------------
def test_read_upload_converts_and_refuses(tmp_path):
    from yolact_d2.demo.web import read_upload
    from yolact_d2.utils.errors import DataError

    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    bgr, notes = read_upload(str(tmp_path / "c.png"))
    assert np.array_equal(bgr, rgb[:, :, ::-1]) and notes == []
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "g.png")
    bgr, notes = read_upload(str(tmp_path / "g.png"))
    assert bgr.shape == (20, 30, 3) and np.array_equal(bgr[:, :, 1], rgb[:, :, 0]) and "grayscale" in notes[0]
    Image.fromarray(np.dstack([rgb, np.full((20, 30), 7, np.uint8)])).save(tmp_path / "a.png")
    bgr, notes = read_upload(str(tmp_path / "a.png"))
    assert np.array_equal(bgr, rgb[:, :, ::-1]) and "alpha channel is ignored" in notes[0]
    (tmp_path / "t.png").write_text("hello")
    with pytest.raises(DataError, match="'shown.png': is not an image"):
        read_upload(str(tmp_path / "t.png"), name="shown.png")
    with pytest.raises(DataError, match=r"30x20 = 0.0 megapixels, more than the 0.0005"):
        read_upload(str(tmp_path / "c.png"), max_pixels=500)


def test_select_rows_and_coco_results_round_trip():
    from yolact_d2.demo.web import detection_rows, select, to_coco_results

    pred = _prediction()
    assert select(pred, 0.0).tolist() == [0, 1, 2]
    assert select(pred, 0.6).tolist() == [0]  # strict >, as the model's threshold
    assert select(pred, 0.0, classes=[2]).tolist() == [1, 2]
    assert select(pred, 0.5, classes=[]).tolist() == []
    rows = detection_rows(pred, select(pred, 0.5), ["a", "b", "c"])
    assert rows == [[0, "a", 0.9, 5.0, 5.0, 35.0, 25.0, 600], [1, "c", 0.6, 40.0, 30.0, 70.0, 50.0, 600]]

    results = to_coco_results(pred, select(pred, 0.0), image_id=7, metadata=_metadata())
    assert [r["category_id"] for r in results] == [1, 9, 9]
    assert [r["category_name"] for r in results] == ["a", "c", "c"]
    gt = COCO()
    gt.dataset = {"images": [{"id": 7, "height": 60, "width": 80}], "annotations": [],
                  "categories": [{"id": i, "name": n} for i, n in ((1, "a"), (4, "b"), (9, "c"))]}
    gt.createIndex()
    dt = gt.loadRes(json.loads(json.dumps(results)))
    for ann, mask in zip(dt.loadAnns(dt.getAnnIds()), pred.masks):
        assert np.array_equal(dt.annToMask(ann).astype(bool), mask)
    assert results[0]["bbox"] == pytest.approx([5, 5, 30, 20])


def test_render_stable_colours_and_opacity():
    from yolact_d2.demo.web import render, select

    pred = _prediction()
    rgb = np.full((60, 80, 3), 128, np.uint8)
    opaque = render(rgb, pred, select(pred, 0.0), _metadata(), mask_alpha=1.0)
    faint = render(rgb, pred, select(pred, 0.0), _metadata(), mask_alpha=0.1)
    assert opaque.shape == rgb.shape and opaque.dtype == np.uint8
    inside = (slice(12, 18), slice(8, 12))  # inside mask 0, away from its label and outline
    assert np.abs(opaque[inside].astype(int) - 128).max() > np.abs(faint[inside].astype(int) - 128).max() + 20
    only_first = render(rgb, pred, select(pred, 0.8), _metadata(), mask_alpha=1.0)
    assert np.array_equal(only_first[inside], opaque[inside])  # same colour when others are filtered out
    assert np.array_equal(render(rgb, pred, select(pred, 0.95), _metadata()), rgb)  # nothing kept: unchanged
    assert render(rgb, pred, select(pred, 0.0), _metadata(), min_side=200).shape == (180, 240, 3)


def test_demo_app_runs_the_model_once_per_image(tmp_path):
    app_module = _app_module()
    predictor = FakePredictor()
    app = app_module.DemoApp(predictor, _metadata(), str(tmp_path))
    cv2.imwrite(str(tmp_path / "in.png"), np.full((60, 80, 3), 90, np.uint8))
    state, status = app.analyse(str(tmp_path / "in.png"), "in.png")
    assert "in.png" in status and "3 detections" in status and "model time" in status
    counts = []
    for threshold, classes in ((0.0, [0, 1, 2]), (0.5, [0, 1, 2]), (0.0, [2]), (0.0, [])):
        overlay, rows, files, summary = app.redraw(state, threshold, classes, 0.5)
        counts.append(len(rows))
        assert overlay.shape == (360, 480, 3)  # enlarged to MIN_DRAWN_SIDE
        assert Image.open(files[0]).size == (480, 360)
        assert len(json.load(open(files[1]))) == len(rows)
    assert counts == [3, 2, 2, 0] and predictor.calls == 1
    (tmp_path / "bad.jpg").write_bytes(b"\x00" * 100)
    state, status = app.analyse(str(tmp_path / "bad.jpg"), "bad.jpg")
    assert state is None and status.startswith("**Error:** 'bad.jpg': is not an image")
    assert app.redraw(None, 0.3, [0], 0.5) == (None, [], None, "")


def test_app_help_and_bad_arguments(capsys):
    app_module = _app_module()
    with pytest.raises(SystemExit) as exit_:
        app_module.main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--onnx" in out and "--port" in out
    with pytest.raises(SystemExit) as exit_:
        app_module.main(["--config-file", "nope.yaml"])
    assert exit_.value.code == 2 and "config file not found: nope.yaml" in capsys.readouterr().err
    config = os.path.join(REPO, "configs", "Synthetic", "yolact_R_18_FPN_synthetic.yaml")
    with pytest.raises(SystemExit) as exit_:
        app_module.main(["--config-file", config, "--port", "70000"])
    assert exit_.value.code == 2 and "--port must be in 1..65535, got 70000" in capsys.readouterr().err
    from yolact_d2.utils.errors import UserError

    with socket.socket() as taken:  # a port in use: one line before the model is built
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=rf"^--port {port}: is in use on 127.0.0.1 \(choose another --port\)$"):
            app_module.main(["--config-file", config, "--port", str(port)])


# ------------------------------------------------------------------------------------------------
# End to end, in a real browser
# ------------------------------------------------------------------------------------------------
def _skip_loudly(reason: str):
    message = f"BROWSER TEST SKIPPED: {reason}"
    print(f"\n{'!' * 20} {message} {'!' * 20}", file=sys.stderr)
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_app(tmp_path_factory):
    """``(url, process)`` of demo/app.py serving a tiny random model."""
    for module in ("gradio", "playwright"):
        if importlib.util.find_spec(module) is None:
            _skip_loudly(f"Python package '{module}' is not installed (pip install -e '.[app]' playwright)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _skip_loudly(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set YOLACT_D2_CHROMIUM)")
    cfg_file = tmp_path_factory.mktemp("app") / "tiny.yaml"
    opts = ["MODEL.YOLACT.SCORE_THRESH_TEST", 0.0, "DATASETS.TEST", ("yolact_synthetic_val",)]
    cfg_file.write_text(tiny_cfg(num_classes=6, opts=opts).dump())
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = open(cfg_file.parent / "app.log", "w+")
    proc = subprocess.Popen([sys.executable, APP, "--config-file", str(cfg_file), "--port", str(port),
                             "--confidence-threshold", "0", "--opts", "MODEL.WEIGHTS", "random"],  # untrained
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"demo/app.py exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("demo/app.py did not answer within 300 s")
                time.sleep(1)
        for _ in range(30):  # the URL is printed just after the server starts answering
            log.seek(0)
            if f"running at {url}" in log.read():
                break
            time.sleep(1)
        else:
            pytest.fail(f"demo/app.py did not print its URL {url}")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _row_count(page) -> int:
    # The table is virtualised (not every row is in the DOM); aria-rowcount counts the header too.
    return int(page.get_attribute("#detections [role=grid]", "aria-rowcount")) - 1


def _wait_status(page, text: str, timeout_ms=120_000):
    page.wait_for_function("t => document.querySelector('#status').innerText.includes(t)", arg=text,
                           timeout=timeout_ms)


def _wait_rows(page, timeout_ms=60_000):
    """The status is written before the table is re-rendered: wait for its rows, not only the status."""
    page.wait_for_function(
        "() => Number(document.querySelector('#detections [role=grid]')?.getAttribute('aria-rowcount')) > 1",
        timeout=timeout_ms,
    )


def test_web_app_in_chromium(running_app, tmp_path):
    from playwright.sync_api import sync_playwright

    url, proc = running_app
    image = tmp_path / "shapes.png"
    from yolact_d2.data.datasets.synthetic import render_synthetic_sample

    cv2.imwrite(str(image), render_synthetic_sample(0, "browser", 1, image_size=(240, 240))["image"])
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="chromium_profile_", dir=tmp_path), executable_path=CHROMIUM,
            args=CHROMIUM_ARGS, headless=True, accept_downloads=True, viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.new_page()
            page.goto(url)
            page.set_input_files("#upload input[type=file]", str(image))
            _wait_status(page, "shapes.png (240x240)")
            page.wait_for_selector("#overlay img", timeout=60_000)
            assert "model time" in page.inner_text("#status")
            _wait_rows(page)
            total = _row_count(page)
            assert total > 0

            with page.expect_download() as download:
                page.click("#downloads a[download$='.json']")
            path = tmp_path / "detections.json"
            download.value.save_as(path)
            results = json.loads(path.read_text())
            assert len(results) == total
            gt = COCO()
            gt.dataset = {"images": [{"id": 1, "height": 240, "width": 240}], "annotations": [],
                          "categories": [{"id": i} for i in (1, 2, 3, 5, 7, 9)]}
            gt.createIndex()
            dt = gt.loadRes(str(path))
            assert all(dt.annToMask(a).shape == (240, 240) for a in dt.loadAnns(dt.getAnnIds()))
            assert {r["category_name"] for r in results} <= {"circle", "square", "triangle", "star", "ellipse",
                                                             "hexagon"}
            # Move the slider: click the range at the median score's position (the slider runs 0 .. 1).
            scores = sorted(r["score"] for r in results)
            median = scores[len(scores) // 2]
            box = page.locator("#threshold input[type=range]").bounding_box()
            page.mouse.click(box["x"] + box["width"] * median, box["y"] + box["height"] / 2)
            page.wait_for_function("() => Number(document.querySelector('#threshold input[type=number]').value) > 0")
            threshold = float(page.input_value("#threshold input[type=number]"))
            page.wait_for_function(
                "t => document.querySelector('#summary').innerText.includes(t)", arg=f"(score > {threshold:.2f})"
            )
            assert _row_count(page) == sum(s > threshold for s in scores) < total
            shot = tmp_path / "web_demo.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("YOLACT_D2_SCREENSHOT_DIR"):
                os.makedirs(os.environ["YOLACT_D2_SCREENSHOT_DIR"], exist_ok=True)
                shutil.copy(shot, os.path.join(os.environ["YOLACT_D2_SCREENSHOT_DIR"], "web_demo.png"))
            print(f"screenshot: {shot}")

            bad = tmp_path / "notes.txt"
            bad.write_text("not an image")
            page.locator("#upload").get_by_role("button", name="Clear").click()  # back to the file input
            page.set_input_files("#upload input[type=file]", str(bad))
            _wait_status(page, "Error: 'notes.txt': is not an image")
            assert proc.poll() is None
            # The slider keeps its place across images, and an untrained model's scores on the next image
            # may all lie under the first image's median: move it back to the left end before the next one.
            box = page.locator("#threshold input[type=range]").bounding_box()
            page.mouse.click(box["x"] + 1, box["y"] + box["height"] / 2)
            page.wait_for_function("() => Number(document.querySelector('#threshold input[type=number]').value) < 0.02")
            page.click("#examples button:has(img) >> nth=0")  # the server still answers
            _wait_status(page, "synthetic_0.png (320x320)")
            _wait_rows(page)
            assert _row_count(page) > 0
        finally:
            context.close()
