"""The rules for instance annotations, applied once to each annotation by :func:`check_annotation`:
when a json of ``DATASETS.COCO_INSTANCES`` is loaded, or, for dataset dicts of another loader
(Detectron2's COCO loader, the synthetic splits, datasets registered in code), when the training
mapper first sees them (docs/RELIABILITY.md).

Every problem is either fixed or causes the annotation (or one polygon of it) to be dropped; the
caller logs each decision with the image and the annotation id. The rules:

* box (absolute XYXY here) that is not 4 finite numbers, or with zero or negative width or
  height: the annotation is dropped;
* box partly outside the image: clipped to the image (more than ``BOX_CLIP_TOLERANCE`` pixels
  outside: with a warning; less: rounding, clipped without one). Entirely outside: dropped;
* polygon with an odd number of coordinates, fewer than 3 points or non-finite values: that
  polygon is dropped; an annotation left without any polygon is dropped;
* segmentation missing or empty, or an RLE / binary mask whose size differs from the image, or an
  RLE that cannot be decoded: the annotation is dropped (YOLACT needs a mask for every instance).

The functions never raise on malformed data; they return what to keep and why.
"""
from dataclasses import dataclass
from numbers import Real
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util

from detectron2.structures import BoxMode

__all__ = [
    "BOX_CLIP_TOLERANCE",
    "BOX_MASK_IOU_THRESHOLD",
    "CHECKED_FOR_SIZE_KEY",
    "AnnotationError",
    "CheckedAnnotation",
    "check_annotation",
    "box_of_checked_annotation",
    "annotations_checked_for",
    "format_annotation",
    "mask_extent_xyxy",
    "box_iou_xyxy",
]

# Boxes extending less than this many pixels past the image are clipped silently (float
# rounding in the json, e.g. x + w = 640.01 for a 640-wide image).
BOX_CLIP_TOLERANCE = 1.0

# A json bbox whose IoU with the extent of its own mask is below this is reported (docs/RELIABILITY.md).
BOX_MASK_IOU_THRESHOLD = 0.5

# Key of a dataset dict whose annotations were checked when loaded: the (height, width) they were
# checked for. The training mapper does not check them again on an image of that size.
CHECKED_FOR_SIZE_KEY = "yolact_annotations_checked_for"


class AnnotationError(ValueError):
    """An annotation problem that cannot be fixed or skipped (e.g. an unknown category)."""


@dataclass(frozen=True)
class CheckedAnnotation:
    """What the rules made of one annotation.

    ``box`` (absolute XYXY, clipped to the image) and ``segmentation`` (cleaned: bad polygons
    removed, an uncompressed RLE compressed) are what to keep, or both None and ``dropped`` says why
    the annotation goes. ``clipped`` describes a box clipped by more than ``BOX_CLIP_TOLERANCE``;
    ``notes`` the polygons dropped or fixed (also when the annotation is dropped)."""

    box: Optional[List[float]]
    segmentation: Any = None
    dropped: Optional[str] = None
    clipped: Optional[str] = None
    notes: Tuple[str, ...] = ()

    @property
    def kept(self) -> bool:
        return self.dropped is None


def format_annotation(where: str, image_id: Any, annotation_id: Any, index: int) -> str:
    """``"<where> image_id <id>, annotation <id>"`` (the list index when there is no id)."""
    ann = f"annotation id {annotation_id}" if annotation_id is not None else f"annotation #{index}"
    return f"{where} (image_id {image_id}), {ann}"


def _finite_numbers(values: Any) -> Optional[List[float]]:
    """The values as floats if they are a flat sequence of finite real numbers, else None."""
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, (list, tuple, np.ndarray)):
        return None
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 1 or not np.isfinite(arr).all():
        return None
    return arr.tolist()


def _check_box_xyxy(
    box: Any, height: Optional[int], width: Optional[int]
) -> Tuple[Optional[List[float]], Optional[str], Optional[str]]:
    """``(box or None, clipped note, drop reason)`` of an absolute XYXY box for an image of
    ``height`` x ``width`` (None: unknown, no clipping)."""
    values = _finite_numbers(box)
    if values is None or len(values) != 4:
        return None, None, f"bbox {box!r} is not 4 finite numbers"
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        return None, None, (
            f"bbox has zero or negative size (width {x1 - x0:g}, height {y1 - y0:g})"
        )
    if height is None or width is None:
        return values, None, None
    cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    if cx1 <= cx0 or cy1 <= cy0:
        return None, None, (
            f"bbox [{x0:g}, {y0:g}, {x1:g}, {y1:g}] (XYXY) is entirely outside the "
            f"{width}x{height} image"
        )
    clipped = [cx0, cy0, cx1, cy1]
    shift = max(abs(a - b) for a, b in zip(values, clipped))
    note = None
    if shift > BOX_CLIP_TOLERANCE:
        note = (
            f"bbox [{x0:g}, {y0:g}, {x1:g}, {y1:g}] (XYXY) extends {shift:g} px outside the "
            f"{width}x{height} image: clipped to [{cx0:g}, {cy0:g}, {cx1:g}, {cy1:g}]"
        )
    return clipped, note, None


def _check_polygons(segm: Sequence) -> Tuple[List[List[float]], List[str]]:
    kept, notes = [], []
    if len(segm) and all(isinstance(v, Real) for v in segm):
        # A flat list of numbers instead of a list of polygons: read it as one polygon.
        notes.append("segmentation is a flat list of numbers, read as one polygon")
        segm = [segm]
    for i, poly in enumerate(segm):
        values = _finite_numbers(poly)
        if values is None:
            notes.append(f"polygon {i} is not a list of finite numbers: dropped this polygon")
        elif len(values) % 2:
            notes.append(f"polygon {i} has an odd number of coordinates ({len(values)}): dropped this polygon")
        elif len(values) < 6:
            notes.append(f"polygon {i} has {len(values) // 2} point(s), fewer than 3: dropped this polygon")
        else:
            kept.append(values)
    return kept, notes


def _rle_size(segm: dict) -> Optional[Tuple[int, int]]:
    size = _finite_numbers(segm.get("size", None))
    if size is None or len(size) != 2:
        return None
    return int(size[0]), int(size[1])


def _check_segmentation(
    segm: Any, height: Optional[int], width: Optional[int]
) -> Tuple[Any, List[str], Optional[str]]:
    """``(cleaned segmentation or None, notes, drop reason)`` of one annotation's segmentation for an
    image of ``height`` x ``width``: polygons (list of flat coordinate lists), COCO RLE (compressed,
    or uncompressed with a list of ``counts``, which is compressed) or an H x W binary ndarray."""
    if segm is None:
        return None, [], "has no segmentation (YOLACT needs a mask for every instance)"
    if isinstance(segm, np.ndarray) and segm.ndim == 2:
        if height is not None and tuple(segm.shape) != (height, width):
            return None, [], (
                f"binary mask is {segm.shape[1]}x{segm.shape[0]} but the image is {width}x{height}"
            )
        return segm, [], None
    if isinstance(segm, dict):
        size = _rle_size(segm)
        if size is None or "counts" not in segm:
            return None, [], "RLE segmentation without a valid 'size' [h, w] and 'counts'"
        if height is not None and size != (height, width):
            return None, [], (
                f"RLE mask size is {size[1]}x{size[0]} (w x h) but the image is {width}x{height}"
            )
        try:
            if isinstance(segm["counts"], list):
                counts = _finite_numbers(segm["counts"])
                if counts is None or any(c < 0 for c in counts) or sum(counts) != size[0] * size[1]:
                    raise ValueError("counts do not add up to h * w")
                segm = mask_util.frPyObjects({"size": list(size), "counts": segm["counts"]}, *size)
            else:
                mask_util.decode(segm)  # raises on counts that do not match the size
        except Exception as e:  # noqa: BLE001 (pycocotools raises several types)
            return None, [], f"RLE segmentation cannot be decoded ({type(e).__name__}: {e})"
        return segm, [], None
    if isinstance(segm, (list, tuple)):
        if len(segm) == 0:
            return None, [], "has an empty segmentation (YOLACT needs a mask for every instance)"
        polygons, notes = _check_polygons(segm)
        if not polygons:
            return None, notes, "no valid polygon left in its segmentation"
        return polygons, notes, None
    return None, [], f"segmentation of type {type(segm).__name__} is not polygons, RLE or a mask"


def _as_xyxy(bbox: Any, bbox_mode) -> Any:
    """``bbox`` as absolute XYXY; as given when it is not 4 numbers in a mode Detectron2 converts
    (the box rule then says what is wrong with it)."""
    try:
        if isinstance(bbox, (str, bytes, dict)) or len(bbox) != 4:
            return bbox
        return BoxMode.convert(list(bbox), bbox_mode, BoxMode.XYXY_ABS)
    except Exception:  # noqa: BLE001 (no length, non-numbers, relative modes: reported by the box rule)
        return bbox


def _box_of_mask(segm: Any, height: Optional[int], width: Optional[int], notes=()) -> CheckedAnnotation:
    """``INPUT.GT_BOX_SOURCE 'mask'``: the box is the extent of the (checked) segmentation,
    clipped to the image; an empty mask drops the annotation."""
    extent = mask_extent_xyxy(segm)
    if extent is None:
        return CheckedAnnotation(None, dropped="its mask is empty (INPUT.GT_BOX_SOURCE 'mask')", notes=tuple(notes))
    box, clipped, drop = _check_box_xyxy(extent, height, width)
    if drop is not None:
        return CheckedAnnotation(None, dropped=drop, notes=tuple(notes))
    return CheckedAnnotation(box, segm, clipped=clipped, notes=tuple(notes))


def check_annotation(
    anno: dict, height: Optional[int], width: Optional[int], *, bbox_mode, box_source: str = "json"
) -> CheckedAnnotation:
    """The rules of this module applied to one annotation (``bbox`` in ``bbox_mode``,
    ``segmentation``) of an image of ``height`` x ``width`` (None: unknown, then boxes are not
    clipped and mask sizes not compared).

    ``box_source`` "json" keeps the annotation's own box, checked first; "mask"
    (``INPUT.GT_BOX_SOURCE``) uses the extent of its mask instead, and the ``bbox`` is not looked at.
    """
    if box_source == "mask":
        segm, notes, drop = _check_segmentation(anno.get("segmentation", None), height, width)
        if drop is not None:
            return CheckedAnnotation(None, dropped=drop, notes=tuple(notes))
        return _box_of_mask(segm, height, width, notes)
    box, clipped, drop = _check_box_xyxy(_as_xyxy(anno.get("bbox", None), bbox_mode), height, width)
    if drop is not None:
        return CheckedAnnotation(None, dropped=drop)
    segm, notes, drop = _check_segmentation(anno.get("segmentation", None), height, width)
    if drop is not None:
        return CheckedAnnotation(None, dropped=drop, notes=tuple(notes))
    return CheckedAnnotation(box, segm, clipped=clipped, notes=tuple(notes))


def box_of_checked_annotation(anno: dict, height: int, width: int, *, box_source: str = "json") -> CheckedAnnotation:
    """The training box of an annotation that :func:`check_annotation` kept for this image size, without
    running the rules again: the stored box as absolute XYXY, clipped to the image (the XYXY -> XYWH
    -> XYXY round trip of a box on the border can land a rounding step outside), or with
    ``box_source`` "mask" the extent of its mask, which a json box check could not see."""
    if box_source == "mask":
        return _box_of_mask(anno["segmentation"], height, width)
    x0, y0, x1, y1 = BoxMode.convert(list(anno["bbox"]), anno["bbox_mode"], BoxMode.XYXY_ABS)
    clip = lambda v, limit: min(max(float(v), 0.0), limit)  # noqa: E731 (the box rule's clipping)
    return CheckedAnnotation([clip(x0, width), clip(y0, height), clip(x1, width), clip(y1, height)],
                             anno["segmentation"])


def annotations_checked_for(dataset_dict: dict, image_hw: Tuple[int, int]) -> bool:
    """Whether the dict's annotations were checked when loaded for an image of this size
    (:data:`CHECKED_FOR_SIZE_KEY`)."""
    checked = dataset_dict.get(CHECKED_FOR_SIZE_KEY, None)
    return checked is not None and tuple(checked) == tuple(image_hw)


def mask_extent_xyxy(segm: Any) -> Optional[List[float]]:
    """The absolute XYXY box around a segmentation cleaned by :func:`check_annotation`
    (polygons, compressed RLE or a binary mask), as COCO computes ``bbox`` from it; None if empty."""
    if isinstance(segm, np.ndarray):
        ys, xs = np.nonzero(segm)
        if not len(xs):
            return None
        return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    if isinstance(segm, dict):
        x, y, w, h = (float(v) for v in mask_util.toBbox(segm))
        return None if w <= 0 or h <= 0 else [x, y, x + w, y + h]
    xs = [v for poly in segm for v in poly[0::2]]
    ys = [v for poly in segm for v in poly[1::2]]
    return [min(xs), min(ys), max(xs), max(ys)] if xs else None


def box_iou_xyxy(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two absolute XYXY boxes (0 when either is empty)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
