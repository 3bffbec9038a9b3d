"""YOLACT's dataset mapper (the original's augmentation and resize): unlike Detectron2's ``DatasetMapper`` it hands the
model float32 images that are not clipped (the photometric distortion leaves 0..255, as in the
original), keeps crowd annotations (YOLACT matches against crowd boxes) and drops instances only by
the two rules of :class:`YolactDatasetMapper`. Image reading and annotation helpers are in
:mod:`.detection_utils`, the augmentations in :mod:`.transforms`.
"""
import copy
import logging
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import transforms as T

from ..utils.errors import ConfigError
from .annotation_checks import CHECKED_FOR_SIZE_KEY
from .detection_utils import (
    BadImageError,
    annotation_boxes_xyxy,
    annotations_to_yolact_instances,
    check_image_size,
    check_training_annotations,
    degenerate_box_side,
    read_image_file,
    shrink_image,
    transform_annotation,
)
from .transforms import (
    YolactAugInput,
    build_yolact_test_augmentation,
    build_yolact_train_augmentation,
    input_image_size,
    max_train_input_size,
)

__all__ = ["SKIPPED_IMAGES_KEY", "YolactDatasetMapper"]

logger = logging.getLogger(__name__)

# Key of the list of (image file, error) pairs the training mapper skipped (DATALOADER.SKIP_BAD_IMAGES)
# before producing this dict. The mapper runs in the loader's worker processes and the count belongs to
# the main process (EventStorage, metrics.json, checkpoints), so the skips travel with the next batch;
# the trainer takes them out there (yolact_d2/engine/skipped_images.py).
SKIPPED_IMAGES_KEY = "yolact_skipped_images"


class YolactDatasetMapper:
    """Map a Detectron2 dataset dict to YOLACT's model input (the original's augmentation and resize).

    Output: a deep copy of the dict plus ``image`` (float32 CHW in ``image_format``, not clipped:
    the model normalises) and ``height``/``width`` (the original size, from the dict or the image).
    Training adds ``instances``: ``gt_boxes`` (XYXY in the augmented image), ``gt_classes``,
    ``gt_masks`` (``PolygonMasks`` or ``BitMasks``; polygons, COCO RLE and HxW arrays are accepted in
    both, masks traced to polygons for "polygon") and ``gt_is_crowd``: crowds are kept, YOLACT
    matches against them. A dict without ``annotations`` gets no ``instances``, ``annotations: []``
    empty ones. Inference removes ``annotations`` and ``sem_seg_file_name``; keypoints are ignored.

    Instances are dropped by two rules only: (1) the SSD crop keeps those whose box centre is
    strictly inside it (:class:`YolactAugInput` records the survivors); (2) after augmentation,
    boxes with a side ``<= degenerate_box_threshold`` pixels go with their masks: the original's
    box-side filter (here only), which removes degenerate boxes; ``from_config`` uses
    ``4 / IMAGE_SIZE``, None disables it. When an input had a non-crowd instance and none is left
    (the crop always keeps one), ``__call__`` returns None and Detectron2's ``MapDataset`` draws
    another image, as the original resamples (``resample_if_empty=False`` returns the empty image).
    An input without any non-crowd instance is returned as is (no crop is possible for it) and the
    model must handle images without positives.

    Bad inputs (docs/RELIABILITY.md): images are read with :func:`.detection_utils.read_image_file`;
    an unreadable image, or one whose size differs from the dict's ``height``/``width``, raises
    :class:`BadImageError` naming the file, unless training skips it (``skip_bad_images``): then
    ``__call__`` returns None and ``(file name, message)`` comes under :data:`SKIPPED_IMAGES_KEY` in
    the next dict, for the trainer to count (inference never skips: that would change the metrics).
    Training annotations are checked before augmentation
    (:func:`.detection_utils.check_training_annotations`); those dropped count as removed for the
    resampling rule. With ``dataset_size`` set, that many None results in a row raise instead of
    letting ``MapDataset`` try forever. Training images larger than ``max_input_size`` are first
    downscaled: the SSD crop keeps at least 0.3 of each side, so ``ceil(IMAGE_SIZE / 0.3)`` loses
    no output pixel while sparing the expand step gigabytes on e.g. a 6000x4000 photo.
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
            is_train: training (annotations become ``instances``) or inference.
            augmentations: applied in order (:func:`~yolact_d2.data.transforms.build_yolact_train_augmentation`,
                :func:`~yolact_d2.data.transforms.build_yolact_test_augmentation`).
            image_format: of the image read ("RGB" or "BGR", for the photometric part).
            instance_mask_format: "polygon" or "bitmask".
            degenerate_box_threshold: rule 2 of the class docstring (pixels); None disables it.
            resample_if_empty: return None (the loader resamples) when every non-crowd instance of
                an image that had some was removed.
            skip_bad_images: training only: skip unreadable images (warning + count) instead of
                raising :class:`BadImageError`.
            num_classes: when set, training annotations need ``0 <= category_id < num_classes``.
            max_input_size: training only: larger images are first downscaled to this longer side
                (class docstring); None disables it.
            box_source: training only: "json" uses each annotation's ``bbox`` (the original's
                behaviour), "mask" the extent of its mask.
        """
        if instance_mask_format not in ("polygon", "bitmask"):
            raise ConfigError(
                f"INPUT.MASK_FORMAT (instance_mask_format) {instance_mask_format!r}", "unknown mask format",
                fix="use 'polygon' or 'bitmask'",
            )
        if box_source not in ("json", "mask"):
            raise ConfigError(
                f"INPUT.GT_BOX_SOURCE {box_source!r}", "must be 'json' or 'mask'",
                fix="'json' uses each annotation's bbox (the original's), 'mask' the extent of its mask",
            )
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
        self._pending_skipped: List[Tuple[str, str]] = []  # (file name, error message)
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
            "degenerate_box_threshold": degenerate_box_side(input_image_size(cfg)),
            "skip_bad_images": bool(cfg.DATALOADER.get("SKIP_BAD_IMAGES", False)),
            "num_classes": cfg.MODEL.YOLACT.NUM_CLASSES if "YOLACT" in cfg.MODEL else None,
            "max_input_size": max_train_input_size(input_image_size(cfg)) if is_train else None,
            "box_source": cfg.INPUT.get("GT_BOX_SOURCE", "json"),
        }

    def _warn_once(self, key, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def _check_annotations(self, annos: List[dict], dataset_dict: dict, image_hw: Tuple[int, int]) -> List[dict]:
        """The annotations to use, validated and fixed with this mapper's settings (class docstring)."""
        return check_training_annotations(
            annos, dataset_dict, image_hw, num_classes=self.num_classes, box_source=self.box_source,
            warn_once=self._warn_once,
        )

    def _skip_bad_image(self, file_name: str, error: BadImageError) -> None:
        self.num_skipped += 1
        self._pending_skipped.append((str(file_name), str(error)))
        logger.warning(
            f"DATALOADER.SKIP_BAD_IMAGES: skipping a bad training image ({self.num_skipped} "
            f"skipped so far by this loader process): {error}"
        )

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
                    skip = ("set DATALOADER.SKIP_BAD_IMAGES True to skip such images in training, with a warning "
                            "and a count in the log")
                    raise BadImageError(e.what, e.cause, fix=f"{e.fix}; or {skip}" if e.fix else skip) from e
                raise
            self._skip_bad_image(dataset_dict.get("file_name"), e)
            result = None
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

    def _augment(self, image: np.ndarray, annos: Optional[List[dict]]):
        """Run the augmentations on the image and the boxes of ``annos`` (already checked, in the
        coordinates of the file); returns the aug input and the transforms from the file."""
        shrink = None
        if self.is_train and self.max_input_size and max(image.shape[:2]) > self.max_input_size:
            image, shrink = shrink_image(image, self.max_input_size)
        if annos is not None:
            boxes = annotation_boxes_xyxy(annos)
            if shrink is not None:
                boxes = shrink.apply_box(boxes).astype(np.float64).reshape(-1, 4)
            is_crowd = np.array([bool(a.get("iscrowd", 0)) for a in annos], dtype=bool)
            aug_input = YolactAugInput(image, boxes=boxes, is_crowd=is_crowd)
        else:
            aug_input = YolactAugInput(image)
        transforms = self.augmentations(aug_input)
        if shrink is not None:  # annotations are still in the coordinates of the file
            transforms = T.TransformList([shrink]) + transforms
        return aug_input, transforms

    def _map(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        self._last_none_reason = ""
        image = read_image_file(dataset_dict["file_name"], self.image_format)
        check_image_size(dataset_dict, image)  # also sets height/width if missing

        annos = dataset_dict.pop("annotations", None) if self.is_train else None
        if annos is not None:
            had_non_crowd = any(not a.get("iscrowd", 0) for a in annos)
            annos = self._check_annotations(annos, dataset_dict, image.shape[:2])
        dataset_dict.pop(CHECKED_FOR_SIZE_KEY, None)  # the loader's note to this mapper, not for the model
        aug_input, transforms = self._augment(image, annos)
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
            transform_annotation(annos[i], transforms, image_shape, self.instance_mask_format)
            for i in aug_input.instance_indices.tolist()
        ]
        instances = annotations_to_yolact_instances(
            kept, image_shape, self.instance_mask_format, self.degenerate_box_threshold
        )
        if self.resample_if_empty and had_non_crowd and not bool((~instances.gt_is_crowd).any()):
            self._last_none_reason = (
                f"no non-crowd instance of image {dataset_dict.get('file_name')} left after the "
                "annotation checks and augmentation"
            )
            return None
        dataset_dict["instances"] = instances
        return dataset_dict
