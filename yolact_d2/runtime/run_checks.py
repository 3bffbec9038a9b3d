"""Checks of a yolact_d2 config, each in one place, run before training or inference so that a
mistake is one message naming the keys instead of a shape error deep in the model
(docs/RELIABILITY.md). The modules that read a key call its check from here."""
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..utils.atomic_io import make_output_dir
from ..utils.errors import ConfigError, DataError, UserError

__all__ = [
    "NMS_TYPES", "check_nms_type", "anchor_aspect_ratios_per_level", "check_yolact_config", "check_num_classes",
    "check_datasets_registered", "check_train_batch", "check_training_config", "check_output_dir",
    "check_class_names", "check_meta_architecture",
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


class _Range:
    """The values a numeric key may take: ``low`` / ``high`` bounds (None: unbounded), each inclusive
    unless ``open_low`` / ``open_high``; ``integer`` for counts."""

    def __init__(self, low=None, high=None, open_low=False, open_high=False, integer=False):
        self.low, self.high, self.open_low, self.open_high, self.integer = low, high, open_low, open_high, integer

    def admits(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN
            return False
        if self.integer and value != int(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            return f"{kind} in {'(' if self.open_low else '['}{self.low}, {self.high}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{kind} {'>' if self.open_low else '>='} {self.low}"
        return f"{kind} {'<' if self.open_high else '<='} {self.high}"


_FRACTION = _Range(0, 1)
_COUNT = _Range(1, integer=True)
_NON_NEGATIVE = _Range(0)

# Numeric keys the model and its inference read: a value outside its range crashes deep in a run (for
# TEST.DETECTIONS_PER_IMAGE 0: at the evaluation after the whole training) or silently changes what
# the key means (a score threshold above 1 keeps no detection). A list value is checked entry by entry.
MODEL_VALUE_RANGES = {
    "MODEL.YOLACT.NUM_CLASSES": _COUNT,
    "MODEL.YOLACT.NUM_PROTOTYPES": _COUNT,
    "MODEL.YOLACT.POSITIVE_IOU_THRESHOLD": _FRACTION,
    "MODEL.YOLACT.NEGATIVE_IOU_THRESHOLD": _FRACTION,
    "MODEL.YOLACT.CROWD_IOA_THRESHOLD": _FRACTION,
    "MODEL.YOLACT.BBOX_VARIANCES": _Range(0, open_low=True),
    "MODEL.YOLACT.OHEM_NEG_POS_RATIO": _Range(0, open_low=True),
    "MODEL.YOLACT.LOSS_CLS_WEIGHT": _NON_NEGATIVE,
    "MODEL.YOLACT.LOSS_BOX_WEIGHT": _NON_NEGATIVE,
    "MODEL.YOLACT.LOSS_MASK_WEIGHT": _NON_NEGATIVE,
    "MODEL.YOLACT.LOSS_SEM_SEG_WEIGHT": _NON_NEGATIVE,
    "MODEL.YOLACT.LOSS_MASK_IOU_WEIGHT": _NON_NEGATIVE,
    "MODEL.YOLACT.MASKS_TO_TRAIN": _COUNT,
    "MODEL.YOLACT.MASK_IOU_MIN_AREA": _NON_NEGATIVE,
    "MODEL.YOLACT.SCORE_THRESH_TEST": _FRACTION,
    "MODEL.YOLACT.NMS_THRESH_TEST": _FRACTION,
    "MODEL.YOLACT.TOPK_CANDIDATES_TEST": _COUNT,
    "MODEL.YOLACT.MASK_THRESHOLD": _FRACTION,
    "INPUT.IMAGE_SIZE": _COUNT,
    "TEST.DETECTIONS_PER_IMAGE": _COUNT,
    "MODEL.PIXEL_STD": _Range(0, open_low=True),
    "MODEL.FPN.OUT_CHANNELS": _COUNT,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": _COUNT,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": _COUNT,
    "MODEL.RESNETS.NUM_GROUPS": _COUNT,
    "MODEL.RESNETS.WIDTH_PER_GROUP": _COUNT,
}

GROUP_NORM_GROUPS = 32  # Detectron2's get_norm("GN", C) is GroupNorm(32, C)

# Numeric keys only training reads (checked by the trainer, not by the predictor).
TRAINING_VALUE_RANGES = {
    "SOLVER.BASE_LR": _NON_NEGATIVE,
    "SOLVER.MAX_ITER": _COUNT,
    "SOLVER.WARMUP_ITERS": _Range(0, integer=True),
    "SOLVER.WARMUP_FACTOR": _FRACTION,
    "SOLVER.GAMMA": _Range(0, open_low=True),
    "SOLVER.STEPS": _Range(0, integer=True),
    "SOLVER.MOMENTUM": _Range(0, 1, open_high=True),
    "SOLVER.WEIGHT_DECAY": _NON_NEGATIVE,
    "SOLVER.WEIGHT_DECAY_NORM": _NON_NEGATIVE,
    "SOLVER.CHECKPOINT_PERIOD": _COUNT,
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": _Range(0, open_low=True),
    "SOLVER.REFERENCE_IMS_PER_BATCH": _Range(0, integer=True),
    "SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE": _Range(0, integer=True),
    "SOLVER.NONFINITE_LOSS.MAX_CONSECUTIVE": _COUNT,
    "SOLVER.NONFINITE_LOSS.MAX_SKIPPED_FRACTION": _FRACTION,
    "SOLVER.NONFINITE_LOSS.WINDOW": _COUNT,
    "DATALOADER.NUM_WORKERS": _Range(0, integer=True),
    "TEST.EVAL_PERIOD": _Range(0, integer=True),
}


def _lookup(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def _check_value_ranges(cfg, ranges) -> None:
    """Every key of ``ranges`` that the config has holds a value (or list of values) in its range."""
    for key, allowed in ranges.items():
        value = _lookup(cfg, key)
        if value is None:  # a key this config does not have, or None (e.g. WEIGHT_DECAY_BIAS)
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        bad = [v for v in values if not allowed.admits(v)]
        if bad:
            entry = "" if values == [value] else f" (entry {bad[0]!r})"
            raise ConfigError(f"{key} {value!r}", f"must be {allowed}{entry}")


def _check_pixel_channels(cfg) -> None:
    """``MODEL.PIXEL_MEAN`` / ``PIXEL_STD`` one value per channel of ``INPUT.FORMAT`` (the backbone's
    input channels are ``len(PIXEL_MEAN)``): otherwise a conv shape error at the first image, or a
    grey image silently broadcast to three channels."""
    channels = 1 if cfg.INPUT.FORMAT == "L" else 3
    for key in ("PIXEL_MEAN", "PIXEL_STD"):
        values = list(getattr(cfg.MODEL, key))
        if len(values) != channels:
            raise ConfigError(
                f"MODEL.{key} {values}", f"has {len(values)} values but INPUT.FORMAT {cfg.INPUT.FORMAT!r} has "
                f"{channels} channel(s)", fix="give one value per channel, in INPUT.FORMAT order",
            )


def _check_group_norm_widths(cfg) -> None:
    """Every layer normalised by ``"GN"`` has a width divisible by its 32 groups (else GroupNorm's
    ValueError while the model is built, naming no key)."""
    r = cfg.MODEL.RESNETS
    widths = {"MODEL.FPN.NORM": {"MODEL.FPN.OUT_CHANNELS": cfg.MODEL.FPN.OUT_CHANNELS},
              "MODEL.YOLACT.NORM": {"MODEL.FPN.OUT_CHANNELS": cfg.MODEL.FPN.OUT_CHANNELS},
              "MODEL.RESNETS.NORM": {"MODEL.RESNETS.STEM_OUT_CHANNELS": r.STEM_OUT_CHANNELS,
                                     "MODEL.RESNETS.RES2_OUT_CHANNELS": r.RES2_OUT_CHANNELS,
                                     "MODEL.RESNETS.NUM_GROUPS x WIDTH_PER_GROUP": r.NUM_GROUPS * r.WIDTH_PER_GROUP}}
    for norm_key, keys in widths.items():
        if _lookup(cfg, norm_key) != "GN":
            continue
        for key, width in keys.items():
            if width % GROUP_NORM_GROUPS:
                raise ConfigError(
                    f"{key} {width}", f"is not a multiple of the {GROUP_NORM_GROUPS} groups of {norm_key} 'GN'",
                    fix=f"use a multiple of {GROUP_NORM_GROUPS}, or another {norm_key}",
                )


def check_training_config(cfg) -> None:
    """Before a training starts: the numeric training keys in range, ``SOLVER.STEPS`` increasing and
    below ``SOLVER.MAX_ITER`` (fvcore's scheduler refuses them otherwise), and the negative IoU
    threshold of anchor matching not above the positive one (docs/MODEL.md §5)."""
    _check_value_ranges(cfg, TRAINING_VALUE_RANGES)
    steps, max_iter = list(cfg.SOLVER.STEPS), cfg.SOLVER.MAX_ITER
    kept = [s for s in steps if s <= max_iter]  # Detectron2 drops later steps with a warning
    if any(b <= a for a, b in zip(kept, kept[1:])) or max_iter in kept:
        raise ConfigError(
            f"SOLVER.STEPS {tuple(steps)}", f"must increase and lie below SOLVER.MAX_ITER {max_iter}",
            fix="the iterations at which the LR is multiplied by SOLVER.GAMMA",
        )
    y = cfg.MODEL.YOLACT
    if y.NEGATIVE_IOU_THRESHOLD > y.POSITIVE_IOU_THRESHOLD:
        raise ConfigError(
            f"MODEL.YOLACT.NEGATIVE_IOU_THRESHOLD {y.NEGATIVE_IOU_THRESHOLD}",
            f"is above MODEL.YOLACT.POSITIVE_IOU_THRESHOLD {y.POSITIVE_IOU_THRESHOLD}",
            fix="anchors below the negative threshold are background, those above the positive one objects",
        )


def check_output_dir(cfg) -> None:
    """``OUTPUT_DIR`` a directory this process can create and write, before anything is logged there
    (otherwise an OSError from Detectron2's logger setup)."""
    if cfg.OUTPUT_DIR:  # empty: Detectron2 writes no files
        try:
            make_output_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR")
        except UserError as e:
            raise ConfigError(e.what, e.cause) from None


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


def check_meta_architecture(cfg) -> None:
    """``MODEL.META_ARCHITECTURE`` must build YOLACT (``Yolact`` or a registered subclass of it).
    Detectron2's default is GeneralizedRCNN and ``add_yolact_config`` only adds keys: a cfg that never
    read a yolact_d2 config file would otherwise train or run a Faster R-CNN without a word."""
    from detectron2.modeling import META_ARCH_REGISTRY

    name = cfg.MODEL.META_ARCHITECTURE
    builds = META_ARCH_REGISTRY.get(name) if name in META_ARCH_REGISTRY else None
    if builds is None or not any(
        c.__name__ == "Yolact" and c.__module__.startswith("yolact_d2.") for c in getattr(builds, "__mro__", ())
    ):
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE {name!r}", "is not YOLACT, so this would build another model",
            fix="merge a yolact_d2 config file (e.g. Base-YOLACT.yaml in yolact_d2/model_zoo/configs) or set "
            "MODEL.META_ARCHITECTURE 'Yolact'",
        )


def check_yolact_config(cfg, model=None) -> None:
    """Fail before training (or inference) with a message naming the keys when the config builds
    another model than YOLACT (``MODEL.META_ARCHITECTURE``), when ``MODEL.DEVICE``
    cannot be used, when a numeric key of the model is out of range, when the pixel statistics or
    GroupNorm widths do not fit, when the anchor definition does not fit the feature levels, or
    (given the built model) when ``INPUT.IMAGE_SIZE`` is smaller than the stride of the coarsest level."""
    if model is None:
        check_meta_architecture(cfg)
        _check_device(cfg.MODEL.DEVICE)
        _check_value_ranges(cfg, MODEL_VALUE_RANGES)
        _check_pixel_channels(cfg)
        _check_group_norm_widths(cfg)
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
    ``DATASETS.COCO_INSTANCES`` fills them when loaded) is loaded once here to read them (and is a
    :class:`DataError` if it has no images); a name that is not registered is a :class:`ConfigError`
    naming ``key``."""
    check_datasets_registered(dataset_names, key)
    for name in dataset_names:
        if MetadataCatalog.get(name).get("thing_classes", None) is None and not DatasetCatalog.get(name):
            raise DataError(f"{key}: dataset '{name}'", "has no images")
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != cfg.MODEL.YOLACT.NUM_CLASSES:
            raise ConfigError(
                f"{key}: dataset '{name}' has {len(classes)} classes ({', '.join(classes[:10])}"
                f"{', ...' if len(classes) > 10 else ''}) but MODEL.YOLACT.NUM_CLASSES is "
                f"{cfg.MODEL.YOLACT.NUM_CLASSES}. Set MODEL.YOLACT.NUM_CLASSES {len(classes)}."
            )


def check_class_names(class_names, source: str, dataset_names, key: str = "DATASETS.TEST") -> None:
    """The classes a model was trained on (``class_names``, from ``source``: a checkpoint or
    ``DATASETS.TRAIN``) are those of every dataset in ``dataset_names``, in the same order. With the
    same number of classes in another order, or other classes, every label and AP would be wrong
    without any error. Datasets without class names in their metadata, and an empty
    ``class_names`` (weights from elsewhere), are not checked."""
    if not class_names:
        return
    for name in dataset_names:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and list(classes) != list(class_names):
            raise ConfigError(
                f"{key}: dataset '{name}' has the classes {_class_list(classes)}, but {source} has "
                f"{_class_list(class_names)}", "the labels and the AP would be wrong",
                fix="evaluate on data with the training classes in the same order (the same json categories)",
            )


def _class_list(names, limit: int = 8) -> str:
    names = list(names)
    return "[" + ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "") + "]"
