"""What every YOLACT transform shares: the ``AugInput`` that follows the instances a transform
drops, and the float32 image convention, as the original's augmentations use.

Detectron2's ``AugInput`` has no notion of dropped instances, yet the SSD crop drops ground truth
whose box centre leaves the crop. A transform that drops instances exposes
``instance_keep_mask(boxes) -> bool[N]`` (evaluated on the boxes *before* the transform);
:class:`YolactAugInput` applies it to ``boxes``, ``is_crowd`` and ``instance_indices`` (indices
into the original annotation list), so the dataset mapper knows exactly which annotations survived.
"""
from typing import Optional

import numpy as np
from fvcore.transforms.transform import Transform, TransformList

from detectron2.data.transforms import AugInput

__all__ = ["YolactAugInput", "to_float32"]


def to_float32(img: np.ndarray) -> np.ndarray:
    """A float32 copy-or-view of ``img`` (uint8 or float input), values untouched: the original
    works on float32 and never clips or rounds."""
    return np.asarray(img).astype(np.float32, copy=False)


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
