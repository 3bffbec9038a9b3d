"""Evaluation helpers: COCO evaluation with YOLACT++'s separate box and mask scores."""
from ..runtime.results_files import AtomicResultsMixin
from .coco_evaluation import YolactCOCOEvaluator

__all__ = ["AtomicResultsMixin", "YolactCOCOEvaluator"]
