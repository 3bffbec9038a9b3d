"""Datasets shipped with yolact_d2: the synthetic shapes dataset (COCO format) and registration of
user COCO datasets from the config."""
from .coco_from_config import coco_instances_dataset_dicts, register_coco_instances_list, register_datasets_from_config
from .synthetic import (
    SYNTHETIC_CATEGORIES,
    SYNTHETIC_CLASSES,
    ensure_synthetic_dataset,
    generate_synthetic_dataset,
    load_synthetic_dataset,
    register_synthetic_datasets,
    render_synthetic_sample,
)

__all__ = [
    "register_datasets_from_config",
    "register_coco_instances_list",
    "coco_instances_dataset_dicts",
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_CLASSES",
    "ensure_synthetic_dataset",
    "generate_synthetic_dataset",
    "load_synthetic_dataset",
    "register_synthetic_datasets",
    "render_synthetic_sample",
]

# Register the default synthetic splits (cheap: the data is generated on first use).
register_synthetic_datasets()
