"""Rendering of the synthetic shapes images and of the exact visible mask of every object
(docs/PARITY.md uses the same renderer for the accuracy comparison).

Every image is drawn from its own RNG stream derived from ``(seed, split, image index)``, so the
same call gives the same pixels, the train and val splits differ and the first N images do not
depend on how many are requested. Shapes are painted in order on a label map, so each object's
mask is exactly the part of it that stays visible.
"""
import zlib
from typing import Any, Dict, List, NamedTuple, Tuple, Union

import cv2
import numpy as np

__all__ = [
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_CATEGORIES",
    "DEFAULT_SEED",
    "DEFAULT_IMAGE_SIZE",
    "ImageSize",
    "SquareSides",
    "render_synthetic_sample",
]

DEFAULT_SEED = 0


class SquareSides(NamedTuple):
    """Square images whose side is drawn per image from ``[min, max]`` (inclusive)."""

    min: int
    max: int


# Square images of 160-256 px. Square because YOLACT squash-resizes every image to a square: in a
# non-square image a circle reaches the model as an ellipse, so "circle" and
# "ellipse" (axis ratio 0.4-0.65) would not be tellable apart from the model's input.
DEFAULT_IMAGE_SIZE = SquareSides(160, 256)

# (dataset category id, name). Ids are non-contiguous on purpose (see the package docstring).
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

ImageSize = Union[int, Tuple[int, int], Tuple[Tuple[int, int], Tuple[int, int]], SquareSides]


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """One independent stream per image; crc32 (not ``hash``) keeps it stable across runs."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(zlib.crc32(split.encode("utf-8")), int(index)))
    return np.random.default_rng(ss)


def normalize_image_size(image_size: ImageSize) -> Tuple[Tuple[int, int], Tuple[int, int]]:
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


def _random_category(rng: np.random.Generator) -> Tuple[int, str]:
    return _CATEGORY_TABLE[int(rng.integers(len(_CATEGORY_TABLE)))]


def _draw_crowd(rng, canvas, yy, xx, side) -> Tuple[int, np.ndarray]:
    """A tight cluster of small same-class shapes, annotated as one iscrowd region; returns its
    category id and the union of its shapes (empty when none fell inside the image)."""
    h, w = canvas.shape[:2]
    cid, name = _random_category(rng)
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
    return cid, union


def _draw_object(rng, canvas, yy, xx, side) -> Tuple[int, np.ndarray]:
    """One shape of a random class, size and position; returns its category id and its mask
    (empty when it fell outside the image, then nothing is painted)."""
    h, w = canvas.shape[:2]
    cid, name = _random_category(rng)
    frac = np.exp(rng.uniform(np.log(MIN_OBJECT_FRACTION), np.log(MAX_OBJECT_FRACTION)))
    radius = 0.5 * frac * side
    margin = 0.6 * radius  # lets shapes be cut by the border a little, not a lot
    cx = rng.uniform(margin, w - margin)
    cy = rng.uniform(margin, h - margin)
    m = _fill(h, w, _shape_polygon(rng, name, cx, cy, radius))
    if m.any():
        _paint(rng, canvas, m, _pick_colour(rng, canvas, m), yy, xx, cx, cy, radius)
    return cid, m


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
    (hmin, hmax), (wmin, wmax) = normalize_image_size(image_size)
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
    shapes = []
    if crowd_fraction > 0 and rng.random() < crowd_fraction:
        shapes.append((*_draw_crowd(rng, canvas, yy, xx, side), True))
    for _ in range(int(rng.integers(1, max_objects + 1))):
        shapes.append((*_draw_object(rng, canvas, yy, xx, side), False))
    for cid, m, crowd in shapes:
        if m.any():
            owner[m] = len(drawn) + 1
            drawn.append((cid, int(m.sum()), crowd))

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
