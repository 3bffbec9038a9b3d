"""YolactPredictor (DefaultPredictor contract with YOLACT's test resize) and demo/demo.py.

Tiny randomly initialised model (ResNet-18, 128 px, 3 classes) with the score threshold at 0 so
that random weights still give detections. The demo runs as a subprocess with one thread.
"""
import contextlib
import importlib.util
import io
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "demo", "demo.py")


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(*opts):
    return tiny_cfg(opts=["MODEL.YOLACT.SCORE_THRESH_TEST", 0.0, *opts])


@pytest.fixture(scope="module")
def predictor():
    from yolact_d2 import YolactPredictor

    torch.manual_seed(0)
    return YolactPredictor(_cfg())


def _image(h, w, seed=0):
    """A BGR uint8 image with a few flat shapes on a gradient (compresses well, looks like one)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 96)], -1)
    img = img.astype(np.uint8)
    for _ in range(3):
        cx, cy, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(8, 30))
        cv2.circle(img, (cx, cy), r, tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    return img


def _same(a, b):
    assert len(a) == len(b)
    assert torch.equal(a.scores, b.scores)
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
    assert torch.equal(a.pred_classes, b.pred_classes)
    assert torch.equal(a.pred_masks, b.pred_masks)


# ------------------------------------------------------------------------------------------------
# YolactPredictor
# ------------------------------------------------------------------------------------------------
def test_exported_from_package():
    import yolact_d2
    from yolact_d2.predictor import YolactPredictor

    assert yolact_d2.YolactPredictor is YolactPredictor and "YolactPredictor" in yolact_d2.__all__


@pytest.mark.parametrize("size", [(90, 160), (200, 120)])
def test_predictor_output_at_original_size_and_equal_to_mapper_path(predictor, tmp_path, size):
    from yolact_d2.data import YolactDatasetMapper

    h, w = size
    img = _image(h, w)
    out = predictor(img)
    assert set(out) == {"instances"}
    inst = out["instances"]
    assert inst.image_size == (h, w)
    n = len(inst)
    assert n > 0
    assert inst.pred_masks.shape == (n, h, w) and inst.pred_masks.dtype == torch.bool
    boxes = inst.pred_boxes.tensor
    assert boxes.shape == (n, 4)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert ((inst.pred_classes >= 0) & (inst.pred_classes < 3)).all()

    # Same pixels through the test mapper (lossless PNG on disk) -> identical input and output.
    path = str(tmp_path / "img.png")
    assert cv2.imwrite(path, img)
    mapped = YolactDatasetMapper(predictor.cfg, is_train=False)({"file_name": path, "image_id": 0})
    mine = predictor.preprocess(img)
    assert mine["image"].dtype == torch.float32 and tuple(mine["image"].shape) == (3, 128, 128)
    assert torch.equal(mine["image"], mapped["image"])
    assert (mine["height"], mine["width"]) == (mapped["height"], mapped["width"]) == (h, w)
    with torch.no_grad():
        ref = predictor.model([mapped])[0]["instances"]
    _same(inst, ref)


def test_predictor_keep_aspect_mode(tmp_path):
    from yolact_d2 import YolactPredictor
    from yolact_d2.data import YolactDatasetMapper

    pred = YolactPredictor(_cfg("INPUT.TEST_RESIZE_MODE", "keep_aspect"))
    img = _image(90, 160, seed=1)
    inputs = pred.preprocess(img)
    assert tuple(inputs["image"].shape) == (3, 72, 128)
    path = str(tmp_path / "img.png")
    cv2.imwrite(path, img)
    mapped = YolactDatasetMapper(pred.cfg, is_train=False)({"file_name": path, "image_id": 0})
    assert torch.equal(inputs["image"], mapped["image"])
    inst = pred(img)["instances"]
    assert inst.image_size == (90, 160) and inst.pred_masks.shape[1:] == (90, 160)


def test_predictor_bgr_format_config():
    from yolact_d2 import YolactPredictor

    cfg = _cfg("INPUT.FORMAT", "BGR")
    pred = YolactPredictor(cfg)
    img = _image(64, 80)
    rgb_like = YolactPredictor.__new__(YolactPredictor)  # only the preprocessing of an RGB predictor
    rgb_like.aug, rgb_like.input_format, rgb_like.model = pred.aug, "RGB", pred.model
    assert torch.equal(pred.preprocess(img)["image"], rgb_like.preprocess(img)["image"].flip(0))


def test_grayscale_and_rgba_inputs(predictor):
    img = _image(90, 160)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    as_bgr = predictor(np.repeat(gray[:, :, None], 3, axis=2))["instances"]
    _same(predictor(gray)["instances"], as_bgr)
    _same(predictor(gray[:, :, None])["instances"], as_bgr)
    alpha = np.random.default_rng(0).integers(0, 256, (90, 160, 1), dtype=np.uint8)
    _same(predictor(np.concatenate([img, alpha], axis=2))["instances"], predictor(img)["instances"])


def test_demo_single_image_output_creates_its_folder(tmp_path, cfg_file, monkeypatch):
    img = tmp_path / "one.png"
    cv2.imwrite(str(img), _image(40, 60))
    target = tmp_path / "new" / "dir" / "out.png"  # neither folder exists, as for folder and video outputs
    code, out = _main_in_process(monkeypatch, "--config-file", cfg_file, "--input", str(img),
                                 "--output", str(target), "--confidence-threshold", "0", *UNTRAINED)
    assert code == 0, out
    assert cv2.imread(str(target)).shape == (40, 60, 3)


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.zeros(10, np.uint8), "shape (10,)"),
        (np.zeros((2, 8, 8, 3), np.uint8), "shape (2, 8, 8, 3)"),
        (np.zeros((8, 8, 2), np.uint8), "shape (8, 8, 2)"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        (np.zeros((8, 8, 3), object), "dtype object"),
        ([[0, 0, 0]], "list"),
        (None, "None"),
    ],
)
def test_invalid_inputs_raise_clear_value_error(predictor, bad, words):
    with pytest.raises(ValueError) as err:
        predictor(bad)
    assert words in str(err.value)


def test_threshold_in_model_equals_filtering_afterwards(predictor):
    """What demo.py relies on: SCORE_THRESH_TEST = T, then keeping scores > T, gives exactly the
    detections scoring > T of a model run with a lower threshold."""
    from yolact_d2 import YolactPredictor

    img = _image(200, 120)
    low = predictor(img)["instances"]
    t = float(low.scores.median())
    high_pred = YolactPredictor(_cfg("MODEL.YOLACT.SCORE_THRESH_TEST", t))
    high_pred.model.load_state_dict(predictor.model.state_dict())
    high = high_pred(img)["instances"]
    # the model's threshold is on each anchor's best class: a detection of another class can
    # score below it (no threshold after NMS), hence the demo's own filter on the final scores
    high = high[high.scores > t]
    kept = low[low.scores > t]
    assert 0 < len(kept) < len(low)
    _same(high, kept)


def test_cfg_dump_reloads(tmp_path):
    from yolact_d2.runtime.config_loading import setup_cfg

    cfg = _cfg()
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.dump())
    loaded = setup_cfg(str(path))
    assert yaml.safe_load(loaded.dump()) == yaml.safe_load(cfg.dump())


# ------------------------------------------------------------------------------------------------
# demo/demo.py
# ------------------------------------------------------------------------------------------------
def _load_demo_module():
    spec = importlib.util.spec_from_file_location("yolact_demo_module", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_demo(*args, timeout=180):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DISPLAY="", WAYLAND_DISPLAY="")
    proc = subprocess.run(
        [sys.executable, DEMO, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )
    return proc.returncode, proc.stdout + proc.stderr


# an untrained model on purpose: a config file's MODEL.WEIGHTS random is no opt-in for inference
UNTRAINED = ("--opts", "MODEL.WEIGHTS", "random")


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(_cfg().dump())
    return str(path)


def test_demo_help():
    code, out = _run_demo("--help", timeout=60)
    assert code == 0, out
    for word in ("--config-file", "--input", "--video-input", "--webcam", "--output",
                 "--confidence-threshold", "--opts", "MODEL.DEVICE cpu"):
        assert word in out


def test_output_names_are_distinct():
    from yolact_d2.demo import output_names

    names = output_names(["a/x.jpg", "b/y.png", "c/x.png", "d/X.jpg", "e/x_jpg.bmp"])
    assert names[1] == "y.png"
    assert len({n.lower() for n in names}) == 5 and all(n.endswith(".png") for n in names)


def test_demo_folder_with_a_corrupt_file(tmp_path, cfg_file):
    folder = tmp_path / "in"
    folder.mkdir()
    sizes = {"a": (90, 160), "b": (120, 100), "c": (64, 64)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        assert cv2.imwrite(str(folder / f"{name}.png"), _image(h, w, seed=i))
    noise = np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)
    (folder / "broken.jpg").write_bytes(noise.tobytes())
    (folder / "notes.txt").write_text("not an image")
    out_dir = tmp_path / "out"
    code, out = _run_demo(
        "--config-file", cfg_file, "--input", str(folder), "--output", str(out_dir),
        "--confidence-threshold", "0", "--opts", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "random",
    )
    assert code == 1, out
    assert "broken.jpg" in out
    assert "3 image(s) succeeded, 1 failed" in out
    assert sorted(os.listdir(out_dir)) == ["a.png", "b.png", "c.png"]
    for name, (h, w) in sizes.items():
        drawn = cv2.imread(str(out_dir / f"{name}.png"))
        assert drawn.shape == (h, w, 3)
        assert not np.array_equal(drawn, _image(h, w, seed=list(sizes).index(name)))  # something drawn


def _main_in_process(monkeypatch, *args):
    """demo.main(args) in this process (no display): (exit status, demo log messages + stderr)."""
    monkeypatch.setenv("DISPLAY", "")
    monkeypatch.setenv("WAYLAND_DISPLAY", "")
    records = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    demo_logger = logging.getLogger("yolact_demo")
    demo_logger.addHandler(handler)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            try:
                code = _load_demo_module().main(list(args))
            except SystemExit as e:
                code = e.code
    finally:
        demo_logger.removeHandler(handler)
    return code, "\n".join(r.getMessage() for r in records) + stderr.getvalue()


def test_demo_single_image_to_file_and_no_display(tmp_path, cfg_file, monkeypatch):
    img = tmp_path / "one.png"
    cv2.imwrite(str(img), _image(90, 160))
    target = tmp_path / "vis" / "drawn.png"
    target.parent.mkdir()
    code, out = _main_in_process(monkeypatch, "--config-file", cfg_file, "--input", str(img),
                                 "--output", str(target), "--confidence-threshold", "0", *UNTRAINED)
    assert code == 0, out
    assert "1 image(s) succeeded, 0 failed" in out
    assert cv2.imread(str(target)).shape == (90, 160, 3)
    # no --output and no display: usage error asking for --output
    code, out = _main_in_process(monkeypatch, "--config-file", cfg_file, "--input", str(img))
    assert code == 2 and "pass --output" in out


def _write_video(path, frames=5, h=96, w=128):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    if not writer.isOpened():
        pytest.skip("cv2 cannot write mp4v here")
    for i in range(frames):
        writer.write(_image(h, w, seed=i))
    writer.release()


def _read_video(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_demo_video(tmp_path, cfg_file):
    src = tmp_path / "clip.mp4"
    _write_video(src)
    assert len(_read_video(src)) == 5
    dst = tmp_path / "clip_vis.mp4"
    code, out = _run_demo("--config-file", cfg_file, "--video-input", str(src), "--output", str(dst),
                          "--confidence-threshold", "0", "--opts", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "random")
    assert code == 0, out
    frames = _read_video(dst)
    assert len(frames) == 5
    assert all(f.shape == (96, 128, 3) for f in frames)


def test_demo_unreadable_video(tmp_path, cfg_file, monkeypatch):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 50)
    code, out = _main_in_process(monkeypatch, "--config-file", cfg_file, "--video-input", str(bad),
                                 "--output", str(tmp_path / "o.mp4"))
    assert code == 1 and "Cannot open video" in out and "bad.mp4" in out
    code, out = _main_in_process(monkeypatch, "--config-file", cfg_file, "--video-input",
                                 str(tmp_path / "missing.mp4"), "--output", str(tmp_path / "o.mp4"))
    assert code == 1 and "not found" in out and "missing.mp4" in out
    code, out = _main_in_process(monkeypatch, "--config-file", cfg_file, "--video-input", str(bad),
                                 "--output", str(tmp_path / "o.avi"))
    assert code == 2 and ".mp4" in out


def test_demo_output_below_a_file_is_a_user_error_naming_it(tmp_path):
    from yolact_d2.demo.inputs import plan_image_outputs, plan_video_output
    from yolact_d2.utils.errors import UserError

    blocker = tmp_path / "file"
    blocker.write_text("keep")

    def usage_error(message):
        raise AssertionError(f"not a usage error: {message}")

    with pytest.raises(UserError, match=rf"^--output folder {blocker / 'sub'}: cannot be created \(Not a directory\)$"):
        plan_image_outputs(["a.png"], False, str(blocker / "sub" / "out.png"), usage_error)
    with pytest.raises(UserError, match=rf"^--output folder {blocker}: cannot be created \(File exists\)$"):
        plan_video_output("v.mp4", str(blocker / "out.mp4"), usage_error)
    assert blocker.read_text() == "keep"
