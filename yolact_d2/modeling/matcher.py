"""Anchor-to-ground-truth matching of YOLACT.

Differs from Detectron2's ``Matcher`` in the forced matching: the original greedily gives every
ground-truth box its best still-free anchor, highest overlap first, and marks those anchors with
overlap 2 so that no threshold can undo it; and in the crowd rule (non-positive anchors covered
> 0.7 by a crowd box become neutral).
"""
from typing import NamedTuple, Sequence

import torch

from .box_ops import box_ioa, box_iou, encode, point_form

__all__ = ["MatchResult", "match_anchors"]


class MatchResult(NamedTuple):
    labels: torch.Tensor  # (P,) int64: -1 neutral, 0 background, c + 1 for foreground class c
    matched_idx: torch.Tensor  # (P,) int64: index of the matched ground truth (meaningful where labels > 0)
    box_targets: torch.Tensor  # (P, 4): encoded regression targets (meaningful where labels > 0)


def match_anchors(
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    crowd_boxes: torch.Tensor,
    anchors: torch.Tensor,
    positive_threshold: float,
    negative_threshold: float,
    crowd_threshold: float,
    variances: Sequence[float],
) -> MatchResult:
    """
    Args:
        gt_boxes: (N, 4) relative point-form non-crowd boxes; gt_classes: (N,) in [0, K).
        crowd_boxes: (M, 4) relative point-form crowd boxes (M may be 0).
        anchors: (P, 4) relative center-size anchors.
    """
    num_anchors = anchors.shape[0]
    anchor_boxes = point_form(anchors)
    if gt_boxes.shape[0] == 0:
        labels = torch.zeros(num_anchors, dtype=torch.int64, device=anchors.device)
        matched_idx = torch.zeros_like(labels)
        box_targets = torch.zeros_like(anchors)
    else:
        overlaps = box_iou(gt_boxes, anchor_boxes)  # (N, P)
        best_overlap, matched_idx = overlaps.max(dim=0)
        # Forced matching: N greedy rounds over the global maximum (2019.08.04 behaviour).
        for _ in range(gt_boxes.shape[0]):
            best_per_gt, best_anchor_per_gt = overlaps.max(dim=1)
            j = best_per_gt.max(dim=0)[1]
            i = best_anchor_per_gt[j]
            overlaps[:, i] = -1
            overlaps[j, :] = -1
            best_overlap[i] = 2
            matched_idx[i] = j
        labels = gt_classes[matched_idx] + 1
        labels[best_overlap < positive_threshold] = -1
        labels[best_overlap < negative_threshold] = 0
        box_targets = encode(gt_boxes[matched_idx], anchors, variances)
    if crowd_boxes.shape[0] > 0 and crowd_threshold < 1:
        crowd_cover = box_ioa(anchor_boxes, crowd_boxes).max(dim=1)[0]
        labels[(labels <= 0) & (crowd_cover > crowd_threshold)] = -1
    return MatchResult(labels, matched_idx, box_targets)
