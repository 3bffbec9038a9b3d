"""The data loaders of the trainer, with the mapper named by ``INPUT.DATASET_MAPPER_NAME``: "yolact"
(SSD augmentation and the square resize) or "detectron2" (the stock mapper).
Both register the datasets of ``DATASETS.COCO_INSTANCES`` first, so that a script that builds
``YolactTrainer`` itself needs no registration code (registering the same entries again is a no-op)."""
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.utils import comm

from ..data.dataset_mapper import YolactDatasetMapper
from ..data.datasets import register_datasets_from_config
from ..runtime.run_checks import check_datasets_registered, check_num_classes, check_train_batch
from ..utils.errors import ConfigError, DataError

__all__ = [
    "DATASET_MAPPERS", "build_dataset_mapper", "build_train_loader", "build_yolact_train_loader", "build_test_loader",
]

DATASET_MAPPERS = {"yolact": YolactDatasetMapper, "detectron2": DatasetMapper}


def build_dataset_mapper(cfg, is_train: bool):
    """The mapper of ``INPUT.DATASET_MAPPER_NAME``, for training and for evaluation alike, so that a
    misspelt name is an error in both instead of a silent fall-back to another mapper."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPERS:
        raise ConfigError(
            f"INPUT.DATASET_MAPPER_NAME {name!r}", "unknown mapper",
            fix=f"use one of {', '.join(repr(n) for n in DATASET_MAPPERS)}",
        )
    return DATASET_MAPPERS[name](cfg, is_train=is_train)


def build_train_loader(cfg):
    """Detectron2's training loader over ``DATASETS.TRAIN``; with the YOLACT mapper it stops (instead of
    looping) when every image is bad."""
    mapper = build_dataset_mapper(cfg, is_train=True)
    register_datasets_from_config(cfg)
    check_train_batch(cfg, comm.get_world_size())
    try:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
    except KeyError:
        _explain_unregistered_training_set(cfg)
        raise
    except AssertionError:
        _explain_empty_training_set(cfg)
        raise
    # the training sets' one check (registered, their classes): their metadata is complete once they are loaded
    check_num_classes(cfg, cfg.DATASETS.TRAIN)
    _stop_when_every_image_is_bad(mapper, dataset)
    return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)


def build_yolact_train_loader(dataset, *, mapper, total_batch_size: int, **kwargs):
    """Detectron2's ``build_detection_train_loader(dataset=..., mapper=..., total_batch_size=..., **kwargs)``
    for LazyConfigs, with what :func:`build_train_loader` adds: with the YOLACT mapper, the loader stops
    (instead of looping) when every image is bad."""
    _stop_when_every_image_is_bad(mapper, dataset)
    return build_detection_train_loader(dataset=dataset, mapper=mapper, total_batch_size=total_batch_size, **kwargs)


def _stop_when_every_image_is_bad(mapper, dataset) -> None:
    if isinstance(mapper, YolactDatasetMapper):
        mapper.dataset_size = len(dataset)  # that many unusable images in a row: an error, not a loop


def _explain_unregistered_training_set(cfg) -> None:
    """After ``DatasetCatalog`` refused a name with a KeyError that lists every registered dataset: a
    :class:`ConfigError` naming ``DATASETS.TRAIN`` and the name, when one is not registered."""
    try:
        check_datasets_registered(cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
    except ConfigError as e:
        raise e from None


def _explain_empty_training_set(cfg) -> None:
    """After Detectron2 asserted that the training set is empty: a :class:`DataError` naming the
    dataset that has no images, or saying that no image has a usable annotation. Decided from the
    data (loaded again, on this error path only), not from the assertion's text."""
    dicts = {name: DatasetCatalog.get(name) for name in cfg.DATASETS.TRAIN}
    for name, records in dicts.items():
        if not records:
            raise DataError(f"DATASETS.TRAIN: dataset '{name}'", "has no images") from None
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS and not any(
        any(not a.get("iscrowd", 0) for a in r.get("annotations", [])) for rs in dicts.values() for r in rs
    ):
        names = ", ".join(f"'{n}'" for n in dicts)
        raise DataError(
            "DATASETS.TRAIN", f"no image of {names} has an annotation to train on (all have none or only crowd ones)",
            fix="check the json's 'annotations' and their image ids; DATALOADER.FILTER_EMPTY_ANNOTATIONS False "
            "trains on background-only images",
        ) from None


def build_test_loader(cfg, dataset_name: str):
    mapper = build_dataset_mapper(cfg, is_train=False)
    register_datasets_from_config(cfg)
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper)
