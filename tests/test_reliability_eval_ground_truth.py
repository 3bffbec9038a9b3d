"""Evaluation scores against the annotations the loader kept (docs/RELIABILITY.md, "Evaluation
scores against the checked annotations"): a val json with a one-point polygon, an RLE of the wrong
size and a two-point polygon gives exactly the AP of the json without them, says how many were
dropped, and does not crash pycocotools; in-process with hand-made detections and through
train_net.py --eval-only."""
import contextlib
import copy
import io
import json
import os
import re
import subprocess
import sys
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.data import MetadataCatalog

from yolact_d2.data.datasets import register_datasets_from_config
from yolact_d2.evaluation import YolactCOCOEvaluator

from conftest import small_synthetic_coco, tiny_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC_CONFIG = os.path.join(ROOT, "configs", "Synthetic", "yolact_R_18_FPN_synthetic.yaml")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=ROOT)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 2, 4, seed=21)


def _with_bad_annotations(val_json, out_path):
    """The val json plus a one-point polygon, a wrong-size RLE and a two-point polygon, each with a
    valid box, on the first image."""
    data = json.load(open(val_json))
    image = data["images"][0]
    next_id = max(a["id"] for a in data["annotations"]) + 1
    category = data["categories"][0]["id"]
    wrong = mask_util.encode(np.asfortranarray(np.ones((image["height"] + 5, image["width"]), np.uint8)))
    bad = [
        [[10.0, 10.0]],
        {"size": list(wrong["size"]), "counts": wrong["counts"].decode("ascii")},
        [[10.0, 10.0, 30.0, 30.0]],
    ]
    for k, segm in enumerate(bad):
        data["annotations"].append({
            "id": next_id + k, "image_id": image["id"], "category_id": category, "iscrowd": 0,
            "bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0, "segmentation": segm,
        })
    out_path.write_text(json.dumps(data))
    return str(out_path)


def _register(json_file, image_root):
    name = f"gt_{uuid.uuid4().hex[:8]}"
    cfg = tiny_cfg(opts=["DATASETS.COCO_INSTANCES", [[name, json_file, image_root]]])
    register_datasets_from_config(cfg)
    return name


def _detections(val_json):
    """COCO results from the clean ground truth: two of every three objects found, with their own
    mask and box and falling scores, so that AP is between 0 and 100 and counts every missed object."""
    data = json.load(open(val_json))
    results = []
    for k, ann in enumerate(data["annotations"]):
        if k % 3 == 2 or ann["iscrowd"]:
            continue
        image = next(i for i in data["images"] if i["id"] == ann["image_id"])
        rles = mask_util.frPyObjects(ann["segmentation"], image["height"], image["width"])
        rle = mask_util.merge(rles)
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"],
                        "segmentation": rle, "score": 0.9 - 0.01 * k})
    return results


def _pycocotools_ap(json_file, results, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
        evaluation = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def test_dropped_annotations_are_not_scored_and_the_count_is_logged(coco, tmp_path):
    (_, _), (val_json, val_root) = coco
    bad_json = _with_bad_annotations(val_json, tmp_path / "bad.json")
    name = _register(bad_json, val_root)
    evaluator = YolactCOCOEvaluator(name, tasks=("bbox", "segm"), distributed=False)
    evaluator.reset()
    to_contiguous = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    results = _detections(val_json)
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(dict(r, category_id=to_contiguous[r["category_id"]]))
    image_ids = [i["id"] for i in json.load(open(val_json))["images"]]
    evaluator._predictions = [{"image_id": i, "instances": copy.deepcopy(by_image.get(i, []))} for i in image_ids]
    scores = evaluator.evaluate()

    expected = {task: _pycocotools_ap(val_json, results, task) for task in ("bbox", "segm")}
    for task in ("bbox", "segm"):
        assert 5 < expected[task][0] * 100 < 95  # a missed object lowers AP: the check can fail
        assert scores[task]["AP"] == pytest.approx(expected[task][0] * 100, abs=1e-9)
        assert scores[task]["APs"] == pytest.approx(expected[task][3] * 100, abs=1e-9) or np.isnan(
            scores[task]["APs"])
    num_clean = len(json.load(open(val_json))["annotations"])
    note = evaluator.ground_truth_note
    assert f"against {num_clean} annotations in {len(image_ids)} images" in note
    assert bad_json in note and "3 dropped at load (3 annotations dropped;" in note


def _eval_only(json_file, image_root, out):
    name = f"eo_{uuid.uuid4().hex[:6]}"
    opts = ["DATASETS.COCO_INSTANCES", str([[name, json_file, image_root]]), "DATASETS.TRAIN", f"('{name}',)",
            "DATASETS.TEST", f"('{name}',)", "INPUT.IMAGE_SIZE", "128", "SEED", "3", "OUTPUT_DIR", str(out),
            "MODEL.YOLACT.SCORE_THRESH_TEST", "0.0", "MODEL.WEIGHTS", "random"]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", SYNTHETIC_CONFIG,
                           "--eval-only", *opts], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    return log


def test_eval_only_on_a_json_with_dropped_annotations_gives_the_clean_json_ap(coco, tmp_path):
    (_, _), (val_json, val_root) = coco
    bad_json = _with_bad_annotations(val_json, tmp_path / "bad.json")
    clean = _eval_only(val_json, val_root, tmp_path / "clean")
    bad = _eval_only(bad_json, val_root, tmp_path / "bad")
    ap = re.compile(r"mask AP ([\d.]+|nan), box AP ([\d.]+|nan)")
    assert ap.search(bad) and ap.search(bad).groups() == ap.search(clean).groups(), (clean[-1500:], bad[-1500:])
    assert "3 dropped at load" in bad and "none dropped at load" in clean
