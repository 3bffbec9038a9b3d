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
"""
from __future__ import annotations

import functools
import json
import logging
import os
import zlib
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import cv2
import numpy as np
from pycocotools import mask as mask_util

from ...utils.atomic_io import atomic_write_bytes

logger = logging.getLogger(__name__)

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
]

# Sizes of the datasets registered by default; tune here.
DEFAULT_NUM_TRAIN = 600
DEFAULT_NUM_VAL = 100
DEFAULT_SEED = 0
DEFAULT_PREFIX = "yolact_synthetic"


class SquareSides(NamedTuple):
    """Square images whose side is drawn per image from ``[min, max]`` (inclusive)."""

    min: int
    max: int


# Square images of 160-256 px. Square because YOLACT squash-resizes every image to a square
# (docs/MODEL.md §7.1): in a non-square image a circle reaches the model as an ellipse, so "circle" and
# "ellipse" (axis ratio 0.4-0.65) would not be tellable apart from the model's input.
DEFAULT_IMAGE_SIZE = SquareSides(160, 256)

# Bump when the rendering changes so that cached datasets on disk get regenerated.
GENERATOR_VERSION = 3

# (dataset category id, name). Ids are non-contiguous on purpose (see module docstring).
_CATEGORY_TABLE = (
    (1, "circle"),
    (2, "square"),
    (3, "triangle"),
    (5, "star"),
    (7, "ellipse"),
    (9, "hexagon"),
)
# Class names in contiguous order (= sorted by dataset id, which is how load_coco_json orders
# them). A list, because Detectron2 stores ``thing_classes`` as a list and compares with ==.
SYNTHETIC_CLASSES: List[str] = [name for _, name in _CATEGORY_TABLE]
SYNTHETIC_CATEGORIES: List[Dict[str, Any]] = [
    {"id": cid, "name": name, "supercategory": "shape"} for cid, name in _CATEGORY_TABLE
]
_ID_TO_CONTIGUOUS = {cid: i for i, (cid, _) in enumerate(_CATEGORY_TABLE)}

# Object extent (diameter of the circumscribed circle) as a fraction of the shorter image side,
# drawn log-uniformly: 0.15-0.55 gives mostly medium objects. Smaller ones (down to 0.08) would at
# the main job's 192-px input be COCO-"small" and only a few prototype pixels wide (48x48
# prototypes), which a CPU-sized model trained for minutes cannot segment.
MIN_OBJECT_FRACTION = 0.15
MAX_OBJECT_FRACTION = 0.55
# An object is annotated only if this much of it stays visible: a smaller visible part (e.g. 0.2)
# leaves targets that no longer show the shape of their class.
MIN_VISIBLE_FRACTION = 0.3
MIN_VISIBLE_PIXELS = 30
# Visible fragments smaller than this (pixels) are dropped from a mask: they are rasterisation
# crumbs between occluders, not something a model could or should segment.
MIN_PIECE_PIXELS = 4
_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 95]

ImageSize = Union[int, Tuple[int, int], Tuple[Tuple[int, int], Tuple[int, int]], SquareSides]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """One independent stream per image; crc32 (not ``hash``) keeps it stable across runs."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(zlib.crc32(split.encode("utf-8")), int(index)))
    return np.random.default_rng(ss)


def _normalize_image_size(image_size: ImageSize) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Accept ``S``, ``(H, W)`` (fixed), ``((hmin, hmax), (wmin, wmax))`` (random per image) or
    ``SquareSides(min, max)`` (random square per image: the two ranges are the same and the
    renderer uses one draw for both sides)."""
    if isinstance(image_size, SquareSides):
        image_size = ((image_size.min, image_size.max), (image_size.min, image_size.max))
    elif isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    if len(image_size) != 2:
        raise ValueError(
            f"image_size must be S, (H, W), ((hmin, hmax), (wmin, wmax)) or SquareSides(min, max); got {image_size!r}"
        )
    ranges = []
    for side in image_size:
        if isinstance(side, (int, np.integer)):
            lo = hi = int(side)
        else:
            lo, hi = (int(v) for v in side)
        if lo < 32 or hi < lo:
            raise ValueError(f"invalid image side range ({lo}, {hi}); need 32 <= min <= max")
        ranges.append((lo, hi))
    return ranges[0], ranges[1]


def _background(rng: np.random.Generator, h: int, w: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Gradient + low-frequency noise + stripes + lines, so that no global threshold works."""
    c0 = rng.uniform(0, 255, 3).astype(np.float32)
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    proj = xx * np.float32(np.cos(theta)) + yy * np.float32(np.sin(theta))
    t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    img = c0 + (c1 - c0) * t[..., None]

    # Two octaves of smooth noise (coarse blotches, finer mottling).
    octaves = ((int(rng.integers(2, 6)), rng.uniform(12, 35)), (int(rng.integers(8, 17)), rng.uniform(4, 12)))
    for cells, sigma in octaves:
        grid = rng.normal(0.0, sigma, (cells, cells, 3)).astype(np.float32)
        img += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)

    if rng.random() < 0.6:
        period = rng.uniform(6, 30)
        phi = rng.uniform(0, 2 * np.pi)
        phase = (xx * np.float32(np.cos(phi)) + yy * np.float32(np.sin(phi))) * np.float32(2 * np.pi / period)
        phase += np.float32(rng.uniform(0, 2 * np.pi))
        img += (np.float32(rng.uniform(8, 25)) * np.sin(phase))[..., None] * rng.uniform(0.5, 1.0, 3).astype(np.float32)

    img = np.ascontiguousarray(img, dtype=np.float32)
    for _ in range(int(rng.integers(2, 9))):
        p0 = (int(rng.integers(-w // 4, w + w // 4)), int(rng.integers(-h // 4, h + h // 4)))
        p1 = (int(rng.integers(-w // 4, w + w // 4)), int(rng.integers(-h // 4, h + h // 4)))
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cv2.line(img, p0, p1, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    return img


def _shape_polygon(rng: np.random.Generator, name: str, cx: float, cy: float, radius: float) -> np.ndarray:
    """Vertices (N, 2) of a shape whose circumscribed circle has ``radius``."""
    rot = rng.uniform(0, 2 * np.pi)
    if name == "circle":
        ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        rx = ry = np.full_like(ang, radius)
        rot = 0.0
    elif name == "ellipse":
        ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        rx, ry = np.full_like(ang, radius), np.full_like(ang, radius * rng.uniform(0.4, 0.65))
    elif name in ("square", "triangle", "hexagon"):
        k = {"square": 4, "triangle": 3, "hexagon": 6}[name]
        ang = np.arange(k) * (2 * np.pi / k)
        rx = ry = np.full_like(ang, radius)
    elif name == "star":
        ang = np.arange(10) * (np.pi / 5)
        r = np.where(np.arange(10) % 2 == 0, radius, radius * rng.uniform(0.38, 0.5))
        rx = ry = r
    else:  # pragma: no cover - guarded by _CATEGORY_TABLE
        raise ValueError(name)
    x = rx * np.cos(ang)
    y = ry * np.sin(ang)
    c, s = np.cos(rot), np.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _fill(h: int, w: int, polygon: np.ndarray) -> np.ndarray:
    """Rasterise with 1/16 px vertex precision so small shapes keep their form."""
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(polygon * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return m.view(bool)


def _pick_colour(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A random colour that stands out from what it is painted over (shapes must be visible)."""
    under = canvas[mask].mean(axis=0)
    best, best_d = None, -1.0
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        d = float(np.linalg.norm(colour - under))
        if d > best_d:
            best, best_d = colour, d
        if d > 100:
            break
    return best


def _paint(rng, canvas, mask, colour, yy, xx, cx, cy, radius) -> None:
    """Fill with a colour plus a mild linear shading, so objects are not perfectly flat."""
    phi = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(-30, 30)
    ys, xs = yy[mask], xx[mask]
    shade = ((xs - cx) * np.cos(phi) + (ys - cy) * np.sin(phi)) * (amp / max(radius, 1.0))
    canvas[mask] = colour + shade[:, None]


def _drop_crumbs(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < MIN_PIECE_PIXELS) + 1
    if small.size == 0:
        return mask
    return mask & ~np.isin(labels, small)


def render_synthetic_sample(
    seed: int,
    split: str,
    index: int,
    image_size: ImageSize = DEFAULT_IMAGE_SIZE,
    max_objects: int = 6,
    crowd_fraction: float = 0.05,
) -> Dict[str, Any]:
    """Render image ``index`` of ``split``; also the ground truth the json is derived from.

    Public so tests (and debugging) can compare stored annotations with the exact visible masks.

    Returns a dict with ``image`` (H, W, 3 uint8 BGR), ``height``, ``width``, ``instances``
    (annotated objects in drawing order: ``category_id`` (dataset id), ``iscrowd``, ``mask``
    (bool, visible part only), ``drawn_area``) and ``num_dropped`` (objects hidden too much).
    """
    (hmin, hmax), (wmin, wmax) = _normalize_image_size(image_size)
    rng = _image_rng(seed, split, index)
    h = int(rng.integers(hmin, hmax + 1))
    w = h if isinstance(image_size, SquareSides) else int(rng.integers(wmin, wmax + 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    canvas = _background(rng, h, w, yy, xx)
    side = min(h, w)

    # Owner of each pixel: 0 = background, k = k-th painted object. Later paint wins, so
    # ``owner == k`` is exactly the visible part of object k.
    owner = np.zeros((h, w), np.uint8)
    drawn: List[Tuple[int, int, bool]] = []  # (category id, drawn area, iscrowd)

    if crowd_fraction > 0 and rng.random() < crowd_fraction:
        # A crowd: a tight cluster of small same-class shapes annotated as one iscrowd region.
        cid, name = _CATEGORY_TABLE[int(rng.integers(len(_CATEGORY_TABLE)))]
        ccx, ccy = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.3 * h, 0.7 * h)
        spread = rng.uniform(0.08, 0.15) * side
        base = None
        union = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(6, 11))):
            radius = 0.5 * rng.uniform(0.06, 0.09) * side
            r, a = spread * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            cx, cy = ccx + r * np.cos(a), ccy + r * np.sin(a)
            m = _fill(h, w, _shape_polygon(rng, name, cx, cy, radius))
            if not m.any():
                continue
            if base is None:
                base = _pick_colour(rng, canvas, m)
            colour = np.clip(base + rng.normal(0, 15, 3), 0, 255)
            _paint(rng, canvas, m, colour, yy, xx, cx, cy, radius)
            union |= m
        if union.any():
            owner[union] = len(drawn) + 1
            drawn.append((cid, int(union.sum()), True))

    for _ in range(int(rng.integers(1, max_objects + 1))):
        cid, name = _CATEGORY_TABLE[int(rng.integers(len(_CATEGORY_TABLE)))]
        frac = np.exp(rng.uniform(np.log(MIN_OBJECT_FRACTION), np.log(MAX_OBJECT_FRACTION)))
        radius = 0.5 * frac * side
        margin = 0.6 * radius  # lets shapes be cut by the border a little, not a lot
        cx = rng.uniform(margin, w - margin)
        cy = rng.uniform(margin, h - margin)
        m = _fill(h, w, _shape_polygon(rng, name, cx, cy, radius))
        if not m.any():
            continue
        _paint(rng, canvas, m, _pick_colour(rng, canvas, m), yy, xx, cx, cy, radius)
        owner[m] = len(drawn) + 1
        drawn.append((cid, int(m.sum()), False))

    canvas += np.float32(rng.uniform(2, 6)) * rng.standard_normal(canvas.shape, dtype=np.float32)
    if rng.random() < 0.5:
        canvas = cv2.GaussianBlur(canvas, (3, 3), rng.uniform(0.4, 0.8))
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)

    instances, dropped = [], 0
    for k, (cid, drawn_area, crowd) in enumerate(drawn, start=1):
        visible = _drop_crumbs(owner == k)
        area = int(visible.sum())
        if area < MIN_VISIBLE_PIXELS or area < MIN_VISIBLE_FRACTION * drawn_area:
            dropped += 1
            continue
        instances.append({"category_id": cid, "iscrowd": int(crowd), "mask": visible, "drawn_area": drawn_area})
    return {"image": image, "height": h, "width": w, "instances": instances, "num_dropped": dropped}


# --------------------------------------------------------------------------------------------
# Masks -> COCO annotations
# --------------------------------------------------------------------------------------------
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


def _mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
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
        segmentation = _mask_to_polygons(mask)
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


# --------------------------------------------------------------------------------------------
# Writing datasets
# --------------------------------------------------------------------------------------------
def _json_path(output_dir: str, split: str) -> str:
    return os.path.join(output_dir, "annotations", f"instances_{split}.json")


def _info(split, num_images, seed, image_size, max_objects, crowd_fraction) -> Dict[str, Any]:
    """Generation parameters stored in the json, so a stale cache can be recognised."""
    (hmin, hmax), (wmin, wmax) = _normalize_image_size(image_size)
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
    _normalize_image_size(image_size)  # fail at registration, not at first use
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
