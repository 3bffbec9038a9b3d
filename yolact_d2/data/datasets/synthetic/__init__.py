"""Deterministic synthetic shapes dataset for instance segmentation, written as real COCO.

Why this exists: YOLACT's training/evaluation code should be exercised end to end (loader,
mapper, losses, COCO evaluation) without downloading COCO. The generator writes an ordinary
COCO-format json plus image files and registers them through Detectron2's own
``load_coco_json``, so the synthetic data takes exactly the same code path as COCO does.

Design points:

* Deterministic: every image is rendered from its own RNG stream derived from
  ``(seed, split, image index)``, so the same call yields byte-identical files, the train and
  val splits differ, and the first N images do not depend on how many images are requested.
* Category ids in the json are deliberately non-contiguous (1, 2, 3, 5, 7, 9) so the
  dataset-id -> contiguous-id mapping of Detectron2 is exercised like with COCO.
* Occlusion: shapes are painted in order on a label map; each annotation describes only the
  part of its object that stays visible. Objects hidden almost completely are not annotated.
* Images are stored as JPEG (quality 95), like COCO: about 4x smaller and faster to write than
  PNG for these noisy textures, and still byte-reproducible with the same OpenCV build.

Modules: ``render`` (shapes, images and visible masks), ``coco_json`` (annotations and writing the
files); this one registers the datasets with Detectron2.
"""
import functools
import os
from typing import Any, Dict, List, Optional

from .coco_json import GENERATOR_VERSION, _json_path, ensure_synthetic_dataset, generate_synthetic_dataset
from .render import (
    _ID_TO_CONTIGUOUS,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SEED,
    MAX_OBJECT_FRACTION,
    MIN_OBJECT_FRACTION,
    MIN_PIECE_PIXELS,
    MIN_VISIBLE_FRACTION,
    MIN_VISIBLE_PIXELS,
    SYNTHETIC_CATEGORIES,
    SYNTHETIC_CLASSES,
    ImageSize,
    SquareSides,
    normalize_image_size,
    render_synthetic_sample,
)

__all__ = [
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_CATEGORIES",
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "DEFAULT_SEED",
    "DEFAULT_PREFIX",
    "DEFAULT_IMAGE_SIZE",
    "SquareSides",
    "render_synthetic_sample",
    "generate_synthetic_dataset",
    "ensure_synthetic_dataset",
    "load_synthetic_dataset",
    "register_synthetic_datasets",
    "GENERATOR_VERSION",
    "MIN_OBJECT_FRACTION",
    "MAX_OBJECT_FRACTION",
    "MIN_VISIBLE_FRACTION",
    "MIN_VISIBLE_PIXELS",
    "MIN_PIECE_PIXELS",
]

# Sizes of the datasets registered by default; tune here.
DEFAULT_NUM_TRAIN = 600
DEFAULT_NUM_VAL = 100
DEFAULT_PREFIX = "yolact_synthetic"


def load_synthetic_dataset(
    root: str,
    split: str,
    num_images: int,
    seed: int = DEFAULT_SEED,
    image_size: ImageSize = DEFAULT_IMAGE_SIZE,
    dataset_name: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """DatasetCatalog loader: generate lazily, then use the very same loader as COCO."""
    from detectron2.data.datasets import load_coco_json

    json_path = ensure_synthetic_dataset(root, split, num_images, seed, image_size)
    return load_coco_json(json_path, os.path.join(root, split), dataset_name)


def register_synthetic_datasets(
    root: Optional[str] = None,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = DEFAULT_SEED,
    prefix: str = DEFAULT_PREFIX,
    image_size: ImageSize = DEFAULT_IMAGE_SIZE,
) -> List[str]:
    """Register ``<prefix>_train`` and ``<prefix>_val``; cheap, idempotent, generates nothing.

    Files are generated on the first ``DatasetCatalog.get``. Metadata (including the fixed
    class list) is available immediately. ``root`` defaults to
    ``$DETECTRON2_DATASETS/<prefix>`` (``datasets/<prefix>`` if the variable is unset).
    Names that are already registered are left untouched. Returns the two dataset names.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if root is None:
        root = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), prefix)
    normalize_image_size(image_size)  # fail at registration, not at first use
    names = []
    for split, num_images in (("train", num_train), ("val", num_val)):
        name = f"{prefix}_{split}"
        names.append(name)
        if name in DatasetCatalog.list():
            continue
        DatasetCatalog.register(
            name,
            functools.partial(load_synthetic_dataset, root, split, num_images, seed, image_size, name),
        )
        MetadataCatalog.get(name).set(
            json_file=_json_path(root, split),
            image_root=os.path.join(root, split),
            evaluator_type="coco",
            thing_classes=list(SYNTHETIC_CLASSES),
            thing_dataset_id_to_contiguous_id=dict(_ID_TO_CONTIGUOUS),
        )
    return names
