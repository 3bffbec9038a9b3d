"""dev/bf16_detection_check.py: the matching figures on a hand-built case, and a run on the tiny model
(fp32 against bf16 and against the bf16-rounded-weights control)."""
import importlib
import json
import os

import pytest
import torch

from detectron2.structures import Boxes, Instances

from conftest import CONFIG_DIR

pytestmark = pytest.mark.usefixtures("one_thread")

DEV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dev")


def _tool(monkeypatch):
    monkeypatch.syspath_prepend(DEV)
    return importlib.import_module("bf16_detection_check")


def _instances(boxes, classes, scores, masks):
    inst = Instances((10, 10))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.pred_classes = torch.tensor(classes)
    inst.scores = torch.tensor(scores)
    inst.pred_masks = torch.zeros(len(boxes), 10, 10, dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(masks):
        inst.pred_masks[i, y0:y1, x0:x1] = True
    return inst


def test_pair_figures_by_hand(monkeypatch):
    tool = _tool(monkeypatch)
    # fp32: A (class 1, 0.9), B (class 2, 0.6), C (class 1, 0.2: below the threshold)
    fp32 = _instances([[0, 0, 4, 4], [5, 5, 9, 9], [0, 5, 4, 9]], [1, 2, 1], [0.9, 0.6, 0.2],
                      [(0, 4, 0, 4), (5, 9, 5, 9), (5, 9, 0, 4)])
    # other: A's twin one row taller (box and mask IoU 16/20), B's box with another class, C's twin
    other = _instances([[0, 0, 4, 5], [5, 5, 9, 9], [0, 5, 4, 9]], [1, 3, 1], [0.85, 0.7, 0.25],
                       [(0, 5, 0, 4), (5, 9, 5, 9), (5, 9, 0, 4)])
    fig = tool.pair_figures(fp32, other, 0.3)
    assert (fig["fp32"], fig["other"], fig["matched"]) == (2, 2, 1)
    assert fig["box_iou"] == pytest.approx([0.8]) and fig["mask_iou"] == pytest.approx([0.8])
    assert fig["score_diff"] == pytest.approx([0.05])
    row = tool.summary(fig)
    assert row[:4] == ["2", "2", "1/2 (50%)", "0.800"]
    # at 0.1 C is checked too and matched exactly
    fig = tool.pair_figures(fp32, other, 0.1)
    assert (fig["fp32"], fig["matched"]) == (3, 2) and fig["mask_iou"] == pytest.approx([0.8, 1.0])


def test_runs_on_the_tiny_model(monkeypatch, tmp_path, capsys):
    tool = _tool(monkeypatch)
    out = tmp_path / "check.json"
    pooled = tool.main(["--config-file", os.path.join(CONFIG_DIR, "Synthetic", "yolact_R_18_FPN_synthetic.yaml"),
                        "--synthetic", "2", "--stage-images", "1", "--json", str(out),
                        "MODEL.DEVICE", "cpu", "INPUT.IMAGE_SIZE", "128"])
    assert set(pooled) == {"bf16", "fp32 with bf16-rounded weights"}
    for figures in pooled.values():
        assert set(figures) == {0.05, 0.3, 0.5}
        fig = figures[0.05]
        assert fig["fp32"] == 200  # 100 detections per image (conditioned weights)
        assert 0.8 * fig["fp32"] <= fig["matched"] == len(fig["mask_iou"]) == len(fig["score_diff"])
        assert all(0.5 <= iou <= 1.0 for iou in fig["box_iou"])
    text = capsys.readouterr().out
    assert "| bf16 |" in text and "| fp32 with bf16-rounded weights |" in text
    stages = json.loads(out.read_text())["stage_errors"]
    # bf16 moves every stage, but not by more than a few percent on this small random model
    assert all(0 < err < 0.2 for err in stages["bf16"].values())
