"""TEST.COCO_EVAL_BACKEND: faster-coco-eval gives the numbers pycocotools gives, through
YolactCOCOEvaluator (box and mask AP, per-category AP, YOLACT++ mask scores), and the choice is
validated. The data: random masks with perturbed detections from tools/benchmark_coco_eval.py."""
import contextlib
import importlib.util
import io
import json
import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    path = os.path.join(REPO, "tools", "benchmark_coco_eval.py")
    spec = importlib.util.spec_from_file_location("bench_coco_eval", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A registered COCO dataset (12 images x 8 masks, 10 classes) and detections for it."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    gt, results = _bench().generated_set(12, 8, size=(120, 160), seed=3)
    path = tmp_path_factory.mktemp("coco") / "gt.json"
    path.write_text(json.dumps(gt))
    name = f"_coco_eval_backend_{os.getpid()}"
    register_coco_instances(name, {}, str(path), str(path.parent))
    DatasetCatalog.get(name)  # fills the category id mapping
    yield name, results
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _evaluate(name, results, backend, with_mask_scores=False):
    from detectron2.data import MetadataCatalog

    from yolact_d2.evaluation import YolactCOCOEvaluator

    to_contiguous = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    evaluator = YolactCOCOEvaluator(name, tasks=("bbox", "segm"), distributed=False, eval_backend=backend)
    evaluator.reset()
    rng = np.random.default_rng(0)
    by_image = {}
    for r in results:  # what process() stores: contiguous category ids
        r = dict(r, category_id=to_contiguous[r["category_id"]])
        if with_mask_scores:
            r["mask_score"] = float(rng.random())
        by_image.setdefault(r["image_id"], []).append(r)
    evaluator._predictions = [{"image_id": i, "instances": rs} for i, rs in sorted(by_image.items())]
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluator, evaluator.evaluate()


@pytest.mark.parametrize("with_mask_scores", [False, True])
def test_faster_coco_eval_gives_the_pycocotools_numbers(generated, with_mask_scores):
    pytest.importorskip("faster_coco_eval", reason="faster-coco-eval is not installed (pip install faster-coco-eval)")
    import detectron2.evaluation.coco_evaluation as d2

    name, results = generated
    before = d2.COCOeval_opt
    evaluator, faster = _evaluate(name, results, "faster_coco_eval", with_mask_scores)
    assert evaluator._cocoeval_cls.__name__ == "FasterCOCOeval"
    assert d2.COCOeval_opt is before  # restored after the evaluation
    _, reference = _evaluate(name, results, "pycocotools", with_mask_scores)
    assert set(faster) == {"bbox", "segm"} and set(faster["segm"]) == set(reference["segm"])
    for task in ("bbox", "segm"):
        for key, value in reference[task].items():  # AP, AP50, ..., AP-c1 ... AP-c10
            assert faster[task][key] == pytest.approx(value, abs=1e-9, nan_ok=True), (task, key)
    assert 5 < reference["segm"]["AP"] < 95 and reference["segm"]["AP"] != reference["bbox"]["AP"]


def test_backend_choice():
    from pycocotools.cocoeval import COCOeval

    from yolact_d2.evaluation.coco_evaluation import resolve_cocoeval_class
    from yolact_d2.runtime.config_loading import setup_cfg
    from yolact_d2.utils.errors import ConfigError

    cfg = setup_cfg()
    assert cfg.TEST.COCO_EVAL_BACKEND == "auto"
    assert resolve_cocoeval_class("pycocotools") is COCOeval
    with pytest.raises(ConfigError, match="TEST.COCO_EVAL_BACKEND: unknown backend 'fast'"):
        resolve_cocoeval_class("fast")
    has_faster = importlib.util.find_spec("faster_coco_eval") is not None
    auto = resolve_cocoeval_class("auto")
    assert (auto is not None and auto.__name__ == "FasterCOCOeval") if has_faster else auto is None
