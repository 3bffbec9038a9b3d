"""Geometric transforms of YOLACT's pipeline on float32 images: the zoom-out ``Expand`` onto a
mean-filled canvas and the cv2 resizes (squash, or longest side for the
``keep_aspect`` test mode). The mirror step is Detectron2's ``RandomFlip``."""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
from fvcore.transforms.transform import CropTransform, NoOpTransform, Transform

from detectron2.data.transforms import Augmentation

from .base import to_float32

__all__ = [
    "ExpandTransform",
    "RandomExpand",
    "CV2ResizeTransform",
    "SquashResize",
    "ResizeLongestSide",
    "keep_aspect_output_shape",
]


class ExpandTransform(Transform):
    """Place the image on a ``canvas_h x canvas_w`` canvas filled with ``fill`` at (left, top).

    The image becomes float32 (so a non-integer mean is stored exactly); segmentation masks are
    zero-padded and keep their dtype; coordinates are shifted by (left, top).

    Args:
        left, top (int): position of the image's top-left pixel on the canvas.
        canvas_w, canvas_h (int): canvas size; must hold the image at (left, top).
        fill (sequence of float or float): per-channel fill value, in the image's channel order.
        orig_w, orig_h (int, optional): the input size, only needed for :meth:`inverse`.
    """

    def __init__(
        self,
        left: int,
        top: int,
        canvas_w: int,
        canvas_h: int,
        fill,
        orig_w: Optional[int] = None,
        orig_h: Optional[int] = None,
    ):
        super().__init__()
        self._set_attributes(locals())

    def _place(self, img: np.ndarray, canvas: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        if self.top + h > self.canvas_h or self.left + w > self.canvas_w:
            raise ValueError(
                f"ExpandTransform: a {w}x{h} image at ({self.left}, {self.top}) does not fit "
                f"a {self.canvas_w}x{self.canvas_h} canvas."
            )
        canvas[self.top : self.top + h, self.left : self.left + w] = img
        return canvas

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        img = to_float32(img)
        canvas = np.empty((self.canvas_h, self.canvas_w) + img.shape[2:], dtype=np.float32)
        canvas[...] = np.asarray(self.fill, dtype=np.float32)
        return self._place(img, canvas)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        canvas = np.zeros(
            (self.canvas_h, self.canvas_w) + segmentation.shape[2:], dtype=segmentation.dtype
        )
        return self._place(segmentation, canvas)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64 if coords.dtype.kind != "f" else coords.dtype)
        coords[:, 0] += self.left
        coords[:, 1] += self.top
        return coords

    def inverse(self) -> Transform:
        if self.orig_w is None or self.orig_h is None:
            raise ValueError("ExpandTransform.inverse needs orig_w and orig_h.")
        return CropTransform(
            self.left, self.top, self.orig_w, self.orig_h, orig_w=self.canvas_w,
            orig_h=self.canvas_h,
        )


class RandomExpand(Augmentation):
    """The original ``Expand``: with probability ``prob``, ratio r ~ U(1, max_ratio), canvas
    ``int(H*r) x int(W*r)`` filled with ``mean``, image at ``(int(left), int(top))`` with
    left ~ U(0, W*r - W), top ~ U(0, H*r - H).

    Args:
        mean: per-channel fill value in the image's channel order (cfg.MODEL.PIXEL_MEAN is given
            in cfg.INPUT.FORMAT order, which is the mapper's image order).
    """

    def __init__(self, mean: Sequence[float], prob: float = 0.5, max_ratio: float = 4.0):
        super().__init__()
        mean = tuple(float(m) for m in mean)
        self._init(locals())

    def get_transform(self, image) -> Transform:
        if not np.random.rand() < self.prob:
            return NoOpTransform()
        if image.ndim == 3 and image.shape[2] != len(self.mean):
            raise ValueError(
                f"RandomExpand: mean has {len(self.mean)} values for a {image.shape[2]}-channel "
                "image."
            )
        h, w = image.shape[:2]
        ratio = np.random.uniform(1.0, self.max_ratio)
        left = np.random.uniform(0.0, w * ratio - w)
        top = np.random.uniform(0.0, h * ratio - h)
        return ExpandTransform(
            int(left), int(top), int(w * ratio), int(h * ratio), fill=self.mean, orig_w=w,
            orig_h=h,
        )


class CV2ResizeTransform(Transform):
    """Resize an ``h x w`` image to ``new_h x new_w`` with ``cv2.resize`` on float32.

    Matches the original's ``cv2.resize(img, (new_w, new_h))`` (INTER_LINEAR by default) on its
    float32 image; the output is float32, not clipped or rounded. Coordinates are scaled by
    (new_w / w, new_h / h).

    Segmentation (``apply_segmentation``), according to ``mask_interp``:

    * ``"linear"`` (default, for binary instance masks): bilinear resize of the 0/1 mask as
      float32, then ``> 0.5``, returned in the input dtype. The original resizes its float masks
      with cv2 bilinear and binarises with ``> 0.5`` later in the loss.
    * ``"nearest"``: nearest-neighbour (label maps).
    """

    def __init__(
        self,
        h: int,
        w: int,
        new_h: int,
        new_w: int,
        interp: int = cv2.INTER_LINEAR,
        mask_interp: str = "linear",
    ):
        super().__init__()
        if mask_interp not in ("linear", "nearest"):
            raise ValueError(f"mask_interp must be 'linear' or 'nearest', got {mask_interp!r}.")
        self._set_attributes(locals())

    def _check_size(self, img: np.ndarray) -> None:
        if tuple(img.shape[:2]) != (self.h, self.w):
            raise ValueError(
                f"CV2ResizeTransform expects a {self.h}x{self.w} input, got "
                f"{img.shape[0]}x{img.shape[1]}."
            )

    def _resize(self, img: np.ndarray, interp: int) -> np.ndarray:
        out = cv2.resize(np.ascontiguousarray(img), (self.new_w, self.new_h), interpolation=interp)
        if img.ndim == 3 and out.ndim == 2:  # cv2 drops a trailing channel axis of size 1
            out = out[:, :, None]
        return out

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        self._check_size(img)
        return self._resize(to_float32(img), self.interp)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        self._check_size(segmentation)
        dtype = segmentation.dtype
        if self.mask_interp == "linear":
            out = self._resize(segmentation.astype(np.float32), cv2.INTER_LINEAR) > 0.5
            return out.astype(dtype)
        if dtype.kind == "b":  # numpy bool
            return self._resize(segmentation.astype(np.uint8), cv2.INTER_NEAREST).astype(bool)
        return self._resize(segmentation, cv2.INTER_NEAREST)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64 if coords.dtype.kind != "f" else coords.dtype)
        coords[:, 0] *= self.new_w / self.w
        coords[:, 1] *= self.new_h / self.h
        return coords

    def inverse(self) -> Transform:
        return CV2ResizeTransform(
            self.new_h, self.new_w, self.h, self.w, interp=self.interp, mask_interp=self.mask_interp
        )


class SquashResize(Augmentation):
    """Resize to ``size x size`` ignoring the aspect ratio (YOLACT's training and default
    test-time resize), with :class:`CV2ResizeTransform`."""

    def __init__(self, size: int, interp: int = cv2.INTER_LINEAR, mask_interp: str = "linear"):
        super().__init__()
        self._init(locals())

    def get_transform(self, image) -> Transform:
        h, w = image.shape[:2]
        return CV2ResizeTransform(h, w, self.size, self.size, self.interp, self.mask_interp)


def keep_aspect_output_shape(h: int, w: int, size: int) -> Tuple[int, int]:
    """(new_h, new_w) with the longer side equal to ``size`` and the aspect ratio kept; the
    shorter side is rounded to the nearest integer (at least 1)."""
    scale = size / max(h, w)
    new_h = size if h >= w else max(1, int(h * scale + 0.5))
    new_w = size if w >= h else max(1, int(w * scale + 0.5))
    return new_h, new_w


class ResizeLongestSide(Augmentation):
    """Resize so the longer side equals ``size``, aspect ratio kept, no padding (the
    ``keep_aspect`` test-time mode), with :class:`CV2ResizeTransform`."""

    def __init__(self, size: int, interp: int = cv2.INTER_LINEAR, mask_interp: str = "linear"):
        super().__init__()
        self._init(locals())

    def get_transform(self, image) -> Transform:
        h, w = image.shape[:2]
        new_h, new_w = keep_aspect_output_shape(h, w, self.size)
        return CV2ResizeTransform(h, w, new_h, new_w, self.interp, self.mask_interp)
