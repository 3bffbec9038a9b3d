"""The logic of the web demo (demo/app.py), without the web framework, so that it can be tested.

The model runs once per image (:func:`predict`); every display change (score threshold, class
filter, mask opacity) only re-selects (:func:`select`) and redraws (:func:`render`) the cached
:class:`Prediction`. Downloads: :func:`to_coco_results` gives the detections in the COCO results
format (what ``COCO.loadRes`` reads), masks as RLE.
"""
import os
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..data.detection_utils import BadImageError, read_image_file
from ..utils.errors import DataError, first_line
from .visualization import draw_instances, instance_colors

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Prediction",
    "read_upload",
    "predict",
    "select",
    "render",
    "detection_rows",
    "to_coco_results",
    "TABLE_HEADERS",
]

# Uploads larger than this are refused before decoding (a 40-megapixel image already needs
# ~120 MB as pixels plus one full-size boolean mask per detection).
DEFAULT_MAX_PIXELS = 40_000_000
TABLE_HEADERS = ["#", "class", "score", "x0", "y0", "x1", "y1", "mask area (px)"]


@dataclass
class Prediction:
    """The detections of one image as CPU numpy arrays (cached between display changes)."""

    boxes: np.ndarray  # (N, 4) float32, XYXY pixels of the original image
    scores: np.ndarray  # (N,) float32
    classes: np.ndarray  # (N,) int64, contiguous class ids
    masks: np.ndarray  # (N, H, W) bool
    seconds: float  # model time for this image (preprocess + network + post-processing)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def image_size(self) -> Tuple[int, int]:
        return tuple(self.masks.shape[1:])


def read_upload(path: str, max_pixels: int = DEFAULT_MAX_PIXELS, name: Optional[str] = None):
    """An uploaded file as a BGR uint8 image, plus notes on what was converted.

    Raises :class:`DataError` naming the file for anything that is not a usable image: not an
    image, unreadable, or more than ``max_pixels`` pixels (checked from the header, before
    decoding). Grayscale images are replicated to 3 channels; an alpha channel is dropped.
    """
    from PIL import Image

    name = name or os.path.basename(path)
    try:
        with Image.open(path) as image:
            mode, (width, height) = image.mode, image.size
            transparent = mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    except Image.DecompressionBombError as e:  # Pillow refuses to open more than ~179 megapixels
        raise DataError(
            f"'{name}'", f"is too large ({first_line(e).split(',')[0]}); this demo accepts at most "
            f"{max_pixels / 1e6:g} megapixels", "downscale it first",
        ) from None
    except Exception:  # noqa: BLE001 (Pillow raises UnidentifiedImageError, OSError, ...)
        raise DataError(
            f"'{name}'", "is not an image Pillow can read", "upload a JPEG, PNG, BMP, TIFF or WebP file"
        ) from None
    if width * height > max_pixels:
        raise DataError(
            f"'{name}'",
            f"is {width}x{height} = {width * height / 1e6:.1f} megapixels, more than the {max_pixels / 1e6:g} "
            "this demo accepts",
            "downscale it first, or start the app with a larger --max-pixels",
        )
    try:
        bgr = read_image_file(path, "BGR")
    except BadImageError as e:
        raise DataError(f"'{name}'", str(e).replace(path, name), "upload another image") from None
    notes = []
    if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L"):
        notes.append(f"grayscale image ({mode}): used as 3 identical colour channels")
    if transparent:
        notes.append(f"image with transparency ({mode}): the alpha channel is ignored")
    return bgr, notes


def predict(predictor, bgr: np.ndarray) -> Prediction:
    """Run a ``YolactPredictor`` (or ``YolactONNXPredictor``) once and keep the results on the CPU."""
    start = time.perf_counter()
    instances = predictor(bgr)["instances"].to("cpu")
    seconds = time.perf_counter() - start
    return Prediction(
        boxes=instances.pred_boxes.tensor.numpy().astype(np.float32),
        scores=instances.scores.numpy().astype(np.float32),
        classes=instances.pred_classes.numpy().astype(np.int64),
        masks=instances.pred_masks.numpy().astype(bool),
        seconds=seconds,
    )


def select(pred: Prediction, threshold: float, classes: Optional[Iterable[int]] = None) -> np.ndarray:
    """Indices (in score order) of the detections scoring more than ``threshold`` (the model's own
    ``score > SCORE_THRESH_TEST`` rule) whose class is in ``classes`` (None: every class)."""
    keep = pred.scores > threshold
    if classes is not None:
        keep &= np.isin(pred.classes, np.asarray(list(classes), dtype=np.int64))
    return np.nonzero(keep)[0]


def _instances(pred: Prediction, keep: np.ndarray):
    import torch

    from detectron2.structures import Boxes, Instances

    instances = Instances(pred.image_size)
    instances.pred_boxes = Boxes(torch.from_numpy(pred.boxes[keep]))
    instances.scores = torch.from_numpy(pred.scores[keep])
    instances.pred_classes = torch.from_numpy(pred.classes[keep])
    instances.pred_masks = torch.from_numpy(pred.masks[keep])
    return instances


def render(
    rgb: np.ndarray, pred: Prediction, keep: np.ndarray, metadata, mask_alpha: float = 0.5, min_side: int = 0
) -> np.ndarray:
    """The overlay (RGB uint8) of the kept detections; each detection keeps its colour (by its
    index in ``pred``) whatever the filters. Images whose longer side is under ``min_side`` are
    drawn enlarged (integer factor) so that the labels stay readable."""
    colors = instance_colors(len(pred))
    return draw_instances(
        rgb, _instances(pred, keep), metadata, mask_alpha=mask_alpha, colors=[colors[i] for i in keep],
        scale=float(max(1, -(-min_side // max(rgb.shape[:2])))),
    )


def detection_rows(pred: Prediction, keep: np.ndarray, class_names: Sequence[str]) -> List[list]:
    """One row per kept detection, columns :data:`TABLE_HEADERS` (box rounded to 0.1 px)."""
    rows = []
    for i in keep:
        x0, y0, x1, y1 = (round(float(v), 1) for v in pred.boxes[i])
        name = class_names[pred.classes[i]] if pred.classes[i] < len(class_names) else str(pred.classes[i])
        rows.append([int(i), name, round(float(pred.scores[i]), 4), x0, y0, x1, y1, int(pred.masks[i].sum())])
    return rows


def to_coco_results(
    pred: Prediction, keep: np.ndarray, image_id: int = 1, metadata=None
) -> List[Dict]:
    """The kept detections in the COCO results format (``image_id``, ``category_id``, ``bbox``
    XYWH, ``score``, ``segmentation`` as RLE with ``counts`` a string), as Detectron2's
    ``instances_to_coco_json``. ``category_id`` is the dataset's id when ``metadata`` maps
    dataset ids to contiguous ids (``thing_dataset_id_to_contiguous_id``), else the contiguous
    class id; ``category_name`` is added when the metadata names the classes."""
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    results = instances_to_coco_json(_instances(pred, keep), image_id)
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None) if metadata is not None else None
    to_dataset = {v: k for k, v in mapping.items()} if mapping else None
    names = metadata.get("thing_classes", None) if metadata is not None else None
    for result in results:
        contiguous = result["category_id"]
        if to_dataset is not None:
            result["category_id"] = int(to_dataset[contiguous])
        if names is not None and contiguous < len(names):
            result["category_name"] = names[contiguous]
    return results
