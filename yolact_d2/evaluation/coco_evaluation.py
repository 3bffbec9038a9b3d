"""COCO evaluation with separate box and mask scores (docs/MODEL.md §9.7, §10; YOLACT++).

YOLACT++ ranks boxes by the class score and masks by ``class score x predicted mask IoU``.
Detectron2's ``COCOEvaluator`` writes one ``score`` per detection and uses it for every task. This
subclass also records ``Instances.mask_scores`` (set by a model with ``MODEL.YOLACT.MASK_IOU_ON``)
as a ``mask_score`` field of each COCO result, and evaluates ``segm`` with it. ``bbox`` (and
everything else) keeps ``score``. Without ``mask_scores`` it behaves exactly like
``COCOEvaluator``.

The saved ``coco_instances_results.json`` has ``score`` (the box / class score) and, for YOLACT++,
``mask_score`` in every entry.
"""
import itertools

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json

from .atomic import AtomicResultsMixin  # reliability: result files are written atomically

__all__ = ["YolactCOCOEvaluator"]


class YolactCOCOEvaluator(AtomicResultsMixin, COCOEvaluator):
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

    def _eval_predictions(self, predictions, img_ids=None):
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
