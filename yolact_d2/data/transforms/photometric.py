"""The original ``PhotometricDistort``: brightness, contrast, saturation and
hue on float32, without clipping."""
from typing import Optional, Tuple

import cv2
import numpy as np
from fvcore.transforms.transform import NoOpTransform, Transform

from detectron2.data.transforms import Augmentation

__all__ = ["PhotometricDistortTransform", "RandomPhotometricDistort", "shift_hue"]

_HSV_CODES = {
    "BGR": (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR),
    "RGB": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB),
}


def _check_image_format(image_format: str, who: str) -> None:
    if image_format not in _HSV_CODES:
        raise ValueError(f"{who} supports image_format 'BGR' or 'RGB', got {image_format!r}.")


def _check_color_image(img: np.ndarray, who: str) -> None:
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{who} expects an HxWx3 colour image, got shape {tuple(img.shape)}.")


def shift_hue(hue: np.ndarray, delta: float) -> np.ndarray:
    """``hue + delta`` (float32, OpenCV degrees) wrapped like the original ``RandomHue``:
    values ``> 360`` lose 360, values ``< 0`` gain 360 (so 360 itself stays 360; for |delta| <= 360
    and hue in [0, 360] the result is in [0, 360])."""
    out = np.asarray(hue, dtype=np.float32) + np.float32(delta)
    out[out > 360.0] -= 360.0
    out[out < 0.0] += 360.0
    return out


class PhotometricDistortTransform(Transform):
    """The original ``PhotometricDistort`` with fixed parameters; geometry is untouched.

    Applied in this order on a float32 copy of the image (no clipping anywhere)::

        img += brightness_delta                          (if not None)
        img *= contrast_alpha                            (if not None and contrast_first)
        -> HSV (OpenCV float: H degrees 0..360, S 0..1, V 0..255)
        S *= saturation_factor                           (if not None)
        H += hue_delta; H > 360 -> H - 360; H < 0 -> H + 360   (if not None)
        -> back to the image's channel order
        img *= contrast_alpha                            (if not None and not contrast_first)

    The HSV round trip is always done, as in the original (it is not bit-exact, ~1e-5 relative).
    Hue wrapping follows the original exactly (strict ``> 360`` / ``< 0``, so the result lies in
    [0, 360]; OpenCV treats H = 360 like H = 0).

    Args:
        image_format: "BGR" or "RGB", the channel order of the images this transform gets.
    """

    def __init__(
        self,
        brightness_delta: Optional[float] = None,
        contrast_alpha: Optional[float] = None,
        contrast_first: bool = True,
        saturation_factor: Optional[float] = None,
        hue_delta: Optional[float] = None,
        image_format: str = "BGR",
    ):
        super().__init__()
        _check_image_format(image_format, "PhotometricDistortTransform")
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        _check_color_image(img, "PhotometricDistortTransform")
        img = np.array(img, dtype=np.float32, copy=True)
        to_hsv, from_hsv = _HSV_CODES[self.image_format]
        if self.brightness_delta is not None:
            img += np.float32(self.brightness_delta)
        if self.contrast_first and self.contrast_alpha is not None:
            img *= np.float32(self.contrast_alpha)
        hsv = cv2.cvtColor(img, to_hsv)
        if self.saturation_factor is not None:
            hsv[:, :, 1] *= np.float32(self.saturation_factor)
        if self.hue_delta is not None:
            hsv[:, :, 0] = shift_hue(hsv[:, :, 0], self.hue_delta)
        img = cv2.cvtColor(hsv, from_hsv)
        if not self.contrast_first and self.contrast_alpha is not None:
            img *= np.float32(self.contrast_alpha)
        return img

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        return NoOpTransform()


class RandomPhotometricDistort(Augmentation):
    """Draws the parameters of :class:`PhotometricDistortTransform` like the original.

    Brightness (p=``prob``, add U(-brightness_delta, brightness_delta)); then with p=0.5 the
    "contrast first" branch ``[contrast, ->HSV, saturation, hue, ->RGB/BGR]``, else
    ``[->HSV, saturation, hue, ->RGB/BGR, contrast]``; contrast (p=``prob``, x U(*contrast_range)),
    saturation (p=``prob``, S x U(*saturation_range)), hue (p=``prob``,
    H += U(-hue_delta, hue_delta)).
    Random numbers are drawn in the original's order (brightness, branch, then the branch's ops).
    """

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: Tuple[float, float] = (0.5, 1.5),
        saturation_range: Tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18.0,
        prob: float = 0.5,
        image_format: str = "BGR",
    ):
        super().__init__()
        _check_image_format(image_format, "RandomPhotometricDistort")
        self._init(locals())

    def _maybe(self, low: float, high: float) -> Optional[float]:
        if np.random.rand() < self.prob:
            return float(np.random.uniform(low, high))
        return None

    def get_transform(self, image) -> Transform:
        brightness = self._maybe(-self.brightness_delta, self.brightness_delta)
        contrast_first = bool(np.random.rand() < 0.5)
        contrast = self._maybe(*self.contrast_range) if contrast_first else None
        saturation = self._maybe(*self.saturation_range)
        hue = self._maybe(-self.hue_delta, self.hue_delta)
        if not contrast_first:
            contrast = self._maybe(*self.contrast_range)
        return PhotometricDistortTransform(
            brightness_delta=brightness,
            contrast_alpha=contrast,
            contrast_first=contrast_first,
            saturation_factor=saturation,
            hue_delta=hue,
            image_format=self.image_format,
        )
