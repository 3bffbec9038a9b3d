"""COCO evaluation with separate box and mask scores (docs/MODEL.md §9.7, §10; YOLACT++).

YOLACT++ ranks boxes by the class score and masks by ``class score x predicted mask IoU``.
Detectron2's ``COCOEvaluator`` writes one ``score`` per detection and uses it for every task. This
subclass also records ``Instances.mask_scores`` (set by a model with ``MODEL.YOLACT.MASK_IOU_ON``)
as a ``mask_score`` field of each COCO result, and evaluates ``segm`` with it. ``bbox`` (and
everything else) keeps ``score``. Without ``mask_scores`` it behaves exactly like
``COCOEvaluator``.

The ground truth is the annotations the dataset's loader kept after its checks, not the json file
read again (:mod:`yolact_d2.evaluation.ground_truth`); the evaluation logs how many it scores
against and how many were dropped at load, next to the AP tables.

The saved ``coco_instances_results.json`` has ``score`` (the box / class score) and, for YOLACT++,
``mask_score`` in every entry.

The COCOeval implementation is chosen by ``eval_backend`` (``TEST.COCO_EVAL_BACKEND``): Detectron2's
compiled ``COCOeval_opt`` is missing from source installs without the C++ extension, where it falls
back to pycocotools' pure-Python ``COCOeval``. ``faster_coco_eval`` (pip ``faster-coco-eval``: C++
evaluate / accumulate) gives the same 12 summary numbers several times faster (docs/BENCHMARKS.md,
tests/test_coco_eval_backend.py); ``auto`` uses it when it is installed.
"""
import contextlib
import itertools
import logging

import detectron2.evaluation.coco_evaluation as d2_coco_evaluation
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json

from ..runtime.results_files import AtomicResultsMixin  # reliability: result files are written atomically
from .ground_truth import checked_coco_ground_truth

__all__ = ["YolactCOCOEvaluator", "COCO_EVAL_BACKENDS", "faster_cocoeval_class", "resolve_cocoeval_class"]

logger = logging.getLogger(__name__)
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
    from ..utils.errors import ConfigError

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


class YolactCOCOEvaluator(AtomicResultsMixin, COCOEvaluator):
    def __init__(self, dataset_name, *args, eval_backend: str = "auto", **kwargs):
        """``COCOEvaluator``'s arguments; ``eval_backend``: see the module docstring."""
        coco_gt, self.ground_truth_note = checked_coco_ground_truth(dataset_name)
        if coco_gt is None:
            super().__init__(dataset_name, *args, **kwargs)
        else:
            # COCOEvaluator reads metadata.json_file with COCO(...): give it the checked annotations.
            saved = d2_coco_evaluation.COCO, d2_coco_evaluation.convert_to_coco_json
            d2_coco_evaluation.COCO = lambda *_args, **_kwargs: coco_gt
            d2_coco_evaluation.convert_to_coco_json = lambda *_args, **_kwargs: None
            try:
                super().__init__(dataset_name, *args, **kwargs)
            finally:
                d2_coco_evaluation.COCO, d2_coco_evaluation.convert_to_coco_json = saved
        self._cocoeval_cls = resolve_cocoeval_class(eval_backend)
        if self._cocoeval_cls is not None:
            self._logger.info(f"COCO evaluation backend: {self._cocoeval_cls.__module__}.{self._cocoeval_cls.__name__}")

    @contextlib.contextmanager
    def _cocoeval_backend(self):
        """Detectron2 picks the COCOeval class from its module-level ``COCOeval_opt`` when
        ``_use_fast_impl`` is set; point both at the chosen backend for one evaluation."""
        if self._cocoeval_cls is None:
            yield
            return
        saved = d2_coco_evaluation.COCOeval_opt, self._use_fast_impl
        d2_coco_evaluation.COCOeval_opt, self._use_fast_impl = self._cocoeval_cls, True
        try:
            yield
        finally:
            d2_coco_evaluation.COCOeval_opt, self._use_fast_impl = saved

    def _eval_predictions(self, predictions, img_ids=None):
        if self.ground_truth_note:
            self._logger.info(self.ground_truth_note)
        with self._cocoeval_backend():
            return self._eval_predictions_with_mask_scores(predictions, img_ids=img_ids)

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            prediction = {"image_id": input["image_id"]}
            if "instances" in output:
                instances = output["instances"].to(self._cpu_device)
                results = instances_to_coco_json(instances, input["image_id"])
                if instances.has("mask_scores"):
                    for result, mask_score in zip(results, instances.mask_scores.tolist()):
                        result["mask_score"] = mask_score
                prediction["instances"] = results
            if "proposals" in output:
                prediction["proposals"] = output["proposals"].to(self._cpu_device)
            if len(prediction) > 1:
                self._predictions.append(prediction)

    def _eval_predictions_with_mask_scores(self, predictions, img_ids=None):
        results = list(itertools.chain(*[p["instances"] for p in predictions]))
        if not any("mask_score" in r for r in results):
            return super()._eval_predictions(predictions, img_ids=img_ids)
        tasks = list(self._tasks or self._tasks_from_predictions(results))
        # Copies made before the first pass, which maps the category ids in place.
        segm_predictions = [
            dict(p, instances=[dict(r, score=r.get("mask_score", r["score"])) for r in p["instances"]])
            for p in predictions
        ]
        own_tasks, own_output_dir = self._tasks, self._output_dir
        try:
            other_tasks = [t for t in tasks if t != "segm"]
            if other_tasks:
                # Evaluates the other tasks and writes the json (score = box score, mask_score).
                self._tasks = tuple(other_tasks)
                super()._eval_predictions(predictions, img_ids=img_ids)
                self._output_dir = None  # the json is written already
            if "segm" in tasks:
                self._tasks = ("segm",)
                super()._eval_predictions(segm_predictions, img_ids=img_ids)
        finally:
            self._tasks, self._output_dir = own_tasks, own_output_dir
