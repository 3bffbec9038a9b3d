"""Data: YOLACT's augmentation and dataset mapper, and the bundled datasets (registered on import)."""
from . import datasets  # noqa: F401  (registers yolact_synthetic_train / _val)
from .dataset_mapper import YolactDatasetMapper
from .transforms import build_yolact_test_augmentation, build_yolact_train_augmentation

__all__ = ["YolactDatasetMapper", "build_yolact_train_augmentation", "build_yolact_test_augmentation"]
