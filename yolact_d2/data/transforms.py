"""YOLACT's SSD-style input pipeline as Detectron2 ``Augmentation``/``Transform`` classes.

See docs/MODEL.md §7.1 (test-time resize) and §7.2 (training augmentation). The original
works on float32 images in 0..255 and never clips after the photometric changes. Every transform
in this module therefore converts its image input to float32 (``uint8`` input is accepted) and
returns float32 without clipping or rounding; segmentation masks keep their dtype.

Training pipeline (see :func:`yolact_d2.data.dataset_mapper.build_yolact_train_augmentation`)::

    RandomPhotometricDistort -> RandomExpand -> RandomSSDCrop -> RandomFlip -> SquashResize

Random numbers come from numpy's global RNG (``np.random``), like every Detectron2 augmentation,
so ``np.random.seed`` makes the pipeline reproducible.

Instance filtering
------------------
The SSD crop drops ground truth whose box centre is not strictly inside the crop. Detectron2's
``AugInput`` has no notion of dropped instances, so this module defines :class:`YolactAugInput`
(an ``AugInput`` carrying ``boxes``, ``is_crowd`` and ``instance_indices``). A transform that
drops instances exposes ``instance_keep_mask(boxes) -> bool[N]`` (evaluated on the boxes *before*
the transform); ``YolactAugInput.transform`` applies it to ``boxes``, ``is_crowd`` and
``instance_indices`` (indices into the original annotation list), so the dataset mapper knows
exactly which annotations survived and nothing else is lost.
"""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
from fvcore.transforms.transform import (
    CropTransform,
    NoOpTransform,
    Transform,
    TransformList,
)

from detectron2.data.transforms import AugInput, Augmentation

__all__ = [
    "YolactAugInput",
    "PhotometricDistortTransform",
    "RandomPhotometricDistort",
    "shift_hue",
    "ExpandTransform",
    "RandomExpand",
    "SSDCropTransform",
    "RandomSSDCrop",
    "SSD_CROP_MODES",
    "CV2ResizeTransform",
    "SquashResize",
    "ResizeLongestSide",
    "keep_aspect_output_shape",
]


def _to_float32(img: np.ndarray) -> np.ndarray:
    """A float32 copy-or-view of ``img`` (uint8 or float input), values untouched."""
    return np.asarray(img).astype(np.float32, copy=False)


def _check_color_image(img: np.ndarray, who: str) -> None:
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{who} expects an HxWx3 colour image, got shape {tuple(img.shape)}.")


# --------------------------------------------------------------------------------------------
# AugInput carrying crowd flags and the surviving-instance indices
# --------------------------------------------------------------------------------------------
class YolactAugInput(AugInput):
    """``AugInput`` with the extra attributes YOLACT's augmentations need.

    Attributes:
        image (ndarray): HxWxC image (uint8, or float32 once a YOLACT transform ran).
        boxes (ndarray or None): Nx4 float XYXY_ABS boxes of the current (transformed) image.
        is_crowd (ndarray): bool[N], the COCO ``iscrowd`` flag of each box.
        instance_indices (ndarray): int64[N], for each current box its index in the boxes given
            to the constructor (i.e. in the annotation list of the dataset dict).
        sem_seg: as in ``AugInput``.

    Transforms that define ``instance_keep_mask(boxes)`` (e.g. :class:`SSDCropTransform`) remove
    the instances they drop from ``boxes``, ``is_crowd`` and ``instance_indices`` before the
    geometry is applied.
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        boxes: Optional[np.ndarray] = None,
        is_crowd: Optional[np.ndarray] = None,
        sem_seg: Optional[np.ndarray] = None,
    ):
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        super().__init__(image, boxes=boxes, sem_seg=sem_seg)
        n = 0 if boxes is None else len(boxes)
        if is_crowd is None:
            is_crowd = np.zeros(n, dtype=bool)
        is_crowd = np.asarray(is_crowd, dtype=bool).reshape(-1)
        if len(is_crowd) != n:
            raise ValueError(f"is_crowd has {len(is_crowd)} entries for {n} boxes.")
        self.is_crowd = is_crowd
        self.instance_indices = np.arange(n, dtype=np.int64)

    def transform(self, tfm: Transform) -> None:
        tfms = tfm.transforms if isinstance(tfm, TransformList) else [tfm]
        for t in tfms:
            keep_fn = getattr(t, "instance_keep_mask", None)
            if keep_fn is not None and self.boxes is not None:
                keep = np.asarray(keep_fn(self.boxes), dtype=bool)
                self.boxes = self.boxes[keep]
                self.is_crowd = self.is_crowd[keep]
                self.instance_indices = self.instance_indices[keep]
            self.image = t.apply_image(self.image)
            if self.boxes is not None:
                self.boxes = t.apply_box(self.boxes)
            if self.sem_seg is not None:
                self.sem_seg = t.apply_segmentation(self.sem_seg)


# --------------------------------------------------------------------------------------------
# 1. Photometric distortion
# --------------------------------------------------------------------------------------------
_HSV_CODES = {
    "BGR": (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR),
    "RGB": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB),
}


def shift_hue(hue: np.ndarray, delta: float) -> np.ndarray:
    """``hue + delta`` (float32, OpenCV degrees) wrapped like the original ``RandomHue``:
    values ``> 360`` lose 360, values ``< 0`` gain 360 (so 360 itself stays 360; for |delta| <= 360
    and hue in [0, 360] the result is in [0, 360])."""
    out = np.asarray(hue, dtype=np.float32) + np.float32(delta)
    out[out > 360.0] -= 360.0
    out[out < 0.0] += 360.0
    return out


class PhotometricDistortTransform(Transform):
    """The original ``PhotometricDistort`` with fixed parameters; geometry is untouched.

    Applied in this order on a float32 copy of the image (no clipping anywhere)::

        img += brightness_delta                          (if not None)
        img *= contrast_alpha                            (if not None and contrast_first)
        -> HSV (OpenCV float: H degrees 0..360, S 0..1, V 0..255)
        S *= saturation_factor                           (if not None)
        H += hue_delta; H > 360 -> H - 360; H < 0 -> H + 360   (if not None)
        -> back to the image's channel order
        img *= contrast_alpha                            (if not None and not contrast_first)

    The HSV round trip is always done, as in the original (it is not bit-exact, ~1e-5 relative).
    Hue wrapping follows the original exactly (strict ``> 360`` / ``< 0``, so the result lies in
    [0, 360]; OpenCV treats H = 360 like H = 0).

    Args:
        image_format: "BGR" or "RGB", the channel order of the images this transform gets.
    """

    def __init__(
        self,
        brightness_delta: Optional[float] = None,
        contrast_alpha: Optional[float] = None,
        contrast_first: bool = True,
        saturation_factor: Optional[float] = None,
        hue_delta: Optional[float] = None,
        image_format: str = "BGR",
    ):
        super().__init__()
        if image_format not in _HSV_CODES:
            raise ValueError(
                f"PhotometricDistortTransform supports image_format 'BGR' or 'RGB', "
                f"got {image_format!r}."
            )
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        _check_color_image(img, "PhotometricDistortTransform")
        img = np.array(img, dtype=np.float32, copy=True)
        to_hsv, from_hsv = _HSV_CODES[self.image_format]
        if self.brightness_delta is not None:
            img += np.float32(self.brightness_delta)
        if self.contrast_first and self.contrast_alpha is not None:
            img *= np.float32(self.contrast_alpha)
        hsv = cv2.cvtColor(img, to_hsv)
        if self.saturation_factor is not None:
            hsv[:, :, 1] *= np.float32(self.saturation_factor)
        if self.hue_delta is not None:
            hsv[:, :, 0] = shift_hue(hsv[:, :, 0], self.hue_delta)
        img = cv2.cvtColor(hsv, from_hsv)
        if not self.contrast_first and self.contrast_alpha is not None:
            img *= np.float32(self.contrast_alpha)
        return img

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        return NoOpTransform()


class RandomPhotometricDistort(Augmentation):
    """Draws the parameters of :class:`PhotometricDistortTransform` like the original.

    Brightness (p=``prob``, add U(-brightness_delta, brightness_delta)); then with p=0.5 the
    "contrast first" branch ``[contrast, ->HSV, saturation, hue, ->RGB/BGR]``, else
    ``[->HSV, saturation, hue, ->RGB/BGR, contrast]``; contrast (p=``prob``, x U(*contrast_range)),
    saturation (p=``prob``, S x U(*saturation_range)), hue (p=``prob``,
    H += U(-hue_delta, hue_delta)).
    Random numbers are drawn in the original's order (brightness, branch, then the branch's ops).
    """

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: Tuple[float, float] = (0.5, 1.5),
        saturation_range: Tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18.0,
        prob: float = 0.5,
        image_format: str = "BGR",
    ):
        super().__init__()
        if image_format not in _HSV_CODES:
            raise ValueError(
                f"RandomPhotometricDistort supports image_format 'BGR' or 'RGB', "
                f"got {image_format!r}."
            )
        self._init(locals())

    def _maybe(self, low: float, high: float) -> Optional[float]:
        if np.random.rand() < self.prob:
            return float(np.random.uniform(low, high))
        return None

    def get_transform(self, image) -> Transform:
        brightness = self._maybe(-self.brightness_delta, self.brightness_delta)
        contrast_first = bool(np.random.rand() < 0.5)
        contrast = self._maybe(*self.contrast_range) if contrast_first else None
        saturation = self._maybe(*self.saturation_range)
        hue = self._maybe(-self.hue_delta, self.hue_delta)
        if not contrast_first:
            contrast = self._maybe(*self.contrast_range)
        return PhotometricDistortTransform(
            brightness_delta=brightness,
            contrast_alpha=contrast,
            contrast_first=contrast_first,
            saturation_factor=saturation,
            hue_delta=hue,
            image_format=self.image_format,
        )


# --------------------------------------------------------------------------------------------
# 2. Expand (zoom out onto a mean-filled canvas)
# --------------------------------------------------------------------------------------------
class ExpandTransform(Transform):
    """Place the image on a ``canvas_h x canvas_w`` canvas filled with ``fill`` at (left, top).

    The image becomes float32 (so a non-integer mean is stored exactly); segmentation masks are
    zero-padded and keep their dtype; coordinates are shifted by (left, top).

    Args:
        left, top (int): position of the image's top-left pixel on the canvas.
        canvas_w, canvas_h (int): canvas size; must hold the image at (left, top).
        fill (sequence of float or float): per-channel fill value, in the image's channel order.
        orig_w, orig_h (int, optional): the input size, only needed for :meth:`inverse`.
    """

    def __init__(
        self,
        left: int,
        top: int,
        canvas_w: int,
        canvas_h: int,
        fill,
        orig_w: Optional[int] = None,
        orig_h: Optional[int] = None,
    ):
        super().__init__()
        self._set_attributes(locals())

    def _place(self, img: np.ndarray, canvas: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        if self.top + h > self.canvas_h or self.left + w > self.canvas_w:
            raise ValueError(
                f"ExpandTransform: a {w}x{h} image at ({self.left}, {self.top}) does not fit "
                f"a {self.canvas_w}x{self.canvas_h} canvas."
            )
        canvas[self.top : self.top + h, self.left : self.left + w] = img
        return canvas

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        img = _to_float32(img)
        canvas = np.empty((self.canvas_h, self.canvas_w) + img.shape[2:], dtype=np.float32)
        canvas[...] = np.asarray(self.fill, dtype=np.float32)
        return self._place(img, canvas)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        canvas = np.zeros(
            (self.canvas_h, self.canvas_w) + segmentation.shape[2:], dtype=segmentation.dtype
        )
        return self._place(segmentation, canvas)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64 if coords.dtype.kind != "f" else coords.dtype)
        coords[:, 0] += self.left
        coords[:, 1] += self.top
        return coords

    def inverse(self) -> Transform:
        if self.orig_w is None or self.orig_h is None:
            raise ValueError("ExpandTransform.inverse needs orig_w and orig_h.")
        return CropTransform(
            self.left, self.top, self.orig_w, self.orig_h, orig_w=self.canvas_w,
            orig_h=self.canvas_h,
        )


class RandomExpand(Augmentation):
    """The original ``Expand``: with probability ``prob``, ratio r ~ U(1, max_ratio), canvas
    ``int(H*r) x int(W*r)`` filled with ``mean``, image at ``(int(left), int(top))`` with
    left ~ U(0, W*r - W), top ~ U(0, H*r - H).

    Args:
        mean: per-channel fill value in the image's channel order (cfg.MODEL.PIXEL_MEAN is given
            in cfg.INPUT.FORMAT order, which is the mapper's image order).
    """

    def __init__(self, mean: Sequence[float], prob: float = 0.5, max_ratio: float = 4.0):
        super().__init__()
        mean = tuple(float(m) for m in mean)
        self._init(locals())

    def get_transform(self, image) -> Transform:
        if not np.random.rand() < self.prob:
            return NoOpTransform()
        if image.ndim == 3 and image.shape[2] != len(self.mean):
            raise ValueError(
                f"RandomExpand: mean has {len(self.mean)} values for a {image.shape[2]}-channel "
                "image."
            )
        h, w = image.shape[:2]
        ratio = np.random.uniform(1.0, self.max_ratio)
        left = np.random.uniform(0.0, w * ratio - w)
        top = np.random.uniform(0.0, h * ratio - h)
        return ExpandTransform(
            int(left), int(top), int(w * ratio), int(h * ratio), fill=self.mean, orig_w=w,
            orig_h=h,
        )


# --------------------------------------------------------------------------------------------
# 3. SSD random sample crop
# --------------------------------------------------------------------------------------------
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
        return super().apply_image(_to_float32(img))

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
        min_scale: float = 0.3,
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


# --------------------------------------------------------------------------------------------
# 5. Resize with cv2 on float32
# --------------------------------------------------------------------------------------------
class CV2ResizeTransform(Transform):
    """Resize an ``h x w`` image to ``new_h x new_w`` with ``cv2.resize`` on float32.

    Matches the original's ``cv2.resize(img, (new_w, new_h))`` (INTER_LINEAR by default) on its
    float32 image; the output is float32, not clipped or rounded. Coordinates are scaled by
    (new_w / w, new_h / h).

    Segmentation (``apply_segmentation``), according to ``mask_interp``:

    * ``"linear"`` (default, for binary instance masks): bilinear resize of the 0/1 mask as
      float32, then ``> 0.5``, returned in the input dtype. The original resizes its float masks
      with cv2 bilinear and binarises with ``> 0.5`` later in the loss.
    * ``"nearest"``: nearest-neighbour (label maps).
    """

    def __init__(
        self,
        h: int,
        w: int,
        new_h: int,
        new_w: int,
        interp: int = cv2.INTER_LINEAR,
        mask_interp: str = "linear",
    ):
        super().__init__()
        if mask_interp not in ("linear", "nearest"):
            raise ValueError(f"mask_interp must be 'linear' or 'nearest', got {mask_interp!r}.")
        self._set_attributes(locals())

    def _check_size(self, img: np.ndarray) -> None:
        if tuple(img.shape[:2]) != (self.h, self.w):
            raise ValueError(
                f"CV2ResizeTransform expects a {self.h}x{self.w} input, got "
                f"{img.shape[0]}x{img.shape[1]}."
            )

    def _resize(self, img: np.ndarray, interp: int) -> np.ndarray:
        out = cv2.resize(np.ascontiguousarray(img), (self.new_w, self.new_h), interpolation=interp)
        if img.ndim == 3 and out.ndim == 2:  # cv2 drops a trailing channel axis of size 1
            out = out[:, :, None]
        return out

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        self._check_size(img)
        return self._resize(_to_float32(img), self.interp)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        self._check_size(segmentation)
        dtype = segmentation.dtype
        if self.mask_interp == "linear":
            out = self._resize(segmentation.astype(np.float32), cv2.INTER_LINEAR) > 0.5
            return out.astype(dtype)
        if dtype.kind == "b":  # numpy bool
            return self._resize(segmentation.astype(np.uint8), cv2.INTER_NEAREST).astype(bool)
        return self._resize(segmentation, cv2.INTER_NEAREST)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64 if coords.dtype.kind != "f" else coords.dtype)
        coords[:, 0] *= self.new_w / self.w
        coords[:, 1] *= self.new_h / self.h
        return coords

    def inverse(self) -> Transform:
        return CV2ResizeTransform(
            self.new_h, self.new_w, self.h, self.w, interp=self.interp, mask_interp=self.mask_interp
        )


class SquashResize(Augmentation):
    """Resize to ``size x size`` ignoring the aspect ratio (YOLACT's training and default
    test-time resize, docs/MODEL.md §7.1/§7.2), with :class:`CV2ResizeTransform`."""

    def __init__(self, size: int, interp: int = cv2.INTER_LINEAR, mask_interp: str = "linear"):
        super().__init__()
        self._init(locals())

    def get_transform(self, image) -> Transform:
        h, w = image.shape[:2]
        return CV2ResizeTransform(h, w, self.size, self.size, self.interp, self.mask_interp)


def keep_aspect_output_shape(h: int, w: int, size: int) -> Tuple[int, int]:
    """(new_h, new_w) with the longer side equal to ``size`` and the aspect ratio kept; the
    shorter side is rounded to the nearest integer (at least 1)."""
    scale = size / max(h, w)
    new_h = size if h >= w else max(1, int(h * scale + 0.5))
    new_w = size if w >= h else max(1, int(w * scale + 0.5))
    return new_h, new_w


class ResizeLongestSide(Augmentation):
    """Resize so the longer side equals ``size``, aspect ratio kept, no padding (the
    ``keep_aspect`` test-time mode), with :class:`CV2ResizeTransform`."""

    def __init__(self, size: int, interp: int = cv2.INTER_LINEAR, mask_interp: str = "linear"):
        super().__init__()
        self._init(locals())

    def get_transform(self, image) -> Transform:
        h, w = image.shape[:2]
        new_h, new_w = keep_aspect_output_shape(h, w, self.size)
        return CV2ResizeTransform(h, w, new_h, new_w, self.interp, self.mask_interp)
