"""COCO evaluation with separate box and mask scores (YOLACT++'s mask re-scoring).

YOLACT++ ranks boxes by the class score and masks by ``class score x predicted mask IoU``.
Detectron2's ``COCOEvaluator`` writes one ``score`` per detection and uses it for every task. This
subclass also records ``Instances.mask_scores`` (set by a model with ``MODEL.YOLACT.MASK_IOU_ON``)
as a ``mask_score`` field of each COCO result, and ranks the masks of the ``segm`` evaluation by
it (:func:`segm_ranked_by_mask_scores`). ``bbox`` (and everything else) keeps ``score``. Without
``mask_scores`` it gives exactly ``COCOEvaluator``'s numbers.

The ground truth is the annotations the dataset's loader kept after its checks, not the json file
read again (:mod:`yolact_d2.evaluation.ground_truth`); the evaluation logs how many it scores
against and how many were dropped at load, next to the AP tables.

The saved ``coco_instances_results.json`` has ``score`` (the box / class score) and, for YOLACT++,
``mask_score`` in every entry. The files are written as Detectron2 writes them; the trainer and the
tools write them atomically (:class:`yolact_d2.runtime.results_files.AtomicResultsMixin`).

The COCOeval implementation is chosen by ``eval_backend`` (``TEST.COCO_EVAL_BACKEND``): Detectron2's
compiled ``COCOeval_opt`` is missing from source installs without the C++ extension, where it falls
back to pycocotools' pure-Python ``COCOeval``. ``faster_coco_eval`` (pip ``faster-coco-eval``: C++
evaluate / accumulate) gives the same 12 summary numbers several times faster (docs/BENCHMARKS.md,
tests/test_coco_eval_backend.py); ``auto`` uses it when it is installed.
"""
import logging

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils import comm

from ..utils.detectron2_internals import coco_ground_truth_for_init, cocoeval_for_evaluate, collected_predictions
from ..utils.errors import ConfigError
from .ground_truth import checked_coco_ground_truth

__all__ = [
    "YolactCOCOEvaluator", "COCO_EVAL_BACKENDS", "faster_cocoeval_class", "resolve_cocoeval_class",
    "segm_ranked_by_mask_scores",
]

logger = logging.getLogger(__name__)
# The evaluator's own messages go where COCOEvaluator's go (Detectron2's setup_logger shows them).
evaluation_logger = logging.getLogger(COCOEvaluator.__module__)
COCO_EVAL_BACKENDS = ("auto", "pycocotools", "faster_coco_eval")


def faster_cocoeval_class(threads=None):
    """faster-coco-eval's ``COCOeval_faster`` callable as ``cls(coco_gt, coco_dt, iou_type)`` on
    pycocotools ``COCO`` objects, like pycocotools' ``COCOeval``; raises ImportError if missing.
    ``threads``: its RLE IoU worker threads (default: its own choice)."""
    from faster_coco_eval import COCOeval_faster

    class FasterCOCOeval(COCOeval_faster):
        def __init__(self, cocoGt=None, cocoDt=None, iouType="segm"):
            kwargs = {} if threads is None else {"rle_iou_max_workers": int(threads)}
            super().__init__(cocoGt, cocoDt, iouType, print_function=logger.info, **kwargs)

    return FasterCOCOeval


def resolve_cocoeval_class(backend: str):
    """The COCOeval class for ``backend`` (one of :data:`COCO_EVAL_BACKENDS`), or None for
    Detectron2's own choice (its compiled COCOeval_opt if built, else pycocotools; "auto" without
    faster-coco-eval)."""
    if backend not in COCO_EVAL_BACKENDS:
        raise ConfigError("TEST.COCO_EVAL_BACKEND", f"unknown backend {backend!r}", f"use one of {COCO_EVAL_BACKENDS}")
    if backend == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        return COCOeval
    try:
        return faster_cocoeval_class()
    except ImportError as e:
        if backend == "auto":
            return None
        raise ConfigError(
            "TEST.COCO_EVAL_BACKEND 'faster_coco_eval'", f"cannot import faster_coco_eval ({e})",
            "pip install faster-coco-eval, or set it to 'auto' / 'pycocotools'",
        ) from None


def segm_ranked_by_mask_scores(cocoeval_cls):
    """``cocoeval_cls`` (called as ``cls(coco_gt, coco_dt, iou_type)``) that ranks the masks of a
    ``segm`` evaluation by each result's ``mask_score``: those results are copies made for the mask
    evaluation alone, so the boxes and the saved json keep the class score."""

    def cocoeval(coco_gt, coco_dt, iou_type="segm", *args, **kwargs):
        if iou_type == "segm":
            for result in coco_dt.dataset.get("annotations", []):  # the objects coco_dt.anns holds
                if "mask_score" in result:
                    result["score"] = result["mask_score"]
        return cocoeval_cls(coco_gt, coco_dt, iou_type, *args, **kwargs)

    return cocoeval


class YolactCOCOEvaluator(COCOEvaluator):
    def __init__(self, dataset_name, *args, eval_backend: str = "auto", **kwargs):
        """``COCOEvaluator``'s arguments; ``eval_backend``: see the module docstring."""
        coco_gt, self.ground_truth_note = checked_coco_ground_truth(dataset_name)
        if coco_gt is None:
            super().__init__(dataset_name, *args, **kwargs)
        else:
            with coco_ground_truth_for_init(coco_gt):  # not the json file read again: the checked annotations
                super().__init__(dataset_name, *args, **kwargs)
        self._cocoeval_cls = resolve_cocoeval_class(eval_backend)
        if self._cocoeval_cls is not None:
            evaluation_logger.info(
                f"COCO evaluation backend: {self._cocoeval_cls.__module__}.{self._cocoeval_cls.__name__}")

    def evaluate(self, img_ids=None):
        if self.ground_truth_note and comm.is_main_process():
            evaluation_logger.info(self.ground_truth_note)
        with cocoeval_for_evaluate(self, self._cocoeval_cls, wrap=segm_ranked_by_mask_scores):
            return super().evaluate(img_ids=img_ids)

    def process(self, inputs, outputs):
        """``COCOEvaluator.process`` that also records ``Instances.mask_scores`` as ``mask_score``."""
        predictions = collected_predictions(self)
        for input, output in zip(inputs, outputs):
            prediction = {"image_id": input["image_id"]}
            if "instances" in output:
                instances = output["instances"].to("cpu")
                results = instances_to_coco_json(instances, input["image_id"])
                if instances.has("mask_scores"):
                    for result, mask_score in zip(results, instances.mask_scores.tolist()):
                        result["mask_score"] = mask_score
                prediction["instances"] = results
            if "proposals" in output:
                prediction["proposals"] = output["proposals"].to("cpu")
            if len(prediction) > 1:
                predictions.append(prediction)
