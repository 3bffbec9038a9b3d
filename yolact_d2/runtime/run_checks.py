"""The checks of a run, each made once, before the long work (training, or the evaluation's model
load), so that a mistake is one message naming the keys instead of an error deep in the run: the
config builds YOLACT on a usable device, the training keys, the datasets (registered, their classes),
``OUTPUT_DIR`` (docs/RELIABILITY.md). The model's own keys are checked by the modules that read them,
when the model is built (``yolact_d2/modeling/config_checks.py``)."""
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..modeling.config_checks import COUNT, FRACTION, NON_NEGATIVE, POSITIVE, ValueRange, check_value_ranges
from ..utils.atomic_io import make_output_dir
from ..utils.errors import ConfigError, DataError, UserError

__all__ = [
    "check_yolact_config", "check_meta_architecture", "check_training_config", "check_output_dir",
    "check_datasets_registered", "check_train_batch", "check_num_classes", "check_class_names",
]

# Numeric keys only training reads (checked by the trainer, not by the predictor).
_COUNT_OR_ZERO = ValueRange(0, integer=True)

TRAINING_VALUE_RANGES = {
    "SOLVER.BASE_LR": NON_NEGATIVE,
    "SOLVER.MAX_ITER": COUNT,
    "SOLVER.WARMUP_ITERS": _COUNT_OR_ZERO,
    "SOLVER.WARMUP_FACTOR": FRACTION,
    "SOLVER.GAMMA": POSITIVE,
    "SOLVER.STEPS": _COUNT_OR_ZERO,
    "SOLVER.MOMENTUM": ValueRange(0, 1, open_high=True),
    "SOLVER.WEIGHT_DECAY": NON_NEGATIVE,
    "SOLVER.WEIGHT_DECAY_NORM": NON_NEGATIVE,
    "SOLVER.CHECKPOINT_PERIOD": COUNT,
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": POSITIVE,
    "SOLVER.REFERENCE_IMS_PER_BATCH": _COUNT_OR_ZERO,
    "SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE": _COUNT_OR_ZERO,
    "SOLVER.NONFINITE_LOSS.MAX_CONSECUTIVE": COUNT,
    "SOLVER.NONFINITE_LOSS.MAX_SKIPPED_FRACTION": FRACTION,
    "SOLVER.NONFINITE_LOSS.WINDOW": COUNT,
    "DATALOADER.NUM_WORKERS": _COUNT_OR_ZERO,
    "TEST.EVAL_PERIOD": _COUNT_OR_ZERO,
}


def check_training_config(cfg) -> None:
    """Before a training starts: the numeric training keys in range, ``SOLVER.STEPS`` increasing and
    below ``SOLVER.MAX_ITER`` (fvcore's scheduler refuses them otherwise), and the negative IoU
    threshold of anchor matching not above the positive one (anchors between the two are ignored)."""
    check_value_ranges(cfg, TRAINING_VALUE_RANGES)
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
            count = torch.cuda.device_count()
            raise ConfigError(f"MODEL.DEVICE {device}", f"only {count} CUDA device(s)",
                              fix=f"use cuda:0 to cuda:{count - 1}, or cpu" if count else "use MODEL.DEVICE cpu")


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


def check_yolact_config(cfg) -> None:
    """Before a model is built for a run (training, evaluation, inference): the config builds YOLACT
    (``MODEL.META_ARCHITECTURE``; first, since the model's own checks would describe another model's
    config) on a device this torch can use (``MODEL.DEVICE``). The model checks its own keys while it
    is built (``from_config`` of each module)."""
    check_meta_architecture(cfg)
    _check_device(cfg.MODEL.DEVICE)


def check_input_fits_model(cfg, model) -> None:
    """``INPUT.IMAGE_SIZE`` (what the mappers feed) at least the stride of the model's coarsest level,
    else that level covers less than one pixel of the image: checked once a run's model is built."""
    model = getattr(model, "module", model)  # DDP
    shapes = model.backbone.output_shape()
    in_features = list(model.in_features)
    size = int(cfg.INPUT.IMAGE_SIZE)
    stride, coarsest = max((shapes[f].stride, f) for f in in_features)
    if size < stride:
        raise ConfigError(
            f"INPUT.IMAGE_SIZE {size} is smaller than the stride {stride} of the coarsest feature level "
            f"'{coarsest}' (MODEL.YOLACT.IN_FEATURES {in_features})",
            f"that level would cover {size / stride:.2g} pixel of the image",
            fix=f"use INPUT.IMAGE_SIZE {stride} or more (YOLACT uses 550), or fewer levels in "
            "MODEL.YOLACT.IN_FEATURES with as many MODEL.YOLACT.ANCHOR_SCALES",
        )


def check_datasets_registered(dataset_names, key: str = "DATASETS.TRAIN") -> None:
    """A :class:`ConfigError` naming ``key`` for a dataset name that is not registered, instead of
    ``DatasetCatalog``'s KeyError listing every registered name."""
    registered = set(DatasetCatalog.list())
    for name in dataset_names:
        if name not in registered:
            raise ConfigError(
                key, f"dataset '{name}' is not registered",
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
    dataset's classes; once per run for each dataset key (``DATASETS.TRAIN`` by the training loader once
    it has read the data, ``DATASETS.TEST`` when the trainer or ``--eval-only`` starts). A dataset whose
    metadata has no ``thing_classes`` yet (a json registered by ``DATASETS.COCO_INSTANCES`` fills them
    when loaded) is loaded once here to read them (and is a :class:`DataError` if it has no images); a
    name that is not registered is a :class:`ConfigError` naming ``key``."""
    check_datasets_registered(dataset_names, key)
    for name in dataset_names:
        if MetadataCatalog.get(name).get("thing_classes", None) is None and not DatasetCatalog.get(name):
            raise DataError(f"{key}: dataset '{name}'", "has no images")
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != cfg.MODEL.YOLACT.NUM_CLASSES:
            raise ConfigError(  # the fix stays a sentence of the cause: the words are matched as they are
                key, f"dataset '{name}' has {len(classes)} classes ({', '.join(classes[:10])}"
                f"{', ...' if len(classes) > 10 else ''}) but MODEL.YOLACT.NUM_CLASSES is "
                f"{cfg.MODEL.YOLACT.NUM_CLASSES}. Set MODEL.YOLACT.NUM_CLASSES {len(classes)}.",
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
