"""Evaluation helpers: COCO evaluation with YOLACT++'s separate box and mask scores."""
from .coco_evaluation import YolactCOCOEvaluator

__all__ = ["YolactCOCOEvaluator"]
