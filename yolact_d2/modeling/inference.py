"""YOLACT detection and post-processing (docs/MODEL.md, "Inference").

``detect`` turns one image's raw head outputs into at most ``max_detections`` detections in
relative coordinates (tensors only, so it can be traced), and ``detections_to_instances`` pastes
them into a Detectron2 ``Instances`` at the requested output size. YOLACT's masks are full-image
masks assembled from prototypes, so Detectron2's ``detector_postprocess`` (made for ROI masks) is
deliberately not used.

Both steps compute the original's algorithm faster (``torch.topk`` instead of full sorts, Fast NMS
on the best candidates first, masks upsampled only where they can be non-zero); the original's
literal algorithm is the oracle they are tested against (tests/reference_postprocess.py,
tests/test_fast_inference.py: same detections, same masks).
"""
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torchvision.ops import batched_nms

from detectron2.structures import Boxes, Instances

from ..utils.errors import ConfigError
from .box_ops import box_iou
from .mask_ops import assemble_masks, crop_keep, paste_masks_fast

__all__ = [
    "NMS_TYPES", "check_nms_type", "fast_nms", "cross_class_fast_nms", "standard_nms", "detect",
    "detections_to_instances",
]

NMS_TYPES = ("fast", "cross_class", "standard")  # MODEL.YOLACT.NMS_TYPE: the variants below


def check_nms_type(nms_type: str) -> None:
    """``MODEL.YOLACT.NMS_TYPE`` names one of :data:`NMS_TYPES`; checked once, when the model is built."""
    if nms_type not in NMS_TYPES:
        raise ConfigError(
            f"MODEL.YOLACT.NMS_TYPE {nms_type!r}", "not an NMS variant of YOLACT",
            fix="use 'fast', 'cross_class' or 'standard'",
        )


def _top_candidates(scores: torch.Tensor, top_k: int):
    """The ``top_k`` highest scores along the last dim and their indices, best first. The original
    sorts all scores then slices; ``torch.topk`` selects the same entries (up to the order of
    exactly equal scores) without sorting all of them."""
    return scores.topk(min(top_k, scores.shape[-1]), dim=-1, sorted=True)


def _max_iou_with_higher_scored(cand_boxes: torch.Tensor) -> torch.Tensor:
    """For score-sorted boxes (..., n, 4): max IoU of each box with any box before it."""
    return box_iou(cand_boxes, cand_boxes).triu_(diagonal=1).amax(dim=-2)


def _fast_nms_best_first(boxes, scores, coefficients, iou_threshold: float, top_k: int, max_detections: int):
    """Fast NMS computed on the ``4 * max_detections`` best (class, anchor) scores only, or None
    when fewer than ``max_detections`` of them survive (the caller then runs the full version).

    Exact: whether a candidate survives depends only on the higher-scored candidates of its class,
    and those are among the best scores overall too; every score left out is lower than every one
    taken. For the same reason a score's rank within its class (for ``top_k``) is its rank among
    the selected scores of its class. So if ``max_detections`` of the selected candidates survive,
    they are the result: one top-k over the rows of the best anchors replaces the per-class top-k
    over all anchors, and one M x M IoU matrix masked to same-class pairs (160 k entries) replaces
    the per-class ones (C x top_k x top_k, 3.2 M entries for COCO).

    Args: boxes (P, 4), scores (C, P), coefficients (P, k).
    """
    num_classes, num_anchors = scores.shape
    num_best = 4 * max_detections
    if num_classes * num_anchors <= num_best:
        return None
    by_anchor = scores.t()  # (P, C); a view of the softmax output in Yolact, so rows are contiguous
    # The best scores all belong to the anchors whose best class score is at least the
    # num_best-th largest best class score (each of those anchors has a score that high), so the
    # top-k over P x C scores is one over those anchors' rows only (ties included).
    anchor_best = by_anchor.amax(dim=1)
    if num_anchors > num_best:
        threshold = anchor_best.topk(num_best, sorted=False)[0].min()
        rows = torch.nonzero(anchor_best >= threshold).flatten()
    else:
        rows = torch.arange(num_anchors, device=scores.device)
    best, flat = by_anchor[rows].reshape(-1).topk(num_best, sorted=True)
    anchors, classes = rows[flat // num_classes], flat % num_classes
    position = torch.arange(num_best, device=scores.device)
    # pairs (a, b): same class, a before b in score order
    before = (classes[:, None] == classes[None, :]) & (position[:, None] < position[None, :])
    is_candidate = before.sum(dim=0) < top_k  # rank within the class
    cand_boxes = boxes[anchors]
    iou = box_iou(cand_boxes, cand_boxes).masked_fill_(~(before & is_candidate[:, None]), 0)
    keep = torch.nonzero((iou.amax(dim=0) <= iou_threshold) & is_candidate).flatten()
    if len(keep) < max_detections:
        return None
    keep = keep[:max_detections]  # already in decreasing score order
    return cand_boxes[keep], best[keep], classes[keep], coefficients[anchors[keep]]


def fast_nms(boxes, scores, coefficients, iou_threshold: float, top_k: int, max_detections: int):
    """Per-class Fast NMS (as the original evaluates): for every class keep its ``top_k`` highest-scored candidates and
    drop a box if its IoU with *any* higher-scored box of the same class, suppressed or not,
    exceeds ``iou_threshold``; then keep the ``max_detections`` best over all classes. No score
    threshold is applied after NMS (the original's ``second_threshold=False``).

    Candidates are selected with ``torch.topk`` instead of the original's full sort, after a first
    attempt on the best candidates only (:func:`_fast_nms_best_first`); same result.

    Args:
        boxes (P, 4), scores (C, P) per-class scores, coefficients (P, k).
    Returns:
        boxes (N, 4), scores (N,), classes (N,), coefficients (N, k), sorted by score.
    """
    out = _fast_nms_best_first(boxes, scores, coefficients, iou_threshold, top_k, max_detections)
    if out is not None:
        return out
    num_classes = scores.shape[0]
    scores, idx = _top_candidates(scores, top_k)
    cand_boxes = boxes[idx.reshape(-1)].reshape(num_classes, -1, 4)
    keep = _max_iou_with_higher_scored(cand_boxes) <= iou_threshold
    classes = torch.arange(num_classes, device=boxes.device)[:, None].expand_as(keep)[keep]
    anchors, boxes, scores = idx[keep], cand_boxes[keep], scores[keep]
    scores, order = scores.sort(dim=0, descending=True)
    order, scores = order[:max_detections], scores[:max_detections]
    # coefficients of the final detections only
    return boxes[order], scores, classes[order], coefficients[anchors[order]]


def cross_class_fast_nms(boxes, scores, coefficients, iou_threshold: float, top_k: int, max_detections: int):
    """Class-agnostic Fast NMS: every anchor keeps only its best class (the original's
    ``--cross_class_nms``). The original applies no final cap; we apply ``max_detections`` so that
    ``TEST.DETECTIONS_PER_IMAGE`` holds for every NMS type."""
    scores, classes = scores.max(dim=0)
    idx = _top_candidates(scores, top_k)[1]
    idx = idx[_max_iou_with_higher_scored(boxes[idx]) <= iou_threshold][:max_detections]
    return boxes[idx], scores[idx], classes[idx], coefficients[idx]


def standard_nms(
    boxes, scores, coefficients, iou_threshold: float, top_k: int, max_detections: int, score_threshold: float,
    image_size: Tuple[int, int],
):
    """Per-class greedy NMS (the original's ``--fast_nms=False``): per-class score threshold,
    greedy NMS on pixel boxes, at most ``top_k`` per class, then the ``max_detections`` best."""
    class_idx, anchor_idx = torch.nonzero(scores > score_threshold, as_tuple=True)
    cand_scores = scores[class_idx, anchor_idx]
    scale = boxes.new_tensor([image_size[1], image_size[0], image_size[1], image_size[0]])
    keep = batched_nms(boxes[anchor_idx] * scale, cand_scores, class_idx, iou_threshold)  # by score
    # rank of each kept box within its class, to apply the per-class top_k
    kept_classes = class_idx[keep]
    same_class_before = (kept_classes[None, :] == kept_classes[:, None]).tril(diagonal=-1).sum(dim=1)
    keep = keep[same_class_before < top_k][:max_detections]
    return boxes[anchor_idx[keep]], cand_scores[keep], class_idx[keep], coefficients[anchor_idx[keep]]


def detect(
    class_probs: torch.Tensor,
    boxes: torch.Tensor,
    coefficients: torch.Tensor,
    *,
    score_threshold: float,
    nms_type: str,
    iou_threshold: float,
    top_k: int,
    max_detections: int,
    image_size: Tuple[int, int],
) -> Dict[str, torch.Tensor]:
    """Detections of one image.

    Args:
        class_probs: (P, K+1) softmax probabilities, index 0 background.
        boxes: (P, 4) decoded relative point-form boxes; coefficients: (P, k).
    Returns:
        dict with relative ``boxes`` (N, 4), ``scores`` (N,), ``classes`` (N,) in [0, K) and
        ``coefficients`` (N, k), sorted by decreasing score.
    """
    foreground = class_probs[:, 1:]  # (P, K)
    keep = foreground.amax(dim=1) > score_threshold  # on each anchor's best foreground score
    if not bool(keep.all()):  # indexing with an all-True mask would only copy
        foreground, boxes, coefficients = foreground[keep], boxes[keep], coefficients[keep]
    scores = foreground.t()  # (K, P)
    if boxes.shape[0] == 0:
        out = (boxes, scores.new_zeros(0), torch.zeros(0, dtype=torch.int64, device=boxes.device), coefficients)
    elif nms_type == "fast":
        out = fast_nms(boxes, scores, coefficients, iou_threshold, top_k, max_detections)
    elif nms_type == "cross_class":
        out = cross_class_fast_nms(boxes, scores, coefficients, iou_threshold, top_k, max_detections)
    elif nms_type == "standard":
        out = standard_nms(
            boxes, scores, coefficients, iou_threshold, top_k, max_detections, score_threshold, image_size
        )
    else:  # the model checked its NMS_TYPE when built; a direct call with another name is no silent fallback
        check_nms_type(nms_type)
    return dict(zip(("boxes", "scores", "classes", "coefficients"), out))


def detections_to_instances(
    detections: Dict[str, torch.Tensor],
    prototypes: torch.Tensor,
    image_size: Tuple[int, int],
    padded_size: Tuple[int, int],
    output_size: Tuple[int, int],
    mask_threshold: float = 0.5,
    truncate_boxes: bool = True,
    maskiou_net: Optional[nn.Module] = None,
) -> Instances:
    """Boxes and full-image binary masks at ``output_size``, as the original's postprocess.

    Masks are ``sigmoid(P C^T)`` cropped by the predicted box at prototype resolution with one
    pixel of padding, then upsampled bilinearly *straight* to the output size and thresholded
    (strict ``>``). The network input may have been padded (``image_size`` inside
    ``padded_size``): the mask is then upsampled to the padded canvas at the output scale and the
    image region cut out, which reduces to the original's single resize when there is no padding.
    Only the part of each upsampled mask that can be non-zero is computed
    (:func:`~yolact_d2.modeling.mask_ops.paste_masks_fast`); the masks are those of upsampling every
    mask to the whole canvas as the original does (tests/test_fast_inference.py).

    Args:
        prototypes: (k, H', W') of this image.
        image_size: (h, w) of the resized image inside the network input.
        padded_size: (H, W) of the network input (relative coordinates refer to it).
        output_size: (height, width) requested, usually the original image size.
        truncate_boxes: truncate box coordinates to integers as the original does.
        maskiou_net: YOLACT++ mask re-scoring net. When given, it predicts the IoU of every
            cropped soft mask at prototype resolution, gathered at the predicted class, and the
            result gets ``mask_scores = scores * predicted IoU``, used for mask AP; ``scores`` stays
            the class score, used for box AP (the original's ``rescore_mask=True, rescore_bbox=False``).
    """
    out_h, out_w = output_size
    img_h, img_w = image_size
    pad_h, pad_w = padded_size
    boxes = detections["boxes"]
    # relative-to-padded -> relative-to-image; factors are exactly 1 without padding
    rel = boxes * boxes.new_tensor([pad_w / img_w, pad_h / img_h, pad_w / img_w, pad_h / img_h])
    x1, x2 = rel[:, 0] * out_w, rel[:, 2] * out_w
    y1, y2 = rel[:, 1] * out_h, rel[:, 3] * out_h
    # sort each pair; clamp x1/y1 from below and x2/y2 from above (the original's sanitize)
    x1, x2 = torch.min(x1, x2).clamp(min=0), torch.max(x1, x2).clamp(max=out_w)
    y1, y2 = torch.min(y1, y2).clamp(min=0), torch.max(y1, y2).clamp(max=out_h)
    pixel_boxes = torch.stack([x1, y1, x2, y2], dim=1)
    if truncate_boxes:
        pixel_boxes = pixel_boxes.trunc()

    masks = assemble_masks(prototypes, detections["coefficients"])
    keep_rows, keep_cols = crop_keep(boxes, masks.shape[1], masks.shape[2], dtype=masks.dtype)
    masks = masks * (keep_rows[:, :, None] & keep_cols[:, None, :]).to(masks.dtype)  # crop_masks
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
    masks = paste_masks_fast(masks, keep_rows, keep_cols, canvas, (out_h, out_w), mask_threshold)

    result = Instances((out_h, out_w))
    result.pred_boxes = Boxes(pixel_boxes)
    result.scores = detections["scores"]
    result.pred_classes = detections["classes"]
    result.pred_masks = masks
    if mask_scores is not None:
        result.mask_scores = mask_scores
    return result
