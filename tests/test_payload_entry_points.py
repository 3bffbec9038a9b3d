"""A checkpoint with a pickle payload is refused by every real entry point (docs/RELIABILITY.md, "Loading
checkpoints safely"): train_net.py (training, --eval-only, --resume of a poisoned last_checkpoint),
tools/export_model.py, demo/demo.py and YolactPredictor. Each ends with one error line naming the file and
status 1; the marker file the payload would create does not exist afterwards."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_safe_loading import _Payload, _write

from yolact_d2.runtime.safe_load import UnsafeCheckpointError

from conftest import small_synthetic_coco, tiny_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC_CONFIG = os.path.join(ROOT, "configs", "Synthetic", "yolact_R_18_FPN_synthetic.yaml")
ENV = dict(os.environ, PYTHONPATH=ROOT)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def coco_dirs(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 4, 2, seed=7)


def _payload(path, kind):
    """A checkpoint-shaped file at ``path`` whose unpickling would create ``<folder>/MARKER``."""
    marker = os.path.join(os.path.dirname(path), "MARKER")
    weight = torch.zeros(2, 3, 1, 1) if kind in ("zip", "legacy") else np.zeros((2, 3, 1, 1), np.float32)
    _write(path, kind, {"model": {"weight": weight, "hook": [_Payload(marker)]}, "__author__": "attacker"})
    return marker


def _run(argv, cwd=ROOT):
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr, proc.stderr


def _assert_refused(rc, output, stderr, path, marker):
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert rc == 1, output[-4000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: holds Python objects other than tensors"), \
        output[-4000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    assert not os.path.exists(marker)


def _train_net_args(coco_dirs, out, *opts):
    (train_json, train_root), (val_json, val_root) = coco_dirs
    return [
        os.path.join(ROOT, "train_net.py"), "--config-file", SYNTHETIC_CONFIG, *opts[:opts.index("--")],
        "DATASETS.COCO_INSTANCES", str([["p_train", train_json, train_root], ["p_val", val_json, val_root]]),
        "DATASETS.TRAIN", "('p_train',)", "DATASETS.TEST", "('p_val',)", "MODEL.DEVICE", "cpu",
        "INPUT.IMAGE_SIZE", "128", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "DATALOADER.NUM_WORKERS",
        "0", "OUTPUT_DIR", str(out), *opts[opts.index("--") + 1:],
    ]


@pytest.mark.parametrize("mode,kind,name", [
    ("train", "pickle4", "weights.pkl"),
    ("eval_only", "zip", "weights.pth"),
    ("resume", "legacy", "model_0000005.pth"),
])
def test_train_net_refuses_payload_weights(coco_dirs, tmp_path, mode, kind, name):
    out = tmp_path / "out"
    out.mkdir()
    if mode == "resume":  # a poisoned checkpoint named by last_checkpoint in OUTPUT_DIR
        path = str(out / name)
        (out / "last_checkpoint").write_text(name)
        args = _train_net_args(coco_dirs, out, "--resume", "--")
    else:
        path = str(tmp_path / name)
        flags = ["--eval-only"] if mode == "eval_only" else []
        args = _train_net_args(coco_dirs, out, *flags, "--", "MODEL.WEIGHTS", path)
    marker = _payload(path, kind)
    _assert_refused(*_run(args), path, marker)
    assert not (out / "model_final.pth").exists()


def test_export_model_refuses_payload_weights(tmp_path):
    path = str(tmp_path / "weights.pkl")
    marker = _payload(path, "pickle2")
    rc, output, stderr = _run([
        os.path.join(ROOT, "tools", "export_model.py"), "--format", "torchscript", "--config-file", SYNTHETIC_CONFIG,
        "--weights", path, "--output", str(tmp_path / "model.ts"),
    ])
    _assert_refused(rc, output, stderr, path, marker)
    assert not (tmp_path / "model.ts").exists()


def test_demo_refuses_payload_weights(tmp_path):
    path = str(tmp_path / "weights.pth")
    marker = _payload(path, "zip")
    image = tmp_path / "in.png"
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(image)
    rc, output, stderr = _run([
        os.path.join(ROOT, "demo", "demo.py"), "--config-file", SYNTHETIC_CONFIG, "--input", str(image),
        "--output", str(tmp_path / "vis" / "out.png"), "--opts", "MODEL.WEIGHTS", path, "MODEL.DEVICE", "cpu",
    ])
    _assert_refused(rc, output, stderr, path, marker)
    assert not (tmp_path / "vis" / "out.png").exists()


@pytest.mark.parametrize("kind,name", [("zip", "w.pth"), ("legacy", "w.pth"), ("pickle4", "w.pkl"),
                                       ("pickle2", "w.pkl")])
def test_predictor_refuses_payload_weights(tmp_path, kind, name):
    from yolact_d2 import YolactPredictor

    path = str(tmp_path / name)
    marker = _payload(path, kind)
    with pytest.raises(UnsafeCheckpointError, match=f"^{path}: holds Python objects other than tensors"):
        YolactPredictor(tiny_cfg(opts=["MODEL.WEIGHTS", path]))
    assert not os.path.exists(marker)
