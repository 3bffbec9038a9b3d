"""The augmentation lists of training and inference, built from the config (docs/MODEL.md §7)."""
from typing import List, Union

from detectron2.data import transforms as T

from ...utils.errors import ConfigError
from .geometry import RandomExpand, ResizeLongestSide, SquashResize
from .photometric import RandomPhotometricDistort
from .ssd_crop import RandomSSDCrop

__all__ = ["build_yolact_train_augmentation", "build_yolact_test_augmentation", "input_image_size"]


def input_image_size(cfg) -> int:
    """``cfg.INPUT.IMAGE_SIZE``, with an error that says how to add the key when it is missing."""
    try:
        return int(cfg.INPUT.IMAGE_SIZE)
    except AttributeError as e:
        raise KeyError(
            "cfg.INPUT.IMAGE_SIZE is missing: call yolact_d2.config.add_yolact_config(cfg) first."
        ) from e


def build_yolact_train_augmentation(cfg) -> List[Union[T.Augmentation, T.Transform]]:
    """The original ``SSDAugmentation`` (docs/MODEL.md §7.2) as a list of Detectron2 augmentations::

        RandomPhotometricDistort -> RandomExpand(PIXEL_MEAN) -> RandomSSDCrop
        -> RandomFlip(0.5, horizontal) -> SquashResize(IMAGE_SIZE)

    ``cfg.MODEL.PIXEL_MEAN`` is in ``cfg.INPUT.FORMAT`` channel order, like the mapper's image, so
    the expand canvas has the mean colour whatever the format. ``cfg.INPUT.YOLACT_AUGMENTATIONS``
    selects which of the four random steps run (the original's ``augment_*`` flags); the order
    stays the original's. The degenerate-box rule of the original ``Resize`` is applied by the
    mapper (``degenerate_box_threshold``).
    """
    size = input_image_size(cfg)
    available = {
        "photometric_distort": lambda: RandomPhotometricDistort(image_format=cfg.INPUT.FORMAT),
        "expand": lambda: RandomExpand(mean=list(cfg.MODEL.PIXEL_MEAN)),
        "random_sample_crop": lambda: RandomSSDCrop(),
        "mirror": lambda: T.RandomFlip(prob=0.5, horizontal=True, vertical=False),
    }
    names = list(cfg.INPUT.YOLACT_AUGMENTATIONS)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(
            f"INPUT.YOLACT_AUGMENTATIONS: unknown {unknown}; choose from {list(available)}"
        )
    # Always in the original order, whatever the order of the list.
    return [available[n]() for n in available if n in names] + [SquashResize(size)]


def build_yolact_test_augmentation(cfg) -> List[Union[T.Augmentation, T.Transform]]:
    """Test-time resize (docs/MODEL.md §7.1), per ``cfg.INPUT.TEST_RESIZE_MODE``: ``"squash"`` (IMAGE_SIZE x
    IMAGE_SIZE, the original protocol) or ``"keep_aspect"`` (longer side = IMAGE_SIZE, aspect kept,
    no padding: the model pads). Both use cv2 INTER_LINEAR on float32."""
    size = input_image_size(cfg)
    mode = cfg.INPUT.get("TEST_RESIZE_MODE", None)
    if mode is None:
        raise KeyError(
            "cfg.INPUT.TEST_RESIZE_MODE is missing: call yolact_d2.config.add_yolact_config(cfg)."
        )
    if mode == "squash":
        return [SquashResize(size)]
    if mode == "keep_aspect":
        return [ResizeLongestSide(size)]
    raise ConfigError(
        f"cfg.INPUT.TEST_RESIZE_MODE must be 'squash' or 'keep_aspect', got {mode!r}."
    )
