"""Helpers of :class:`~yolact_d2.data.dataset_mapper.YolactDatasetMapper`, in the role of
Detectron2's ``detection_utils``: reading images, the training annotations of an image,
transforming them and building the model's ``Instances`` without degenerate boxes
(docs/MODEL.md, docs/RELIABILITY.md).

They differ from Detectron2's where YOLACT or reliability needs it: every unusable image raises
:class:`BadImageError` naming the file, 16-bit images are rescaled instead of clipped, crowd
annotations are kept (YOLACT matches against crowd boxes) and RLE masks can become polygons.
"""
import logging
import os
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image

from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, BoxMode, Instances, PolygonMasks
from detectron2.utils.file_io import PathManager

from ..modeling.box_ops import MIN_BOX_SIDE
from ..utils.detectron2_internals import apply_exif_orientation
from ..utils.errors import DataError
from ..utils.file_checks import unreadable_file_cause
from .annotation_checks import (
    AnnotationError,
    annotations_checked_for,
    box_of_checked_annotation,
    check_annotation,
    format_annotation,
)

__all__ = [
    "BadImageError",
    "read_image_file",
    "check_image_size",
    "image_size_of_file",
    "shrink_image",
    "check_training_annotations",
    "annotation_boxes_xyxy",
    "transform_annotation",
    "degenerate_box_side",
    "annotations_to_yolact_instances",
]

logger = logging.getLogger(__name__)

# Pillow modes of 16-bit (or wider integer) single-channel images. ``Image.convert("RGB")``
# clips them to 255 instead of rescaling, so read_image_file rescales them itself.
_WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


# The fix of an image that cannot be read (training adds DATALOADER.SKIP_BAD_IMAGES to it).
_CHECK_THE_FILE = "replace the file, or remove the image from the dataset"


class BadImageError(DataError):
    """An image file that cannot be used: missing, empty, truncated, not an image, an
    unsupported pixel format, or a size that differs from the dataset's ``height``/``width``.
    The message always names the file. A known user error (one line at the command line); still a
    ``ValueError`` as before."""


def _pil_to_array(image: Image.Image, image_format: str) -> np.ndarray:
    if image.mode in _WIDE_INTEGER_MODES:
        # 16-bit grayscale (PNG / TIFF): scale 0..65535 to 0..255 (Pillow's own conversion clips).
        wide = np.asarray(image).astype(np.float64)
        eight_bit = np.clip(np.round(wide * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        image = Image.fromarray(eight_bit, mode="L")
    elif image.mode == "F":
        raise ValueError("floating-point (mode 'F') images are not supported; save it as 8-bit")
    return utils.convert_PIL_to_numpy(image, image_format)


def read_image_file(file_name: str, image_format: str) -> np.ndarray:
    """Read an image like Detectron2's ``read_image`` (Pillow, EXIF orientation applied, HWC uint8
    in ``image_format``), with two differences:

    * 16-bit grayscale images are rescaled to 8 bits (``read_image`` clips them to 255);
    * every failure (missing or empty file, truncated data, not an image, unsupported format, an
      image too large for Pillow's decompression-bomb limit) raises :class:`BadImageError` naming
      the file and the cause.
    """
    cause = unreadable_file_cause(file_name)  # a FIFO would block here forever
    if cause == "does not exist":
        raise BadImageError(f"Image file {file_name}", "not found", fix=_CHECK_THE_FILE)
    if cause is not None:
        raise BadImageError(f"Cannot read image {file_name}", f"it {cause}", fix=_CHECK_THE_FILE)
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image = apply_exif_orientation(image)
            array = _pil_to_array(image, image_format)
    except FileNotFoundError:
        raise BadImageError(f"Image file {file_name}", "not found", fix=_CHECK_THE_FILE) from None
    except Exception as e:  # noqa: BLE001 (Pillow raises OSError, SyntaxError, ValueError, ...)
        if isinstance(e, OSError) and "truncated" in str(e).lower():
            cause = f"the file is truncated ({e})"
        elif isinstance(e, Image.UnidentifiedImageError):
            size = _file_size(file_name)
            cause = "the file is empty (0 bytes)" if size == 0 else "not an image format Pillow can read"
        else:
            cause = f"{type(e).__name__}: {e}"
        raise BadImageError(f"Cannot read image {file_name}", cause, fix=_CHECK_THE_FILE) from e
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise BadImageError(
            f"Cannot read image {file_name}", f"decoded to an array of shape {array.shape}", fix=_CHECK_THE_FILE
        )
    return array


def _file_size(file_name: str) -> Optional[int]:
    try:
        return os.path.getsize(file_name)
    except OSError:
        return None


def _exif_orientation(file_name: str) -> Optional[int]:
    """The EXIF orientation tag (1..8) of an image file, or None."""
    if unreadable_file_cause(file_name) is not None:
        return None
    try:
        with PathManager.open(file_name, "rb") as f:
            return Image.open(f).getexif().get(0x0112, None)
    except Exception:  # noqa: BLE001
        return None


def image_size_of_file(file_name: str) -> Tuple[int, int]:
    """``(height, width)`` of an image file as :func:`read_image_file` reads it (EXIF rotation
    applied), from its header only; :class:`BadImageError` naming the file when it cannot be read."""
    cause = unreadable_file_cause(file_name)
    if cause is not None:
        raise BadImageError(f"Cannot read image {file_name}", f"it {cause}", fix=_CHECK_THE_FILE)
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            width, height = image.size
            orientation = image.getexif().get(0x0112, None)
    except Exception as e:  # noqa: BLE001 (Pillow raises OSError, SyntaxError, ValueError, ...)
        raise BadImageError(f"Cannot read image {file_name}", f"{type(e).__name__}: {e}", fix=_CHECK_THE_FILE) from e
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def check_image_size(dataset_dict: dict, image: np.ndarray) -> None:
    """Like Detectron2's ``check_image_size`` (fills in missing ``height``/``width``), but a
    mismatch raises :class:`BadImageError` naming the file, both sizes and, when the image has an
    EXIF rotation that explains the difference, that rotation."""
    h, w = image.shape[:2]
    expected_h = dataset_dict.get("height", h)
    expected_w = dataset_dict.get("width", w)
    if (expected_h, expected_w) != (h, w):
        file_name = dataset_dict.get("file_name", "<no file_name>")
        cause = f"is {w}x{h} (w x h) but the dataset says width {expected_w}, height {expected_h}"
        fix = "fix the width/height (and the annotations) of this image in the dataset"
        orientation = _exif_orientation(file_name) if "file_name" in dataset_dict else None
        if orientation in (5, 6, 7, 8) and (expected_h, expected_w) == (w, h):
            cause += (
                f". The file has EXIF orientation {orientation} (a 90-degree rotation), which is "
                "applied when reading (as Detectron2 does): the json has the size before rotation"
            )
            fix = (
                "check which orientation the annotations were drawn in, then fix the json's "
                "width/height (and the annotations) or remove the EXIF tag"
            )
        raise BadImageError(f"Image {file_name} (image_id {dataset_dict.get('image_id')})", cause, fix=fix)
    dataset_dict["height"], dataset_dict["width"] = h, w


def shrink_image(image: np.ndarray, max_size: int) -> Tuple[np.ndarray, T.ResizeTransform]:
    """Downscale ``image`` so that its longer side is ``max_size`` (area interpolation); returns the
    image and the resize transform for its annotations."""
    h, w = image.shape[:2]
    scale = max_size / float(max(h, w))
    new_h, new_w = max(int(round(h * scale)), 1), max(int(round(w * scale)), 1)
    small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return small, T.ResizeTransform(h, w, new_h, new_w)


def _check_category(category, num_classes: Optional[int], where: str) -> None:
    if num_classes is not None and (
        isinstance(category, bool)
        or not isinstance(category, (int, np.integer))
        or not 0 <= int(category) < num_classes
    ):
        raise AnnotationError(
            f"{where}: category_id {category!r} is not a class index in [0, "
            f"{num_classes}) (MODEL.YOLACT.NUM_CLASSES {num_classes}). Dataset "
            "dicts need contiguous category ids (COCO jsons registered with "
            "DATASETS.COCO_INSTANCES are mapped automatically)."
        )


def check_training_annotations(
    annos: List[dict],
    dataset_dict: dict,
    image_hw: Tuple[int, int],
    *,
    num_classes: Optional[int],
    box_source: str,
    warn_once: Callable[[tuple, str], None],
) -> List[dict]:
    """The annotations to train on, boxes as XYXY_ABS (``box_source`` "json": their own, "mask": the
    extent of their mask).

    Annotations the loader checked for an image of this size
    (:func:`~.annotation_checks.annotations_checked_for`) are not checked again; those of another
    loader (Detectron2's, datasets registered in code) go through
    :func:`~.annotation_checks.check_annotation` here. Every dict's categories are compared with
    ``num_classes``, which no loader knows. Every fix or drop goes through ``warn_once(key,
    message)``, the message naming the file, the image id and the annotation id."""
    file_name = dataset_dict.get("file_name", "<no file_name>")
    image_id = dataset_dict.get("image_id", None)
    height, width = image_hw
    checked_at_load = annotations_checked_for(dataset_dict, image_hw)
    kept = []
    for index, anno in enumerate(annos):
        ann_id = anno.get("id", None)
        where = format_annotation(f"Image {file_name}", image_id, ann_id, index)
        key = (file_name, ann_id if ann_id is not None else index)
        _check_category(anno.get("category_id", None), num_classes, where)
        if checked_at_load:
            result = box_of_checked_annotation(anno, height, width, box_source=box_source)
        else:
            if "bbox" not in anno or "bbox_mode" not in anno:
                raise AnnotationError(f"{where}: needs 'bbox' and 'bbox_mode' (Detectron2 dataset format)")
            result = check_annotation(anno, height, width, bbox_mode=anno["bbox_mode"], box_source=box_source)
        for note in result.notes:
            warn_once(key + (note,), f"{where}: {note}")
        if not result.kept:
            warn_once(key, f"{where}: {result.dropped}: annotation dropped")
            continue
        if result.clipped is not None:
            warn_once(key + ("clip",), f"{where}: {result.clipped}")
        kept.append(dict(anno, bbox=result.box, bbox_mode=BoxMode.XYXY_ABS, segmentation=result.segmentation))
    return kept


def annotation_boxes_xyxy(annos: Sequence[dict]) -> np.ndarray:
    """The annotations' boxes as an Nx4 float64 XYXY_ABS array (the input of the augmentations)."""
    return np.array(
        [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos], dtype=np.float64
    ).reshape(-1, 4)


def _trace_outer_contours(mask: np.ndarray) -> List[np.ndarray]:
    """Outer contours of a binary mask as flat polygons (pixel indices + 0.5, i.e. through the
    centres of the boundary pixels).

    Used only when ``instance_mask_format == "polygon"`` meets an RLE/array mask (typically a
    COCO crowd annotation, which the stock mapper drops and YOLACT keeps; YOLACT only uses crowd
    *boxes*). Lossy: holes are filled and the outline runs through boundary-pixel centres (about
    half a pixel inside the mask). Tiny blobs (< 3 contour points) become the rectangle around
    their pixels.
    """
    mask = np.ascontiguousarray(mask).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        pts = contour.reshape(-1, 2).astype(np.float64)
        if len(pts) >= 3:
            pts = pts + 0.5
        else:
            x0, y0 = pts.min(axis=0)
            x1, y1 = pts.max(axis=0) + 1.0
            pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        polygons.append(pts.reshape(-1))
    return polygons


def transform_annotation(anno: dict, transforms: T.TransformList, image_shape, mask_format: str) -> dict:
    """Detectron2's ``transform_instance_annotations``, plus uncompressed RLE, HxW ndarray masks
    and, for ``mask_format == "polygon"``, masks traced to polygons (:func:`_trace_outer_contours`)."""
    anno.pop("keypoints", None)
    segm = anno.get("segmentation", None)
    if isinstance(segm, dict) and isinstance(segm.get("counts", None), list):
        segm = mask_util.frPyObjects(segm, *segm["size"])  # uncompressed -> compressed RLE
        anno["segmentation"] = segm
    if mask_format == "polygon" and isinstance(segm, (dict, np.ndarray)):
        # Polygons are needed: trace the mask at the input resolution, then transform the
        # polygons like any other (lossy, see _trace_outer_contours).
        mask = mask_util.decode(segm) if isinstance(segm, dict) else segm
        anno["segmentation"] = _trace_outer_contours(mask)
    elif isinstance(segm, np.ndarray):  # not handled by transform_instance_annotations
        del anno["segmentation"]
        anno = utils.transform_instance_annotations(anno, transforms, image_shape)
        anno["segmentation"] = transforms.apply_segmentation(segm)
        return anno
    return utils.transform_instance_annotations(anno, transforms, image_shape)


def degenerate_box_side(image_size: int) -> float:
    """Training boxes with a width or height of at most this many pixels are dropped after the
    augmentation (:func:`annotations_to_yolact_instances`): the original's
    :data:`~yolact_d2.modeling.box_ops.MIN_BOX_SIDE` (4/550 px at every input size), and for inputs
    smaller than 550 px ``4 / image_size``, the same fraction of their own side."""
    return max(4.0 / image_size, MIN_BOX_SIDE)


def annotations_to_yolact_instances(
    annos: List[dict], image_shape: Tuple[int, int], mask_format: str, min_box_side: Optional[float]
) -> Instances:
    """Detectron2's ``annotations_to_instances`` plus ``gt_is_crowd``, without the boxes whose width
    or height is ``<= min_box_side`` (:func:`degenerate_box_side`; None keeps all), and with empty
    ``gt_masks`` of the configured type when nothing is left, so the model's fields stay uniform."""
    instances = utils.annotations_to_instances(annos, image_shape, mask_format=mask_format)
    instances.gt_is_crowd = torch.tensor([bool(a.get("iscrowd", 0)) for a in annos], dtype=torch.bool)
    if min_box_side is not None and len(instances) > 0:
        b = instances.gt_boxes.tensor
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        instances = instances[(w > min_box_side) & (h > min_box_side)]
    if len(instances) == 0 and not instances.has("gt_masks"):
        if mask_format == "polygon":
            instances.gt_masks = PolygonMasks([])
        else:
            instances.gt_masks = BitMasks(torch.zeros((0,) + tuple(image_shape), dtype=torch.bool))
    return instances
