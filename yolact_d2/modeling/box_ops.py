"""Box coding and overlaps of YOLACT, in relative coordinates (docs/MODEL.md).

SSD coding with variances (0.1, 0.2): the same as Detectron2's ``Box2BoxTransform((10, 10, 5, 5))``
except that YOLACT never clamps dw/dh and never clips decoded boxes, which the released weights
rely on; hence these few functions instead of ``Box2BoxTransform``.
"""
from typing import Sequence

import torch

__all__ = ["point_form", "center_size", "encode", "decode", "box_iou", "box_ioa", "MIN_BOX_SIDE"]

# Ground truth with a side of at most this many pixels is not trained on: the original's
# discard_box_width/height of 4/550, a fraction of the image compared with pixel boxes, so only
# degenerate boxes go. They could not be encoded (the coding takes the log of the sides).
MIN_BOX_SIDE = 4.0 / 550


def point_form(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], dim=-1)


def center_size(boxes: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) -> (cx, cy, w, h)."""
    return torch.cat([(boxes[..., 2:] + boxes[..., :2]) / 2, boxes[..., 2:] - boxes[..., :2]], dim=-1)


def encode(matched: torch.Tensor, anchors: torch.Tensor, variances: Sequence[float]) -> torch.Tensor:
    """Regression targets of point-form ground truth ``matched`` w.r.t. center-size ``anchors``."""
    g_cxcy = ((matched[:, :2] + matched[:, 2:]) / 2 - anchors[:, :2]) / (variances[0] * anchors[:, 2:])
    g_wh = torch.log((matched[:, 2:] - matched[:, :2]) / anchors[:, 2:]) / variances[1]
    return torch.cat([g_cxcy, g_wh], dim=1)


def decode(deltas: torch.Tensor, anchors: torch.Tensor, variances: Sequence[float]) -> torch.Tensor:
    """Point-form boxes from regression ``deltas`` (..., 4) and center-size ``anchors`` (..., 4).
    No clamp on the exponent and no clipping, as in the original."""
    centers = anchors[..., :2] + deltas[..., :2] * variances[0] * anchors[..., 2:]
    sizes = anchors[..., 2:] * torch.exp(deltas[..., 2:] * variances[1])
    top_left = centers - sizes / 2
    return torch.cat([top_left, top_left + sizes], dim=-1)


def _intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection areas of point-form boxes a (..., N, 4) and b (..., M, 4).
    Computed per coordinate (no (..., N, M, 2) intermediates); the same float operations as
    max/min of the corner pairs, so the values are identical."""
    # contiguous coordinate vectors: broadcasting them is vectorised, strided views are not
    ax1, ay1, ax2, ay2 = (a[..., i].contiguous()[..., :, None] for i in range(4))
    bx1, by1, bx2, by2 = (b[..., i].contiguous()[..., None, :] for i in range(4))
    w = (torch.min(ax2, bx2) - torch.max(ax1, bx1)).clamp_(min=0)
    h = (torch.min(ay2, by2) - torch.max(ay1, by1)).clamp_(min=0)
    return w.mul_(h)


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of point-form boxes, batched over leading dims: (..., N, 4), (..., M, 4) -> (..., N, M).
    Areas without the +1 convention, as the original computes them."""
    inter = _intersection(a, b)
    return inter / (_area(a)[..., :, None] + _area(b)[..., None, :] - inter)


def box_ioa(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over the area of ``a`` (anchors vs crowd boxes: an anchor mostly inside a crowd
    is no negative)."""
    return _intersection(a, b) / _area(a)[..., :, None]
