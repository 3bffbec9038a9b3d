"""YOLACT's SSD-style input pipeline as Detectron2 ``Augmentation``/``Transform`` classes.

docs/MODEL.md describes the test-time resize and the training augmentation. The original works on
float32 images in 0..255 and never clips after the photometric changes. Every transform here
therefore converts its image input to float32 (``uint8`` input is accepted) and returns float32
without clipping or rounding; segmentation masks keep their dtype.

Training pipeline (:func:`build_yolact_train_augmentation`)::

    RandomPhotometricDistort -> RandomExpand -> RandomSSDCrop -> RandomFlip -> SquashResize

Random numbers come from numpy's global RNG (``np.random``), like every Detectron2 augmentation,
so ``np.random.seed`` makes the pipeline reproducible. The SSD crop drops instances;
:class:`YolactAugInput` (``base.py``) records which ones survive.

Modules: ``base`` (the AugInput, float32), ``photometric``, ``geometry`` (expand, resizes),
``ssd_crop`` and ``build`` (the lists built from the config).
"""
from .base import YolactAugInput
from .build import (
    build_yolact_test_augmentation,
    build_yolact_train_augmentation,
    input_image_size,
    max_train_input_size,
    yolact_test_augmentation,
    yolact_train_augmentation,
)
from .geometry import (
    CV2ResizeTransform,
    ExpandTransform,
    RandomExpand,
    ResizeLongestSide,
    SquashResize,
    keep_aspect_output_shape,
)
from .photometric import PhotometricDistortTransform, RandomPhotometricDistort, shift_hue
from .ssd_crop import MIN_CROP_SCALE, SSD_CROP_MODES, RandomSSDCrop, SSDCropTransform

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
    "MIN_CROP_SCALE",
    "CV2ResizeTransform",
    "SquashResize",
    "ResizeLongestSide",
    "keep_aspect_output_shape",
    "build_yolact_train_augmentation",
    "build_yolact_test_augmentation",
    "input_image_size",
    "yolact_train_augmentation",
    "yolact_test_augmentation",
    "max_train_input_size",
]
