"""The original ``RandomSampleCrop`` (SSD random sample crop), with polygon
clipping and the centre-inside rule that decides which instances survive the crop."""
from typing import Tuple

import numpy as np
from fvcore.transforms.transform import CropTransform, NoOpTransform, Transform

from detectron2.data.transforms import Augmentation

from .base import to_float32

__all__ = ["SSDCropTransform", "RandomSSDCrop", "SSD_CROP_MODES", "MIN_CROP_SCALE"]

# Smallest fraction of each image side that a crop keeps (the original's 0.3); the dataset mapper
# derives its downscaling limit for very large images from it.
MIN_CROP_SCALE = 0.3


def _clip_polygon_to_halfplane(pts: np.ndarray, axis: int, bound: float, keep_above: bool):
    """One Sutherland-Hodgman pass: keep the part of polygon ``pts`` (Nx2) with
    ``pts[:, axis] >= bound`` (keep_above) or ``<= bound``."""
    if len(pts) == 0:
        return pts
    nxt = np.roll(pts, -1, axis=0)
    if keep_above:
        cur_in, nxt_in = pts[:, axis] >= bound, nxt[:, axis] >= bound
    else:
        cur_in, nxt_in = pts[:, axis] <= bound, nxt[:, axis] <= bound
    crossing = cur_in != nxt_in
    delta = nxt[:, axis] - pts[:, axis]
    t = np.zeros(len(pts))
    np.divide(bound - pts[:, axis], delta, out=t, where=crossing)
    inter = pts + t[:, None] * (nxt - pts)
    inter[:, axis] = bound
    # For every edge cur->nxt emit [intersection if it crosses the boundary, nxt if nxt inside].
    candidates = np.stack([inter, nxt], axis=1)
    emit = np.stack([crossing, nxt_in], axis=1)
    return candidates[emit]


def _clip_polygon_to_rect(pts: np.ndarray, x0: float, y0: float, x1: float, y1: float):
    """Intersection of a simple polygon (Nx2) with the rectangle [x0, x1] x [y0, y1].

    Returns an Mx2 array, or None when the intersection has no area. For a concave polygon cut
    into several pieces the result is one polygon joined by zero-width edges along the rectangle
    border, which rasterises to the same pixels.
    """
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    for axis, bound, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        pts = _clip_polygon_to_halfplane(pts, axis, bound, keep_above)
    if len(pts) >= 2:  # drop consecutive duplicates (vertices lying on the border)
        keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
        pts = pts[keep]
    if len(pts) < 3:
        return None
    x, y = pts[:, 0], pts[:, 1]
    area2 = np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))
    if abs(area2) <= 1e-12:
        return None
    return pts


class SSDCropTransform(CropTransform):
    """Crop ``img[y0:y0+h, x0:x0+w]`` the way the original ``RandomSampleCrop`` does.

    Compared to fvcore's ``CropTransform``:

    * ``apply_box`` clips the (shifted) boxes to the crop, as the original does;
    * ``apply_polygons`` clips polygons to the crop without shapely (Sutherland-Hodgman);
      polygons with no area inside are dropped (an instance may end up with no polygon, i.e. an
      empty mask - it is kept, because the crop keeps instances by their box centre);
    * ``instance_keep_mask(boxes)`` tells which instances survive: those whose box centre is
      strictly inside the crop (evaluated on the boxes before cropping). :class:`YolactAugInput`
      uses it; the dataset mapper then transforms only the kept annotations.
    * the image is returned as float32 (view of the input when it already is float32).
    """

    def instance_keep_mask(self, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
        cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
        return (
            (self.x0 < cx) & (self.y0 < cy) & (cx < self.x0 + self.w) & (cy < self.y0 + self.h)
        )

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return super().apply_image(to_float32(img))

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return super().apply_image(segmentation)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64 if coords.dtype.kind != "f" else coords.dtype)
        coords[:, 0] -= self.x0
        coords[:, 1] -= self.y0
        return coords

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        box = np.array(box, dtype=np.float64).reshape(-1, 4)
        box[:, 0::2] = np.clip(box[:, 0::2], self.x0, self.x0 + self.w) - self.x0
        box[:, 1::2] = np.clip(box[:, 1::2], self.y0, self.y0 + self.h) - self.y0
        return box

    def apply_polygons(self, polygons: list) -> list:
        x1, y1 = self.x0 + self.w, self.y0 + self.h
        out = []
        for poly in polygons:
            clipped = _clip_polygon_to_rect(poly, self.x0, self.y0, x1, y1)
            if clipped is not None:
                out.append(self.apply_coords(clipped))
        return out


# (min_iou, max_iou) per mode; None = the whole image (no crop). No 0.5 mode, as the original.
SSD_CROP_MODES = (
    None,
    (0.1, None),
    (0.3, None),
    (0.7, None),
    (0.9, None),
    (None, None),
)


def _iou_with_rect(boxes: np.ndarray, rect: np.ndarray) -> np.ndarray:
    lt = np.maximum(boxes[:, :2], rect[:2])
    rb = np.minimum(boxes[:, 2:], rect[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area_b = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    area_r = np.prod(rect[2:] - rect[:2])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_b + area_r - inter)


class RandomSSDCrop(Augmentation):
    """The original ``RandomSampleCrop`` (SSD random sample crop, YOLACT variant).

    Loop: draw a mode uniformly from ``modes``; ``None`` -> no crop (:class:`NoOpTransform`).
    Otherwise up to ``max_trials`` trials: w ~ U(min_scale*W, W), h ~ U(min_scale*H, H); reject
    if h/w is outside ``aspect_range``; draw left/top; rect = ``int(left), int(top),
    int(left+w), int(top+h)``; keep the GT whose box centre is strictly inside rect and accept
    when at least one kept GT is not a crowd. When all trials fail a new mode is drawn (the outer
    loop is unbounded, as in the original; it ends because the ``None`` mode always succeeds).

    Faithfulness notes:

    * IoU modes do not constrain anything: the original rejects a trial only if
      ``iou.min() < min_iou and max_iou < iou.max()``, and max_iou is always +inf. The same
      test is evaluated here (so custom modes with a finite max_iou behave like the original).
    * left/top: the original calls numpy's ``uniform(W - w)`` (a single argument, i.e.
      ``low=W-w, high=1.0``), so left is uniform between 1 and W-w (between W-w and 1 when
      W-w < 1), not U(0, W-w). This is reproduced: the crop statistics are the original's.
    * If the input holds no non-crowd box, no crop can ever be accepted, so the original can
      only leave through the ``None`` mode: that case returns the identity directly (without
      consuming random numbers).

    ``get_transform`` reads ``image``, ``boxes`` (XYXY_ABS) and ``is_crowd`` (optional: a plain
    ``AugInput`` works, all boxes are then non-crowd). The returned :class:`SSDCropTransform`
    carries the centre-inside rule (``instance_keep_mask``) for :class:`YolactAugInput`.
    """

    def __init__(
        self,
        modes=SSD_CROP_MODES,
        max_trials: int = 50,
        min_scale: float = MIN_CROP_SCALE,
        aspect_range: Tuple[float, float] = (0.5, 2.0),
    ):
        super().__init__()
        modes = tuple(modes)
        self._init(locals())

    def __call__(self, aug_input) -> Transform:
        tfm = self.get_transform(
            aug_input.image, getattr(aug_input, "boxes", None), getattr(aug_input, "is_crowd", None)
        )
        aug_input.transform(tfm)
        return tfm

    @staticmethod
    def _offset(room: float) -> float:
        return float(np.random.uniform(room))  # numpy: low=room, high=1.0 (see docstring)

    def get_transform(self, image, boxes=None, is_crowd=None) -> Transform:
        if boxes is None:
            boxes = np.zeros((0, 4))
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if is_crowd is None:
            is_crowd = np.zeros(len(boxes), dtype=bool)
        is_crowd = np.asarray(is_crowd, dtype=bool).reshape(-1)
        if not np.any(~is_crowd):
            return NoOpTransform()

        height, width = image.shape[:2]
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2.0
        while True:
            mode = self.modes[np.random.randint(len(self.modes))]
            if mode is None:
                return NoOpTransform()
            min_iou = -np.inf if mode[0] is None else mode[0]
            max_iou = np.inf if mode[1] is None else mode[1]
            for _ in range(self.max_trials):
                w = np.random.uniform(self.min_scale * width, width)
                h = np.random.uniform(self.min_scale * height, height)
                if h / w < self.aspect_range[0] or h / w > self.aspect_range[1]:
                    continue
                left = self._offset(width - w)
                top = self._offset(height - h)
                rect = np.array([int(left), int(top), int(left + w), int(top + h)])
                iou = _iou_with_rect(boxes, rect.astype(np.float64))
                # The original's (never true with max_iou = inf) overlap test.
                if iou.min() < min_iou and max_iou < iou.max():
                    continue
                inside = (
                    (rect[0] < centers[:, 0])
                    & (rect[1] < centers[:, 1])
                    & (rect[2] > centers[:, 0])
                    & (rect[3] > centers[:, 1])
                )
                if not np.any(inside & ~is_crowd):
                    continue
                return SSDCropTransform(
                    int(rect[0]), int(rect[1]), int(rect[2] - rect[0]), int(rect[3] - rect[1]),
                    orig_w=width, orig_h=height,
                )
