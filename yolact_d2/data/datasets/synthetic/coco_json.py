"""The synthetic dataset as COCO files: visible masks to COCO annotations (polygons, RLE for
crowds), JPEG images and the json, written atomically so that an interrupted generation is
regenerated rather than read (docs/RELIABILITY.md).
"""
import json
import logging
import os
from typing import Any, Dict, List, Optional

import cv2
import numpy as np
from pycocotools import mask as mask_util

from ....utils.atomic_io import atomic_write_bytes
from .render import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SEED,
    SYNTHETIC_CATEGORIES,
    ImageSize,
    SquareSides,
    normalize_image_size,
    render_synthetic_sample,
)

__all__ = ["generate_synthetic_dataset", "ensure_synthetic_dataset", "GENERATOR_VERSION"]

logger = logging.getLogger(__name__)

# Bump when the rendering or the annotations change so that cached datasets on disk get regenerated.
GENERATOR_VERSION = 3
_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 95]


def _cut_holes(crop: np.ndarray) -> np.ndarray:
    """Open every hole to the outside with a 1-px straight cut.

    COCO polygons cannot have holes (pycocotools unions them), yet a visible part can enclose
    a smaller occluder. Cutting the shortest straight path from the hole to the crop border
    (which is padding, i.e. outside) turns the hole into outside at the cost of a few pixels.
    ``crop`` is uint8 with a 1-px zero border.
    """
    for _ in range(32):
        n, labels = cv2.connectedComponents((crop == 0).astype(np.uint8), connectivity=4)
        if n <= 2:  # foreground + the single outside component
            break
        outside = labels[0, 0]
        hole = next(lbl for lbl in range(1, n) if lbl != outside)
        y, x = np.unravel_index(int(np.argmax(labels == hole)), labels.shape)
        paths = (
            (slice(0, y), slice(x, x + 1)),
            (slice(y + 1, None), slice(x, x + 1)),
            (slice(y, y + 1), slice(0, x)),
            (slice(y, y + 1), slice(x + 1, None)),
        )
        best = min(paths, key=lambda p: int(crop[p].sum()))
        crop[best] = 0
    return crop


def _mask_to_exact_polygons(mask: np.ndarray) -> List[List[float]]:
    """Polygons (COCO float coordinates, pixel i spans [i, i+1]) that rasterise back to ``mask``.

    Contours are traced on a 2x nearest-upsampled crop: the traced points then lie a quarter
    pixel inside the pixel edges, so pycocotools reproduces the mask instead of losing the
    half-pixel boundary ring that tracing pixel centres would lose.
    """
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    crop = np.zeros((y1 - y0 + 3, x1 - x0 + 3), np.uint8)
    crop[1:-1, 1:-1] = mask[y0 : y1 + 1, x0 : x1 + 1]
    crop = _cut_holes(crop)
    up = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for c in contours:
        if len(c) < 3 or cv2.contourArea(c) < 1.0:
            continue
        pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0 + (x0 - 1, y0 - 1)
        polygons.append([float(v) for v in pts.ravel()])
    return polygons


def _annotation(instance: Dict[str, Any], ann_id: int, image_id: int) -> Optional[Dict[str, Any]]:
    mask = instance["mask"]
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]
    if instance["iscrowd"]:
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        segmentation: Any = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    else:
        segmentation = _mask_to_exact_polygons(mask)
        if not segmentation:
            return None
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": int(instance["category_id"]),
        "bbox": bbox,
        "area": float(len(xs)),
        "iscrowd": int(instance["iscrowd"]),
        "segmentation": segmentation,
    }


def _json_path(output_dir: str, split: str) -> str:
    return os.path.join(output_dir, "annotations", f"instances_{split}.json")


def _info(split, num_images, seed, image_size, max_objects, crowd_fraction) -> Dict[str, Any]:
    """Generation parameters stored in the json, so a stale cache can be recognised."""
    (hmin, hmax), (wmin, wmax) = normalize_image_size(image_size)
    return {
        "description": "yolact_d2 synthetic shapes",
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "num_images": int(num_images),
        "seed": int(seed),
        "image_size": [[hmin, hmax], [wmin, wmax]],
        "square": isinstance(image_size, SquareSides),
        "max_objects": int(max_objects),
        "crowd_fraction": float(crowd_fraction),
    }


def generate_synthetic_dataset(
    output_dir: str,
    split: str,
    num_images: int,
    seed: int = DEFAULT_SEED,
    image_size: ImageSize = DEFAULT_IMAGE_SIZE,
    max_objects: int = 6,
    crowd_fraction: float = 0.05,
) -> str:
    """Write ``output_dir/<split>/NNNNNN.jpg`` and ``output_dir/annotations/instances_<split>.json``.

    ``seed`` is a base seed; each (split, image) pair gets its own derived stream, so splits
    differ and repeated calls are byte-identical. ``image_size`` is ``S``, ``(H, W)``,
    ``((hmin, hmax), (wmin, wmax))`` or ``SquareSides(min, max)``. The json is written last and atomically: its presence
    means the whole split is complete. Returns the json path.
    """
    if num_images < 1:
        raise ValueError("num_images must be >= 1")
    if not 1 <= max_objects <= 250:
        raise ValueError("max_objects must be in [1, 250]")
    info = _info(split, num_images, seed, image_size, max_objects, crowd_fraction)
    image_dir = os.path.join(output_dir, split)
    json_path = _json_path(output_dir, split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    logger.info("generating %d images into %s", num_images, image_dir)

    images, annotations = [], []
    for index in range(num_images):
        sample = render_synthetic_sample(seed, split, index, image_size, max_objects, crowd_fraction)
        image_id = index + 1
        file_name = f"{index:06d}.jpg"
        ok, encoded = cv2.imencode(".jpg", sample["image"], _JPEG_PARAMS)
        if not ok:  # pragma: no cover
            raise RuntimeError("JPEG encoding failed")
        atomic_write_bytes(os.path.join(image_dir, file_name), encoded.tobytes(), sync=False)
        images.append({"id": image_id, "file_name": file_name, "height": sample["height"], "width": sample["width"]})
        for instance in sample["instances"]:
            ann = _annotation(instance, len(annotations) + 1, image_id)
            if ann is not None:
                annotations.append(ann)

    coco = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in SYNTHETIC_CATEGORIES],
    }
    atomic_write_bytes(json_path, json.dumps(coco, separators=(",", ":")).encode("utf-8"))
    return json_path


def ensure_synthetic_dataset(
    root: str,
    split: str,
    num_images: int,
    seed: int = DEFAULT_SEED,
    image_size: ImageSize = DEFAULT_IMAGE_SIZE,
    max_objects: int = 6,
    crowd_fraction: float = 0.05,
) -> str:
    """Return the split's json path, generating the split first if it is missing or stale.

    A split is reused only if its json exists (written last, atomically) and was produced with
    the same parameters, so changing e.g. ``DEFAULT_NUM_TRAIN`` does not silently reuse old data.
    """
    json_path = _json_path(root, split)
    expected = _info(split, num_images, seed, image_size, max_objects, crowd_fraction)
    if os.path.isfile(json_path):
        try:
            with open(json_path, "rb") as f:
                found = json.load(f).get("info")
        except (OSError, ValueError):
            found = None
        if found == expected:
            return json_path
        logger.warning("synthetic dataset %s is stale or unreadable; regenerating", json_path)
    return generate_synthetic_dataset(root, split, num_images, seed, image_size, max_objects, crowd_fraction)
