"""Register COCO-format datasets listed in ``DATASETS.COCO_INSTANCES`` (name, json, image root),
so a user trains on their own data from the command line without writing code."""
import os

from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

__all__ = ["register_datasets_from_config"]


def register_datasets_from_config(cfg) -> list:
    """Registers every entry of ``cfg.DATASETS.COCO_INSTANCES`` not registered yet; returns the names.
    Raises a ValueError naming the key and entry when an entry is malformed or a path is missing."""
    names = []
    for i, entry in enumerate(cfg.DATASETS.COCO_INSTANCES):
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise ValueError(
                f"DATASETS.COCO_INSTANCES[{i}] must be [name, json_file, image_root], got {entry!r}"
            )
        name, json_file, image_root = (str(x) for x in entry)
        if not os.path.isfile(json_file):
            raise ValueError(f"DATASETS.COCO_INSTANCES[{i}] ('{name}'): json file not found: {json_file}")
        if not os.path.isdir(image_root):
            raise ValueError(f"DATASETS.COCO_INSTANCES[{i}] ('{name}'): image root not found: {image_root}")
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, json_file, image_root)
        names.append(name)
    return names
