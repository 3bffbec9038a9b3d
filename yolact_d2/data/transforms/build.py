"""The augmentation lists of training and inference, built from the config."""
import math
from typing import List, Sequence, Union

from detectron2.data import transforms as T

from ...utils.errors import ConfigError
from .geometry import RandomExpand, ResizeLongestSide, SquashResize
from .photometric import RandomPhotometricDistort
from .ssd_crop import MIN_CROP_SCALE, RandomSSDCrop

__all__ = [
    "build_yolact_train_augmentation",
    "build_yolact_test_augmentation",
    "input_image_size",
    "yolact_train_augmentation",
    "yolact_test_augmentation",
    "max_train_input_size",
]


def input_image_size(cfg) -> int:
    """``cfg.INPUT.IMAGE_SIZE``, with an error that says how to add the key when it is missing."""
    try:
        return int(cfg.INPUT.IMAGE_SIZE)
    except AttributeError as e:
        raise KeyError(
            "cfg.INPUT.IMAGE_SIZE is missing: call yolact_d2.config.add_yolact_config(cfg) first."
        ) from e


def build_yolact_train_augmentation(cfg) -> List[Union[T.Augmentation, T.Transform]]:
    """:func:`yolact_train_augmentation` of ``INPUT.IMAGE_SIZE``, ``INPUT.YOLACT_AUGMENTATIONS``,
    ``INPUT.FORMAT`` and ``MODEL.PIXEL_MEAN``."""
    return yolact_train_augmentation(
        image_size=input_image_size(cfg),
        names=cfg.INPUT.YOLACT_AUGMENTATIONS,
        image_format=cfg.INPUT.FORMAT,
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
    )


def yolact_train_augmentation(
    image_size: int, names: Sequence[str], image_format: str, pixel_mean: Sequence[float]
) -> List[Union[T.Augmentation, T.Transform]]:
    """The original ``SSDAugmentation`` as a list of Detectron2 augmentations::

        RandomPhotometricDistort -> RandomExpand(pixel_mean) -> RandomSSDCrop
        -> RandomFlip(0.5, horizontal) -> SquashResize(image_size)

    ``pixel_mean`` is in ``image_format`` channel order, like the mapper's image, so the expand
    canvas has the mean colour whatever the format. ``names`` (``INPUT.YOLACT_AUGMENTATIONS``)
    selects which of the four random steps run (the original's ``augment_*`` flags); the order
    stays the original's. The degenerate-box rule of the original ``Resize`` is applied by the
    mapper (``degenerate_box_threshold``). The yaml configs and the LazyConfigs both build with it.
    """
    available = {
        "photometric_distort": lambda: RandomPhotometricDistort(image_format=image_format),
        "expand": lambda: RandomExpand(mean=list(pixel_mean)),
        "random_sample_crop": lambda: RandomSSDCrop(),
        "mirror": lambda: T.RandomFlip(prob=0.5, horizontal=True, vertical=False),
    }
    names = list(names)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(
            "INPUT.YOLACT_AUGMENTATIONS", f"unknown {unknown}", fix=f"choose from {list(available)}"
        )
    # Always in the original order, whatever the order of the list.
    return [available[n]() for n in available if n in names] + [SquashResize(int(image_size))]


def build_yolact_test_augmentation(cfg) -> List[Union[T.Augmentation, T.Transform]]:
    """:func:`yolact_test_augmentation` of ``INPUT.IMAGE_SIZE`` and ``INPUT.TEST_RESIZE_MODE``."""
    size = input_image_size(cfg)
    mode = cfg.INPUT.get("TEST_RESIZE_MODE", None)
    if mode is None:
        raise KeyError(
            "cfg.INPUT.TEST_RESIZE_MODE is missing: call yolact_d2.config.add_yolact_config(cfg)."
        )
    return yolact_test_augmentation(size, mode)


def yolact_test_augmentation(image_size: int, resize_mode: str = "squash") -> List[Union[T.Augmentation, T.Transform]]:
    """Test-time resize, per ``resize_mode`` (``INPUT.TEST_RESIZE_MODE``): ``"squash"``
    (image_size x image_size, the original protocol) or ``"keep_aspect"`` (longer side = image_size, aspect
    kept, no padding: the model pads). Both use cv2 INTER_LINEAR on float32."""
    if resize_mode == "squash":
        return [SquashResize(int(image_size))]
    if resize_mode == "keep_aspect":
        return [ResizeLongestSide(int(image_size))]
    raise ConfigError(
        f"INPUT.TEST_RESIZE_MODE {resize_mode!r}", "is not a test-time resize", fix="use 'squash' or 'keep_aspect'"
    )


def max_train_input_size(image_size: int) -> int:
    """Training images with a longer side above this are downscaled first (``YolactDatasetMapper``'s
    ``max_input_size``): the SSD crop keeps at least ``MIN_CROP_SCALE`` of each side, so no output pixel
    is lost."""
    return int(math.ceil(int(image_size) / MIN_CROP_SCALE))
