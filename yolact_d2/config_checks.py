"""Checks of a yolact_d2 config, each in one place, run before training or inference so that a
mistake is one message naming the keys instead of a shape error deep in the model
(docs/RELIABILITY.md). The modules that read a key call its check from here."""
from detectron2.data import DatasetCatalog, MetadataCatalog

from .utils.errors import ConfigError

__all__ = [
    "NMS_TYPES", "check_nms_type", "anchor_aspect_ratios_per_level", "check_yolact_config", "check_num_classes",
    "check_datasets_registered", "check_train_batch",
]

NMS_TYPES = ("fast", "cross_class", "standard")


def check_nms_type(nms_type: str) -> None:
    """``MODEL.YOLACT.NMS_TYPE`` must name one of the NMS variants of ``modeling/inference.py``."""
    if nms_type not in NMS_TYPES:
        raise ConfigError(f"MODEL.YOLACT.NMS_TYPE must be 'fast', 'cross_class' or 'standard', got {nms_type!r}")


def anchor_aspect_ratios_per_level(aspect_ratios, num_levels: int) -> list:
    """``MODEL.YOLACT.ANCHOR_ASPECT_RATIOS`` for each of ``num_levels`` levels: one list shared by
    all levels, or one list per level."""
    aspect_ratios = list(aspect_ratios)
    if len(aspect_ratios) not in (1, num_levels):
        raise ConfigError(
            f"MODEL.YOLACT.ANCHOR_ASPECT_RATIOS has {len(aspect_ratios)} levels; it needs 1 (shared) or "
            f"{num_levels} (one per level of MODEL.YOLACT.ANCHOR_SCALES and MODEL.YOLACT.IN_FEATURES)."
        )
    return aspect_ratios * num_levels if len(aspect_ratios) == 1 else aspect_ratios


def _check_anchor_levels(y) -> None:
    """One list of anchor scales per feature level, aspect ratios shared or per level, all positive."""
    features = list(y.IN_FEATURES)
    scales, ratios = list(y.ANCHOR_SCALES), list(y.ANCHOR_ASPECT_RATIOS)
    if len(scales) != len(features):
        raise ConfigError(
            f"MODEL.YOLACT.ANCHOR_SCALES has {len(scales)} levels {scales} but "
            f"MODEL.YOLACT.IN_FEATURES has {len(features)} {features}: give one list of anchor "
            "scales per feature level."
        )
    anchor_aspect_ratios_per_level(ratios, len(features))  # the one rule, shared with the anchor generator
    for key, lists in (("ANCHOR_SCALES", scales), ("ANCHOR_ASPECT_RATIOS", ratios)):
        if any(len(level) == 0 or any(not v > 0 for v in level) for level in lists):
            raise ConfigError(f"MODEL.YOLACT.{key} {lists}: every level needs positive values.")


def _check_image_size(cfg, model) -> None:
    """``INPUT.IMAGE_SIZE`` at least the stride of the coarsest level, else that level covers less
    than one pixel of the image."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "output_shape"):
        return
    features = list(cfg.MODEL.YOLACT.IN_FEATURES)
    shapes = backbone.output_shape()
    strides = {f: shapes[f].stride for f in features if f in shapes}
    if not strides:
        return
    coarsest = max(strides, key=strides.get)
    size = int(cfg.INPUT.IMAGE_SIZE)
    if size < strides[coarsest]:
        raise ConfigError(
            f"INPUT.IMAGE_SIZE {size} is smaller than the stride {strides[coarsest]} of the "
            f"coarsest feature level '{coarsest}' (MODEL.YOLACT.IN_FEATURES {features}): that "
            f"level would cover {size / strides[coarsest]:.2g} pixel of the image. Use "
            f"INPUT.IMAGE_SIZE >= {strides[coarsest]} (YOLACT uses 550), or fewer levels in "
            "MODEL.YOLACT.IN_FEATURES (with as many MODEL.YOLACT.ANCHOR_SCALES)."
        )


def _check_device(device: str) -> None:
    """``MODEL.DEVICE`` a device this torch can use, before the model is moved there (torch's own
    error is a traceback from its CUDA initialisation)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"MODEL.DEVICE {device!r}", f"not a device ({e})", fix="use cpu or cuda") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"MODEL.DEVICE {device}", "CUDA is not available to this torch "
                              f"{torch.__version__} (no GPU or driver found)", fix="use MODEL.DEVICE cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"MODEL.DEVICE {device}", f"only {torch.cuda.device_count()} CUDA device(s)")


def check_yolact_config(cfg, model=None) -> None:
    """Fail before training (or inference) with a message naming the keys when ``MODEL.DEVICE``
    cannot be used, when the anchor definition does not fit the feature levels, or (given the built
    model) when ``INPUT.IMAGE_SIZE`` is smaller than the stride of the coarsest level."""
    if model is None:
        _check_device(cfg.MODEL.DEVICE)
    _check_anchor_levels(cfg.MODEL.YOLACT)
    _check_image_size(cfg, model)


def check_datasets_registered(dataset_names, key: str = "DATASETS.TRAIN") -> None:
    """A :class:`ConfigError` naming ``key`` for a dataset name that is not registered, instead of
    ``DatasetCatalog``'s KeyError listing every registered name."""
    registered = set(DatasetCatalog.list())
    for name in dataset_names:
        if name not in registered:
            raise ConfigError(
                f"{key}: dataset '{name}' is not registered",
                fix="register it with DATASETS.COCO_INSTANCES [[name, json, image_root]] or in code",
            )


def check_train_batch(cfg, world_size: int) -> None:
    """``DATASETS.TRAIN`` not empty and ``SOLVER.IMS_PER_BATCH`` a positive multiple of the number of
    processes, before Detectron2's loader asserts either without naming the key."""
    if not cfg.DATASETS.TRAIN:
        raise ConfigError("DATASETS.TRAIN is empty", fix="name at least one registered dataset")
    batch = cfg.SOLVER.IMS_PER_BATCH
    if batch < 1 or batch % world_size:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH {batch}", f"must be a positive multiple of the {world_size} process(es)",
            fix="it is the total batch over all processes",
        )


def check_num_classes(cfg, dataset_names, key: str = "DATASETS.TRAIN") -> None:
    """Fail before training (or evaluation) if ``MODEL.YOLACT.NUM_CLASSES`` disagrees with a
    dataset's classes. A dataset whose metadata has no ``thing_classes`` yet (a json registered by
    ``DATASETS.COCO_INSTANCES`` fills them when loaded) is loaded once here to read them; a name that
    is not registered is a :class:`ConfigError` naming ``key``."""
    check_datasets_registered(dataset_names, key)
    for name in dataset_names:
        if MetadataCatalog.get(name).get("thing_classes", None) is None:
            DatasetCatalog.get(name)
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != cfg.MODEL.YOLACT.NUM_CLASSES:
            raise ConfigError(
                f"{key}: dataset '{name}' has {len(classes)} classes ({', '.join(classes[:10])}"
                f"{', ...' if len(classes) > 10 else ''}) but MODEL.YOLACT.NUM_CLASSES is "
                f"{cfg.MODEL.YOLACT.NUM_CLASSES}. Set MODEL.YOLACT.NUM_CLASSES {len(classes)}."
            )
