"""Dataset mapper reproducing YOLACT's input pipeline (YOLACT_SPEC.md §2.1, §2.2).

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
from typing import List, Optional, Union

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, BoxMode, PolygonMasks

from .transforms import (
    RandomExpand,
    RandomPhotometricDistort,
    RandomSSDCrop,
    ResizeLongestSide,
    SquashResize,
    YolactAugInput,
)

__all__ = [
    "YolactDatasetMapper",
    "build_yolact_train_augmentation",
    "build_yolact_test_augmentation",
]

logger = logging.getLogger(__name__)


def _image_size(cfg) -> int:
    try:
        return int(cfg.INPUT.IMAGE_SIZE)
    except AttributeError as e:
        raise KeyError(
            "cfg.INPUT.IMAGE_SIZE is missing: call yolact_d2.config.add_yolact_config(cfg) first."
        ) from e


def build_yolact_train_augmentation(cfg) -> List[Union[T.Augmentation, T.Transform]]:
    """The original ``SSDAugmentation`` (§2.2) as a list of Detectron2 augmentations::

        RandomPhotometricDistort -> RandomExpand(PIXEL_MEAN) -> RandomSSDCrop
        -> RandomFlip(0.5, horizontal) -> SquashResize(IMAGE_SIZE)

    ``cfg.MODEL.PIXEL_MEAN`` is in ``cfg.INPUT.FORMAT`` channel order, like the mapper's image, so
    the expand canvas has the mean colour whatever the format. ``cfg.INPUT.YOLACT_AUGMENTATIONS``
    selects which of the four random steps run (the original's ``augment_*`` flags); the order
    stays the original's. The degenerate-box rule of the original ``Resize`` is applied by the
    mapper (``degenerate_box_threshold``).
    """
    size = _image_size(cfg)
    available = {
        "photometric_distort": lambda: RandomPhotometricDistort(image_format=cfg.INPUT.FORMAT),
        "expand": lambda: RandomExpand(mean=list(cfg.MODEL.PIXEL_MEAN)),
        "random_sample_crop": lambda: RandomSSDCrop(),
        "mirror": lambda: T.RandomFlip(prob=0.5, horizontal=True, vertical=False),
    }
    names = list(cfg.INPUT.YOLACT_AUGMENTATIONS)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(
            f"INPUT.YOLACT_AUGMENTATIONS: unknown {unknown}; choose from {list(available)}"
        )
    # Always in the original order, whatever the order of the list.
    return [available[n]() for n in available if n in names] + [SquashResize(size)]


def build_yolact_test_augmentation(cfg) -> List[Union[T.Augmentation, T.Transform]]:
    """Test-time resize (§2.1), per ``cfg.INPUT.TEST_RESIZE_MODE``: ``"squash"`` (IMAGE_SIZE x
    IMAGE_SIZE, the original protocol) or ``"keep_aspect"`` (longer side = IMAGE_SIZE, aspect kept,
    no padding: the model pads). Both use cv2 INTER_LINEAR on float32."""
    size = _image_size(cfg)
    mode = cfg.INPUT.get("TEST_RESIZE_MODE", None)
    if mode is None:
        raise KeyError(
            "cfg.INPUT.TEST_RESIZE_MODE is missing: call yolact_d2.config.add_yolact_config(cfg)."
        )
    if mode == "squash":
        return [SquashResize(size)]
    if mode == "keep_aspect":
        return [ResizeLongestSide(size)]
    raise ValueError(
        f"cfg.INPUT.TEST_RESIZE_MODE must be 'squash' or 'keep_aspect', got {mode!r}."
    )


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
        """
        if instance_mask_format not in ("polygon", "bitmask"):
            raise ValueError(
                "instance_mask_format must be 'polygon' or 'bitmask', "
                f"got {instance_mask_format!r}."
            )
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.instance_mask_format = instance_mask_format
        self.degenerate_box_threshold = degenerate_box_threshold
        self.resample_if_empty = resample_if_empty
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
            "degenerate_box_threshold": 4.0 / _image_size(cfg),
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

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one image in Detectron2 Dataset format.

        Returns:
            dict, or None when the image must be resampled (see the class docstring).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)  # also sets height/width if missing

        annos = dataset_dict.pop("annotations", None) if self.is_train else None
        is_crowd = None
        if annos is not None:
            boxes = np.array(
                [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
                dtype=np.float64,
            ).reshape(-1, 4)
            is_crowd = np.array([bool(a.get("iscrowd", 0)) for a in annos], dtype=bool)
            aug_input = YolactAugInput(image, boxes=boxes, is_crowd=is_crowd)
        else:
            aug_input = YolactAugInput(image)
        transforms = self.augmentations(aug_input)
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

        had_non_crowd = bool(np.any(~is_crowd))
        if self.resample_if_empty and had_non_crowd and not bool((~instances.gt_is_crowd).any()):
            return None
        dataset_dict["instances"] = instances
        return dataset_dict

