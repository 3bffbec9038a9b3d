"""The original YOLACT's post-processing written literally: the oracle the fast post-processing of
yolact_d2/modeling/inference.py and mask_ops.py is tested against (tests/test_fast_inference.py).

What differs from the library, and is what the library does faster:

* candidates are picked with full sorts then slices (the library: ``torch.topk``, and per-class Fast
  NMS first solved on the ``4 * max_detections`` best scores);
* every mask is upsampled bilinearly to the whole output canvas as floats and then thresholded (the
  library: only the window of each mask that can be non-zero).

Everything else (the score threshold, box decoding, greedy NMS, the crop, pixel boxes, mask
re-scoring) is shared with the library, so that the comparison isolates the fast parts.

``use_reference_postprocess(model)`` makes one ``Yolact`` instance post-process with the oracle
(its ``postprocess_batch``); tools/benchmark.py ``--faithful`` uses it to time the literal
algorithm. Not part of the package: a test and benchmark helper only.
"""
import types
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from detectron2.structures import Boxes, Instances

from yolact_d2.modeling.box_ops import box_iou
from yolact_d2.modeling.inference import standard_nms
from yolact_d2.modeling.mask_ops import assemble_masks, crop_masks

__all__ = [
    "reference_paste_masks",
    "reference_fast_nms",
    "reference_cross_class_fast_nms",
    "reference_detect",
    "reference_detections_to_instances",
    "use_reference_postprocess",
]


def reference_paste_masks(
    masks: torch.Tensor, canvas: Tuple[int, int], output_size: Tuple[int, int], threshold: float
) -> torch.Tensor:
    """Upsample (N, h, w) soft masks bilinearly to ``canvas`` (align_corners=False), keep the
    top-left ``output_size`` and threshold (strict ``>``) -> bool (N, H, W)."""
    out_h, out_w = output_size
    if masks.shape[0] == 0:
        return masks.new_zeros((0, out_h, out_w), dtype=torch.bool)
    masks = F.interpolate(masks[None], size=canvas, mode="bilinear", align_corners=False)[0]
    return masks[:, :out_h, :out_w] > threshold


def _sorted_top(scores: torch.Tensor, top_k: int):
    """The original's candidate selection: sort every score, keep the first ``top_k``."""
    scores, idx = scores.sort(dim=-1, descending=True)
    return scores[..., :top_k], idx[..., :top_k]


def _max_iou_with_higher_scored(cand_boxes: torch.Tensor) -> torch.Tensor:
    """For score-sorted boxes (..., n, 4): max IoU of each box with any box before it."""
    return box_iou(cand_boxes, cand_boxes).triu_(diagonal=1).amax(dim=-2)


def reference_fast_nms(boxes, scores, coefficients, iou_threshold: float, top_k: int, max_detections: int):
    """Per-class Fast NMS as the original writes it: per class, the ``top_k`` best by a full sort;
    a box goes if its IoU with any higher-scored box of its class exceeds ``iou_threshold``; then
    the ``max_detections`` best over all classes. boxes (P, 4), scores (C, P), coefficients (P, k)."""
    num_classes = scores.shape[0]
    scores, idx = _sorted_top(scores, top_k)
    cand_boxes = boxes[idx.reshape(-1)].reshape(num_classes, -1, 4)
    keep = _max_iou_with_higher_scored(cand_boxes) <= iou_threshold
    classes = torch.arange(num_classes, device=boxes.device)[:, None].expand_as(keep)[keep]
    anchors, boxes, scores = idx[keep], cand_boxes[keep], scores[keep]
    scores, order = scores.sort(dim=0, descending=True)
    order, scores = order[:max_detections], scores[:max_detections]
    return boxes[order], scores, classes[order], coefficients[anchors[order]]


def reference_cross_class_fast_nms(
    boxes, scores, coefficients, iou_threshold: float, top_k: int, max_detections: int
):
    """Class-agnostic Fast NMS on each anchor's best class, candidates by a full sort."""
    scores, classes = scores.max(dim=0)
    idx = _sorted_top(scores, top_k)[1]
    idx = idx[_max_iou_with_higher_scored(boxes[idx]) <= iou_threshold][:max_detections]
    return boxes[idx], scores[idx], classes[idx], coefficients[idx]


def reference_detect(
    class_probs, boxes, coefficients, *, score_threshold: float, nms_type: str, iou_threshold: float, top_k: int,
    max_detections: int, image_size: Tuple[int, int],
) -> Dict[str, torch.Tensor]:
    """:func:`yolact_d2.modeling.inference.detect` with the oracle's NMS (same arguments, same dict)."""
    foreground = class_probs[:, 1:]
    keep = foreground.amax(dim=1) > score_threshold
    foreground, boxes, coefficients = foreground[keep], boxes[keep], coefficients[keep]
    scores = foreground.t()
    if boxes.shape[0] == 0:
        out = (boxes, scores.new_zeros(0), torch.zeros(0, dtype=torch.int64, device=boxes.device), coefficients)
    elif nms_type == "fast":
        out = reference_fast_nms(boxes, scores, coefficients, iou_threshold, top_k, max_detections)
    elif nms_type == "cross_class":
        out = reference_cross_class_fast_nms(boxes, scores, coefficients, iou_threshold, top_k, max_detections)
    elif nms_type == "standard":  # greedy NMS has no fast variant: the library's
        out = standard_nms(
            boxes, scores, coefficients, iou_threshold, top_k, max_detections, score_threshold, image_size
        )
    else:
        raise ValueError(f"nms_type {nms_type!r}: not one of fast, cross_class, standard")
    return dict(zip(("boxes", "scores", "classes", "coefficients"), out))


def reference_detections_to_instances(
    detections: Dict[str, torch.Tensor],
    prototypes: torch.Tensor,
    image_size: Tuple[int, int],
    padded_size: Tuple[int, int],
    output_size: Tuple[int, int],
    mask_threshold: float = 0.5,
    truncate_boxes: bool = True,
    maskiou_net: Optional[nn.Module] = None,
) -> Instances:
    """:func:`yolact_d2.modeling.inference.detections_to_instances` with every mask upsampled to the
    whole canvas (:func:`reference_paste_masks`)."""
    out_h, out_w = output_size
    img_h, img_w = image_size
    pad_h, pad_w = padded_size
    boxes = detections["boxes"]
    rel = boxes * boxes.new_tensor([pad_w / img_w, pad_h / img_h, pad_w / img_w, pad_h / img_h])
    x1, x2 = rel[:, 0] * out_w, rel[:, 2] * out_w
    y1, y2 = rel[:, 1] * out_h, rel[:, 3] * out_h
    x1, x2 = torch.min(x1, x2).clamp(min=0), torch.max(x1, x2).clamp(max=out_w)
    y1, y2 = torch.min(y1, y2).clamp(min=0), torch.max(y1, y2).clamp(max=out_h)
    pixel_boxes = torch.stack([x1, y1, x2, y2], dim=1)
    if truncate_boxes:
        pixel_boxes = pixel_boxes.trunc()

    masks = crop_masks(assemble_masks(prototypes, detections["coefficients"]), boxes)
    mask_scores = None
    if maskiou_net is not None:
        if masks.shape[0] > 0:
            predicted_iou = maskiou_net(masks[:, None]).gather(1, detections["classes"][:, None]).squeeze(1)
            mask_scores = detections["scores"] * predicted_iou
        else:
            mask_scores = detections["scores"].new_zeros(0)
    if (img_h, img_w) == (pad_h, pad_w):
        canvas = (out_h, out_w)
    else:
        canvas = (round(out_h * pad_h / img_h), round(out_w * pad_w / img_w))
    result = Instances((out_h, out_w))
    result.pred_boxes = Boxes(pixel_boxes)
    result.scores = detections["scores"]
    result.pred_classes = detections["classes"]
    result.pred_masks = reference_paste_masks(masks, canvas, (out_h, out_w), mask_threshold)
    if mask_scores is not None:
        result.mask_scores = mask_scores
    return result


def _reference_postprocess_batch(model, batched_inputs: List[Dict], image_sizes, padded_size, predictions):
    """``Yolact.postprocess_batch`` with the oracle (the same per-image loop, arguments and profiler
    ranges, which tools/benchmark.py times)."""
    class_probs, boxes, coefficients, prototypes = predictions
    results = []
    for i, (x, image_size) in enumerate(zip(batched_inputs, image_sizes)):
        with record_function("yolact.nms"):
            detections = reference_detect(
                class_probs[i], boxes[i], coefficients[i], score_threshold=model.score_threshold,
                nms_type=model.nms_type, iou_threshold=model.nms_threshold, top_k=model.topk_candidates,
                max_detections=model.max_detections_per_image, image_size=padded_size,
            )
        output_size = (x.get("height", image_size[0]), x.get("width", image_size[1]))
        with record_function("yolact.masks"):
            instances = reference_detections_to_instances(
                detections, prototypes[i], image_size=tuple(image_size), padded_size=tuple(padded_size),
                output_size=tuple(output_size), mask_threshold=model.mask_threshold,
                truncate_boxes=model.truncate_boxes, maskiou_net=model.maskiou_net,
            )
        results.append({"instances": instances})
    return results


def use_reference_postprocess(model, enabled: bool = True):
    """Make this ``Yolact`` instance (not the class) post-process with the oracle, or, with
    ``enabled=False``, with the library again. Returns the model."""
    if enabled:
        model.postprocess_batch = types.MethodType(_reference_postprocess_batch, model)
    else:
        vars(model).pop("postprocess_batch", None)
    return model
