"""tools/benchmark.py runs on the stage methods of Yolact and reports every stage (no timing
assertions: only that it runs, counts detections and writes its JSON)."""
import contextlib
import importlib
import importlib.util
import io
import json
import os

import numpy as np
import pytest

from conftest import CONFIG_DIR

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "benchmark.py")
DEV = os.path.join(ROOT, "dev")
TINY = [
    "MODEL.DEVICE", "cpu", "INPUT.IMAGE_SIZE", "128",
]


def _tool():
    spec = importlib.util.spec_from_file_location("yolact_benchmark", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_benchmark_all_detections(backend, tmp_path):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    out = tmp_path / "bench.json"
    argv = [
        "--config-file", os.path.join(CONFIG_DIR, "Synthetic", "yolact_R_18_FPN_synthetic.yaml"),
        "--synthetic", "2", "--warmup", "1", "--threads", "1", "--backend", backend,
        "--all-detections", "--json", str(out), *TINY,
    ]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        _tool().main(argv)
    result = json.loads(out.read_text())
    stages = {"torch": ["backbone+fpn", "head+protonet"], "onnxruntime": ["network"]}[backend]
    assert set(result["stages"]) == {"preprocess", *stages, "nms", "masks", "end_to_end", "nms+masks"}
    assert all(v["min_ms"] <= v["median_ms"] <= v["max_ms"] for v in result["stages"].values())
    # score threshold 0 and conditioned random weights: the maximum number of detections
    assert result["detections_per_image"] == [100, 100] and result["score_threshold"] == 0.0
    assert result["image_size"] == [480, 640] and result["peak_memory_mb"] > 0
    text = stdout.getvalue()
    assert "detections per image: 100 100" in text and "end_to_end" in text


def test_benchmark_faithful_times_the_oracle(tmp_path, monkeypatch):
    # --faithful: the predictor post-processes with the tests' oracle (the original's literal algorithm),
    # inside the same profiler ranges, so that its NMS and mask stages are timed
    import reference_postprocess

    pasted = []
    paste = reference_postprocess.reference_paste_masks
    monkeypatch.setattr(reference_postprocess, "reference_paste_masks", lambda *a: pasted.append(1) or paste(*a))
    tool = _tool()
    args = tool.parse_args([
        "--config-file", os.path.join(CONFIG_DIR, "Synthetic", "yolact_R_18_FPN_synthetic.yaml"),
        "--synthetic", "2", "--all-detections", "--faithful", *TINY,
    ])
    images = tool.load_images(args)
    cfg, runs = tool.build_predictors(args, images, str(tmp_path))
    times, detections = tool.timed_stages(runs[0][2], images[0], "torch", lambda: None)
    assert pasted == [1, 1] and detections == 100  # the profiled run and the end-to-end run
    assert times["nms"] > 0 and times["masks"] > 0


def test_benchmark_onnx_file_needs_its_backend_and_is_never_overwritten(tmp_path, monkeypatch):
    tool = _tool()
    with pytest.raises(SystemExit):  # without --backend onnxruntime the torch model would be timed instead
        tool.parse_args(["--config-file", "x", "--onnx", "m.onnx"])
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"the user's file")
    exported = []
    monkeypatch.setattr("yolact_d2.export.export_onnx", lambda *a, **k: exported.append(a))
    args = tool.parse_args(["--config-file", os.path.join(CONFIG_DIR, "Synthetic", "yolact_R_18_FPN_synthetic.yaml"),
                            "--backend", "onnxruntime", "--onnx", str(mine), *TINY])
    from yolact_d2.export import ExportedModelError

    with pytest.raises(ExportedModelError, match="ONNX Runtime cannot load it"):  # used as it is, not re-exported
        tool.build_predictor(args, [np.zeros((32, 32, 3), np.uint8)] * 2, str(tmp_path))
    assert exported == [] and mine.read_bytes() == b"the user's file"


def test_benchmark_image_folder_and_errors(tmp_path):
    import cv2
    import numpy as np

    tool = _tool()
    with pytest.raises(SystemExit, match="no .jpg"):
        tool.load_images(tool.parse_args(["--config-file", "x", "--images", str(tmp_path)]))
    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 60, 3), 128, np.uint8))
    images = tool.load_images(tool.parse_args(["--config-file", "x", "--images", str(tmp_path)]))
    assert len(images) == 1 and images[0].shape == (40, 60, 3)


def test_benchmark_original_repo_argument_checks(tmp_path, monkeypatch):
    # dev/benchmark_original.py (developer only, needs a dbolya/yolact checkout) brings its own
    # converted weights and runs on CPU: conflicting arguments are refused before anything is built
    monkeypatch.syspath_prepend(DEV)
    tool = importlib.import_module("benchmark_original")
    base = ["--config-file", "x.yaml", "--original-repo", str(tmp_path)]
    with pytest.raises(SystemExit, match="drop --weights"):
        tool.main(base + ["--weights", "w.pth"])
    with pytest.raises(SystemExit, match="CPU only"):
        tool.main(base + ["--device", "cuda"])
    with pytest.raises(SystemExit, match="add --backend onnxruntime"):
        tool.main(base + ["--int8"])
