"""Dataset mapper reproducing YOLACT's input pipeline (docs/MODEL.md §7).

Differences from Detectron2's stock ``DatasetMapper``:

* the image handed to the model is **float32** (0..255, NOT clipped: the photometric distortion
  can push values below 0 or above 255, as in the original), CHW, in ``cfg.INPUT.FORMAT``;
* crowd annotations are **kept** and flagged in ``instances.gt_is_crowd`` (YOLACT uses crowd boxes
  in matching);
* instances are only ever dropped by two documented rules: the SSD crop's centre-inside rule and
  the original's degenerate-box rule after the resize (see :class:`YolactDatasetMapper`).
"""
import copy
import logging
import math
import os
from typing import List, Optional, Tuple, Union

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, BoxMode, PolygonMasks
from detectron2.utils.file_io import PathManager

from ..utils.errors import ConfigError
from .annotation_checks import AnnotationError, check_box_xyxy, check_segmentation, format_annotation, mask_extent_xyxy
from .transforms import (
    MIN_CROP_SCALE,
    YolactAugInput,
    build_yolact_test_augmentation,
    build_yolact_train_augmentation,
    input_image_size,
)

__all__ = [
    "BadImageError",
    "SKIPPED_IMAGES_KEY",
    "YolactDatasetMapper",
    "check_image_size",
    "read_image_file",
]

logger = logging.getLogger(__name__)

# Key of the list of image files the training mapper skipped (DATALOADER.SKIP_BAD_IMAGES) before
# producing this dict; the trainer pops it in the main process to count them.
SKIPPED_IMAGES_KEY = "yolact_skipped_images"

# Pillow modes of 16-bit (or wider integer) single-channel images. ``Image.convert("RGB")``
# clips them to 255 instead of rescaling, so read_image_file rescales them itself.
_WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class BadImageError(ValueError):
    """An image file that cannot be used: missing, empty, truncated, not an image, an
    unsupported pixel format, or a size that differs from the dataset's ``height``/``width``.
    The message always names the file."""


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
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image = utils._apply_exif_orientation(image)
            array = _pil_to_array(image, image_format)
    except FileNotFoundError:
        raise BadImageError(f"Image file not found: {file_name}") from None
    except Exception as e:  # noqa: BLE001 (Pillow raises OSError, SyntaxError, ValueError, ...)
        if isinstance(e, OSError) and "truncated" in str(e).lower():
            cause = f"the file is truncated ({e})"
        elif isinstance(e, Image.UnidentifiedImageError):
            size = _file_size(file_name)
            cause = "the file is empty (0 bytes)" if size == 0 else "not an image format Pillow can read"
        else:
            cause = f"{type(e).__name__}: {e}"
        raise BadImageError(f"Cannot read image {file_name}: {cause}") from e
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise BadImageError(f"Cannot read image {file_name}: decoded to an array of shape {array.shape}")
    return array


def _file_size(file_name: str) -> Optional[int]:
    try:
        return os.path.getsize(file_name)
    except OSError:
        return None


def _exif_orientation(file_name: str) -> Optional[int]:
    """The EXIF orientation tag (1..8) of an image file, or None."""
    try:
        with PathManager.open(file_name, "rb") as f:
            return Image.open(f).getexif().get(0x0112, None)
    except Exception:  # noqa: BLE001
        return None


def check_image_size(dataset_dict: dict, image: np.ndarray) -> None:
    """Like Detectron2's ``check_image_size`` (fills in missing ``height``/``width``), but a
    mismatch raises :class:`BadImageError` naming the file, both sizes and, when the image has an
    EXIF rotation that explains the difference, that rotation."""
    h, w = image.shape[:2]
    expected_h = dataset_dict.get("height", h)
    expected_w = dataset_dict.get("width", w)
    if (expected_h, expected_w) != (h, w):
        file_name = dataset_dict.get("file_name", "<no file_name>")
        message = (
            f"Image {file_name} (image_id {dataset_dict.get('image_id')}) is {w}x{h} (w x h) but "
            f"the dataset says width {expected_w}, height {expected_h}."
        )
        orientation = _exif_orientation(file_name) if "file_name" in dataset_dict else None
        if orientation in (5, 6, 7, 8) and (expected_h, expected_w) == (w, h):
            message += (
                f" The file has EXIF orientation {orientation} (a 90-degree rotation), which is "
                "applied when reading (as Detectron2 does): the json has the size before rotation. "
                "Check which orientation the annotations were drawn in, then fix the json's "
                "width/height (and the annotations) or remove the EXIF tag."
            )
        else:
            message += " Fix the width/height (and the annotations) of this image in the dataset."
        raise BadImageError(message)
    dataset_dict["height"], dataset_dict["width"] = h, w


def _mask_to_polygons(mask: np.ndarray) -> List[np.ndarray]:
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


class YolactDatasetMapper:
    """Map a Detectron2 dataset dict to YOLACT's model input.

    Output dict (a deep copy of the input, plus):

    * ``image``: float32 tensor CHW in ``image_format`` (values 0..255 but NOT clipped: training
      photometric changes can go below 0 / above 255, as in the original). The model normalises.
    * ``height``, ``width``: the original image size (from the dict, else from the image).
    * training only, ``instances`` with ``gt_boxes`` (Boxes, absolute XYXY in the augmented
      image), ``gt_classes`` (int64), ``gt_masks`` (``PolygonMasks`` for ``"polygon"``,
      ``BitMasks`` for ``"bitmask"``; RLE/array masks are supported in both, converted to
      polygons by contour tracing for ``"polygon"``) when annotations have ``segmentation``,
      and ``gt_is_crowd`` (bool). Crowd annotations are kept (YOLACT uses them in matching).
    * test mode: no ``instances``; ``annotations`` and ``sem_seg_file_name`` are removed.

    Instances are dropped only by these documented rules:

    1. the SSD crop keeps the instances whose box centre is strictly inside the crop (the crop
       transform tells :class:`YolactAugInput`, which records the surviving annotation indices);
    2. after augmentation, boxes with width or height ``<= degenerate_box_threshold`` pixels are
       removed with their masks. The original drops ``w <= 4/550 or h <= 4/550`` where the boxes
       are already absolute pixels of the 550 image (a unit bug: effectively only degenerate
       boxes go), so ``from_config`` uses ``4 / IMAGE_SIZE``. ``None`` disables the rule.

    Images left with no non-crowd instance: the original resamples another image. If the input
    had at least one non-crowd instance but none remains after augmentation (possible only
    through rule 2, since the crop always keeps a non-crowd instance), ``__call__`` returns
    ``None`` and Detectron2's training loader (``MapDataset``) draws another image; set
    ``resample_if_empty=False`` to return the empty image instead. An input that already has no
    non-crowd instance (no annotations, or crowds only) is returned as is (no crop is possible
    for it; the crowds are kept) and the model must handle images without positives.

    A training dict without an ``annotations`` key gets no ``instances`` (as Detectron2's
    mapper); ``annotations: []`` gives empty ``instances`` (with empty ``gt_masks`` of the
    configured type and an empty ``gt_is_crowd``).

    Keypoint annotations are ignored (removed). Per-annotation ``segmentation`` may be polygons,
    COCO RLE (compressed or uncompressed) or a HxW binary ndarray.

    Bad inputs (docs/RELIABILITY.md):

    * images are read with :func:`read_image_file`; an unreadable image or one whose size differs
      from the dict's ``height``/``width`` raises :class:`BadImageError` naming the file. In
      training with ``skip_bad_images=True`` (``DATALOADER.SKIP_BAD_IMAGES``) the image is
      skipped instead: a warning names it, ``__call__`` returns None (the loader draws another
      image) and ``(file name, message)`` is reported under :data:`SKIPPED_IMAGES_KEY` in the next
      dict returned, so that the trainer counts it. Inference never skips (it would change the metrics).
    * training annotations are checked before augmentation (:mod:`.annotation_checks`): boxes
      outside the image are clipped, invalid polygons removed, and annotations with an invalid
      box or no usable mask dropped, each with a warning (once per annotation) naming the file,
      the image id and the annotation id. A ``category_id`` outside ``[0, num_classes)`` raises
      :class:`~.annotation_checks.AnnotationError`. Annotations dropped this way count as removed
      for the resampling rule above.
    * with ``dataset_size`` set (the trainer does), if that many images in a row give None the
      mapper raises instead of letting ``MapDataset`` run out of images to try.
    * very large training images (longer side > ``max_input_size``) are downscaled before the
      augmentation. ``from_config`` sets ``ceil(IMAGE_SIZE / 0.3)``: the SSD crop keeps at least
      0.3 of each side, so every output pixel still comes from at least one input pixel, while
      the expand step (up to 4x per side) on e.g. a 6000x4000 photo would otherwise allocate
      gigabytes. COCO-sized images (640 px) are unaffected at 550.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[Union[T.Augmentation, T.Transform]],
        image_format: str,
        instance_mask_format: str = "polygon",
        degenerate_box_threshold: Optional[float] = None,
        resample_if_empty: bool = True,
        skip_bad_images: bool = False,
        num_classes: Optional[int] = None,
        max_input_size: Optional[int] = None,
        box_source: str = "json",
    ):
        """
        Args:
            is_train: training (annotations are transformed into ``instances``) or inference.
            augmentations: augmentations / transforms applied in order (see
                :func:`build_yolact_train_augmentation`, :func:`build_yolact_test_augmentation`).
            image_format: format for ``read_image`` ("RGB" or "BGR" for the photometric part).
            instance_mask_format: "polygon" or "bitmask".
            degenerate_box_threshold: drop boxes whose width or height is ``<=`` this (pixels of
                the augmented image); None disables.
            resample_if_empty: return None (loader resamples) when augmentation removed every
                non-crowd instance of an image that had some.
            skip_bad_images: training only: skip unreadable images (warning + count) instead of
                raising :class:`BadImageError`.
            num_classes: when set, training annotations must have ``0 <= category_id <
                num_classes``.
            max_input_size: training only: images whose longer side is larger are first
                downscaled to it (``from_config``: ``ceil(IMAGE_SIZE / 0.3)``, see the class
                docstring); None disables.
            box_source: training only: "json" uses each annotation's ``bbox`` (the original's
                behaviour); "mask" replaces it by the extent of the annotation's mask.
        """
        if instance_mask_format not in ("polygon", "bitmask"):
            raise ValueError(
                "instance_mask_format must be 'polygon' or 'bitmask', "
                f"got {instance_mask_format!r}."
            )
        if box_source not in ("json", "mask"):
            raise ConfigError(f"INPUT.GT_BOX_SOURCE {box_source!r}", "must be 'json' or 'mask'")
        self.box_source = box_source
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.instance_mask_format = instance_mask_format
        self.degenerate_box_threshold = degenerate_box_threshold
        self.resample_if_empty = resample_if_empty
        self.skip_bad_images = bool(skip_bad_images)
        self.num_classes = num_classes
        self.max_input_size = max_input_size
        # Number of images of the dataset; set by the trainer (see the class docstring).
        self.dataset_size: Optional[int] = None
        self.num_skipped = 0  # bad images skipped by this copy of the mapper (one per process)
        self._pending_skipped: List[str] = []
        self._consecutive_none = 0
        self._last_none_reason = ""
        self._warned = set()
        mode = "training" if is_train else "inference"
        logger.info(f"[YolactDatasetMapper] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        if is_train:
            augs = build_yolact_train_augmentation(cfg)
        else:
            augs = build_yolact_test_augmentation(cfg)
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "instance_mask_format": cfg.INPUT.MASK_FORMAT,
            "degenerate_box_threshold": 4.0 / input_image_size(cfg),
            "skip_bad_images": bool(cfg.DATALOADER.get("SKIP_BAD_IMAGES", False)),
            "num_classes": cfg.MODEL.YOLACT.NUM_CLASSES if "YOLACT" in cfg.MODEL else None,
            "max_input_size": int(math.ceil(input_image_size(cfg) / MIN_CROP_SCALE)) if is_train else None,
            "box_source": cfg.INPUT.get("GT_BOX_SOURCE", "json"),
        }

    # ------------------------------------------------------------------------------------------
    def _transform_annotation(self, anno, transforms, image_shape):
        anno.pop("keypoints", None)
        segm = anno.get("segmentation", None)
        if isinstance(segm, dict) and isinstance(segm.get("counts", None), list):
            segm = mask_util.frPyObjects(segm, *segm["size"])  # uncompressed -> compressed RLE
            anno["segmentation"] = segm
        if self.instance_mask_format == "polygon" and isinstance(segm, (dict, np.ndarray)):
            # Polygons are needed: trace the mask at the input resolution, then transform the
            # polygons like any other (lossy, see _mask_to_polygons).
            mask = mask_util.decode(segm) if isinstance(segm, dict) else segm
            anno["segmentation"] = _mask_to_polygons(mask)
        elif isinstance(segm, np.ndarray):  # not handled by transform_instance_annotations
            del anno["segmentation"]
            anno = utils.transform_instance_annotations(anno, transforms, image_shape)
            anno["segmentation"] = transforms.apply_segmentation(segm)
            return anno
        return utils.transform_instance_annotations(anno, transforms, image_shape)

    def _warn_once(self, key, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def _check_box_and_mask(self, anno: dict, height: int, width: int):
        """``(box, note, drop_reason, segmentation, notes)``; the box is the json bbox, or the
        mask extent with ``box_source == "mask"`` (then the json bbox is not checked)."""
        segm, notes = None, []
        if self.box_source == "mask":
            segm, notes, drop = check_segmentation(anno.get("segmentation", None), height, width)
            if drop is not None:
                return None, None, drop, None, notes
            extent = mask_extent_xyxy(segm)
            if extent is None:
                return None, None, "its mask is empty (INPUT.GT_BOX_SOURCE 'mask')", None, notes
            box, note, drop = check_box_xyxy(extent, height, width)
            return box, note, drop, segm, notes
        try:
            xyxy = BoxMode.convert(list(anno["bbox"]), anno["bbox_mode"], BoxMode.XYXY_ABS)
        except Exception:  # noqa: BLE001 (a malformed box: reported by check_box_xyxy)
            xyxy = anno["bbox"]
        box, note, drop = check_box_xyxy(xyxy, height, width)
        if drop is None:
            segm, notes, drop = check_segmentation(anno.get("segmentation", None), height, width)
        return box, note, drop, segm, notes

    def _check_annotations(self, annos: List[dict], dataset_dict: dict, image_hw: Tuple[int, int]) -> List[dict]:
        """The annotations to use, validated and fixed (see the class docstring)."""
        file_name = dataset_dict.get("file_name", "<no file_name>")
        image_id = dataset_dict.get("image_id", None)
        height, width = image_hw
        kept = []
        for index, anno in enumerate(annos):
            ann_id = anno.get("id", None)
            where = format_annotation(f"Image {file_name}", image_id, ann_id, index)
            key = (file_name, ann_id if ann_id is not None else index)
            category = anno.get("category_id", None)
            if self.num_classes is not None and (
                isinstance(category, bool)
                or not isinstance(category, (int, np.integer))
                or not 0 <= int(category) < self.num_classes
            ):
                raise AnnotationError(
                    f"{where}: category_id {category!r} is not a class index in [0, "
                    f"{self.num_classes}) (MODEL.YOLACT.NUM_CLASSES {self.num_classes}). Dataset "
                    "dicts need contiguous category ids (COCO jsons registered with "
                    "DATASETS.COCO_INSTANCES are mapped automatically)."
                )
            if "bbox" not in anno or "bbox_mode" not in anno:
                raise AnnotationError(f"{where}: needs 'bbox' and 'bbox_mode' (Detectron2 dataset format)")
            box, note, drop, segm, notes = self._check_box_and_mask(anno, height, width)
            for n in notes:
                self._warn_once(key + (n,), f"{where}: {n}")
            if drop is not None:
                self._warn_once(key, f"{where}: {drop}: annotation dropped")
                continue
            if note is not None:
                self._warn_once(key + ("clip",), f"{where}: {note}")
            anno = dict(anno, bbox=box, bbox_mode=BoxMode.XYXY_ABS, segmentation=segm)
            kept.append(anno)
        return kept

    def _shrink(self, image: np.ndarray):
        """Downscale a training image whose longer side exceeds ``max_input_size`` (area
        interpolation); returns the image and the resize transform for the annotations."""
        h, w = image.shape[:2]
        scale = self.max_input_size / float(max(h, w))
        new_h, new_w = max(int(round(h * scale)), 1), max(int(round(w * scale)), 1)
        small = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        return small, T.ResizeTransform(h, w, new_h, new_w)

    def _skip_bad_image(self, file_name: str, error: BadImageError) -> None:
        self.num_skipped += 1
        self._pending_skipped.append((str(file_name), str(error)))
        logger.warning(
            f"DATALOADER.SKIP_BAD_IMAGES: skipping a bad training image ({self.num_skipped} "
            f"skipped so far by this loader process): {error}"
        )
        return None

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one image in Detectron2 Dataset format.

        Returns:
            dict, or None when the image must be resampled or is skipped (see the class docstring).
        """
        try:
            result = self._map(dataset_dict)
        except BadImageError as e:
            if not (self.is_train and self.skip_bad_images):
                if self.is_train:
                    raise BadImageError(
                        f"{e} To skip such images in training (with a warning and a count in "
                        "the log), set DATALOADER.SKIP_BAD_IMAGES True."
                    ) from e
                raise
            result = self._skip_bad_image(dataset_dict.get("file_name"), e)
            self._last_none_reason = str(e)
        if result is None:
            self._consecutive_none += 1
            if self.dataset_size is not None and self._consecutive_none >= self.dataset_size:
                raise RuntimeError(
                    f"{self._consecutive_none} training images in a row could not be used, as "
                    f"many as the dataset has ({self.dataset_size} images): every image is bad "
                    "or has no usable annotation. Last problem: "
                    f"{self._last_none_reason or 'no usable instance left'}"
                )
            return None
        self._consecutive_none = 0
        if self._pending_skipped:
            result[SKIPPED_IMAGES_KEY] = self._pending_skipped
            self._pending_skipped = []
        return result

    def _map(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        self._last_none_reason = ""
        image = read_image_file(dataset_dict["file_name"], self.image_format)
        check_image_size(dataset_dict, image)  # also sets height/width if missing

        annos = dataset_dict.pop("annotations", None) if self.is_train else None
        original_hw = image.shape[:2]
        shrink = None
        if self.is_train and self.max_input_size and max(original_hw) > self.max_input_size:
            image, shrink = self._shrink(image)
        is_crowd = None
        if annos is not None:
            had_non_crowd = any(not a.get("iscrowd", 0) for a in annos)
            annos = self._check_annotations(annos, dataset_dict, original_hw)
            boxes = np.array(
                [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
                dtype=np.float64,
            ).reshape(-1, 4)
            if shrink is not None:
                boxes = shrink.apply_box(boxes).astype(np.float64).reshape(-1, 4)
            is_crowd = np.array([bool(a.get("iscrowd", 0)) for a in annos], dtype=bool)
            aug_input = YolactAugInput(image, boxes=boxes, is_crowd=is_crowd)
        else:
            aug_input = YolactAugInput(image)
        transforms = self.augmentations(aug_input)
        if shrink is not None:  # annotations are still in the coordinates of the file
            transforms = T.TransformList([shrink]) + transforms
        image = np.asarray(aug_input.image).astype(np.float32, copy=False)
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict
        if annos is None:
            return dataset_dict

        kept = [
            self._transform_annotation(annos[i], transforms, image_shape)
            for i in aug_input.instance_indices.tolist()
        ]
        instances = utils.annotations_to_instances(
            kept, image_shape, mask_format=self.instance_mask_format
        )
        instances.gt_is_crowd = torch.tensor(
            [bool(a.get("iscrowd", 0)) for a in kept], dtype=torch.bool
        )

        if self.degenerate_box_threshold is not None and len(instances) > 0:
            # The original Resize: discard w <= 4/550 or h <= 4/550 with boxes already in
            # absolute pixels of the 550 image (so only degenerate boxes are discarded).
            b = instances.gt_boxes.tensor
            w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
            thr = self.degenerate_box_threshold
            instances = instances[(w > thr) & (h > thr)]

        if len(instances) == 0 and not instances.has("gt_masks"):
            # Keep the fields uniform for the model: empty masks of the configured type.
            if self.instance_mask_format == "polygon":
                instances.gt_masks = PolygonMasks([])
            else:
                empty = torch.zeros((0,) + tuple(image_shape), dtype=torch.bool)
                instances.gt_masks = BitMasks(empty)

        if self.resample_if_empty and had_non_crowd and not bool((~instances.gt_is_crowd).any()):
            self._last_none_reason = (
                f"no non-crowd instance of image {dataset_dict.get('file_name')} left after the "
                "annotation checks and augmentation"
            )
            return None
        dataset_dict["instances"] = instances
        return dataset_dict

