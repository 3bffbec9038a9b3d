"""No code runs from a checkpoint: payload files are refused by every loader (docs/RELIABILITY.md)."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from yolact_d2.runtime.checkpointer import AtomicDetectionCheckpointer
from yolact_d2.runtime.safe_load import UnsafeCheckpointError, load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Payload:
    """Creates the marker file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write(path, kind, obj):
    if kind == "zip":
        torch.save(obj, path)
    elif kind == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:  # plain pickle
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=int(kind[-1]))


KINDS = [("zip", "model.pth"), ("legacy", "model.pth"), ("pickle2", "model.pkl"), ("pickle4", "model.pkl"),
         ("pickle4", "model.pyth"), ("pickle2", "model.pth")]


@pytest.fixture(params=KINDS, ids=[f"{k}-{n}" for k, n in KINDS])
def payload_file(request, tmp_path):
    kind, name = request.param
    marker = tmp_path / "MARKER"
    path = tmp_path / name
    weight = torch.zeros(2, 3, 1, 1) if kind in ("zip", "legacy") else np.zeros((2, 3, 1, 1), np.float32)
    inner = {"weight": weight, "hook": [_Payload(marker)]}
    key = "model_state" if name.endswith(".pyth") else "model"
    _write(path, kind, {key: inner, "__author__": "attacker"})
    return str(path), marker, kind


def test_load_checkpoint_refuses_payloads(payload_file):
    path, marker, kind = payload_file
    with pytest.raises(UnsafeCheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(f"{path}: holds Python objects other than tensors")
    assert e.value.offending == "io.open"
    assert "MODEL.WEIGHTS_TRUSTED True" in str(e.value)
    assert not marker.exists()


def test_checkpointer_refuses_payloads_and_opt_in_loads(payload_file):
    path, marker, kind = payload_file
    model = nn.Conv2d(3, 2, 1, bias=False)  # a d2-free model; AtomicDetectionCheckpointer.load
    with pytest.raises(UnsafeCheckpointError):
        AtomicDetectionCheckpointer(model).load(path)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):  # trust is for the named file only
        AtomicDetectionCheckpointer(model, trusted_file=path + ".other").load(path)
    assert not marker.exists()
    if kind.startswith("pickle") and not path.endswith(".pkl"):
        return  # a plain pickle named .pth: the unrestricted torch.load cannot read it either
    data = load_checkpoint(path, trusted=True)  # the explicit opt-in: the unrestricted loader
    assert marker.exists() and "hook" in (data.get("model") or data["model_state"])


def test_detectron2_numpy_pkl_loads_without_opt_in(tmp_path):
    weights = {"weight": np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1)}
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, f,
                    protocol=2)
    model = nn.Conv2d(3, 2, 1, bias=False)
    AtomicDetectionCheckpointer(model).load(str(path))
    assert torch.equal(model.weight, torch.from_numpy(weights["weight"]))


def test_own_checkpoint_resumes_without_opt_in(tmp_path):
    model = nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    saver = AtomicDetectionCheckpointer(model, str(tmp_path), optimizer=opt)
    saver.save("model_0000001", iteration=1, bad_images={"count": 2, "files": {3: "a.jpg"}})
    loaded = AtomicDetectionCheckpointer(nn.Linear(2, 2), str(tmp_path),
                                         optimizer=torch.optim.AdamW(model.parameters())).resume_or_load("")
    assert loaded["iteration"] == 1 and loaded["bad_images"] == {"count": 2, "files": {3: "a.jpg"}}


@pytest.mark.parametrize("tool", ["convert_yolact_weights.py", "convert_torchvision_backbone.py"])
def test_converters_refuse_payload(tool, tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "in.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(marker)}, path)
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), str(path), str(tmp_path / "out.pth")],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "--unsafe-load" in lines[0]
    assert lines[0].startswith(f"error: {path}: holds Python objects")
    assert not marker.exists() and not (tmp_path / "out.pth").exists()
