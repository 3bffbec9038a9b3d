"""YOLACT anchors ("priors"; docs/MODEL.md).

Detectron2's ``DefaultAnchorGenerator`` cannot express them: YOLACT places anchor centres at
``(i + 0.5) / W_level`` of the image (at 550 px the P3 pitch is 550/69 = 7.97, not 8), its aspect
ratio is width/height, and the v1 configs make every anchor square. Anchors are returned in
*relative* ``(cx, cy, w, h)`` coordinates of the (padded) network input, in the original order
(level, row, column, anchor), which is the layout the prediction head's outputs are flattened into.
"""
import math
from typing import List, Sequence, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY, build_anchor_generator

from ..utils.errors import ConfigError

__all__ = ["YolactAnchorGenerator", "build_yolact_anchor_generator", "anchor_aspect_ratios_per_level"]


def anchor_aspect_ratios_per_level(aspect_ratios, num_levels: int) -> list:
    """``MODEL.YOLACT.ANCHOR_ASPECT_RATIOS`` for each of ``num_levels`` levels: one list shared by
    all levels, or one list per level."""
    aspect_ratios = list(aspect_ratios)
    if len(aspect_ratios) not in (1, num_levels):
        raise ConfigError(
            f"MODEL.YOLACT.ANCHOR_ASPECT_RATIOS has {len(aspect_ratios)} levels",
            f"it needs 1 (shared) or {num_levels} (one per level of MODEL.YOLACT.ANCHOR_SCALES and "
            "MODEL.YOLACT.IN_FEATURES)", fix="give one list of aspect ratios for all levels, or one per level",
        )
    return aspect_ratios * num_levels if len(aspect_ratios) == 1 else aspect_ratios


def _check_anchor_levels(y) -> None:
    """One list of anchor scales per feature level of ``MODEL.YOLACT.IN_FEATURES``, every level with
    positive scales and aspect ratios (the aspect ratios per level: the constructor's rule)."""
    features = list(y.IN_FEATURES)
    scales, ratios = list(y.ANCHOR_SCALES), list(y.ANCHOR_ASPECT_RATIOS)
    if len(scales) != len(features):
        raise ConfigError(
            f"MODEL.YOLACT.ANCHOR_SCALES has {len(scales)} levels {scales} but MODEL.YOLACT.IN_FEATURES has "
            f"{len(features)} {features}", "every feature level has its own anchors",
            fix="give one list of anchor scales per feature level",
        )
    for key, lists in (("ANCHOR_SCALES", scales), ("ANCHOR_ASPECT_RATIOS", ratios)):
        if any(len(level) == 0 or any(not v > 0 for v in level) for level in lists):
            raise ConfigError(f"MODEL.YOLACT.{key} {lists}", "every level needs positive values",
                              fix="give each level at least one value above 0")


@ANCHOR_GENERATOR_REGISTRY.register()
class YolactAnchorGenerator(nn.Module):
    """Generates relative center-size anchors for feature maps of given sizes."""

    @configurable
    def __init__(
        self,
        *,
        scales: Sequence[Sequence[float]],
        aspect_ratios: Sequence[Sequence[float]],
        square_anchors: bool,
    ):
        """
        Args:
            scales: per level, anchor sides in pixels of the network input (the paper's ``s``).
            aspect_ratios: per level (or one list for all levels), width / height ratios.
            square_anchors: YOLACT v1 behaviour: ``h = w`` after ``w = s * sqrt(ar)``.
        """
        super().__init__()
        aspect_ratios = anchor_aspect_ratios_per_level(aspect_ratios, len(scales))
        self.scales = [list(map(float, s)) for s in scales]
        self.aspect_ratios = [list(map(float, a)) for a in aspect_ratios]
        self.square_anchors = bool(square_anchors)
        counts = {len(s) * len(a) for s, a in zip(self.scales, self.aspect_ratios)}
        if len(counts) != 1:
            raise ConfigError(
                f"MODEL.YOLACT.ANCHOR_SCALES {self.scales} x MODEL.YOLACT.ANCHOR_ASPECT_RATIOS {self.aspect_ratios}",
                "every level must have the same number of anchors per location because the prediction head "
                "is shared", fix="give every level as many scales x aspect ratios",
            )
        self.num_anchors = counts.pop()
        self._cache = {}

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        _check_anchor_levels(cfg.MODEL.YOLACT)
        return {
            "scales": cfg.MODEL.YOLACT.ANCHOR_SCALES,
            "aspect_ratios": cfg.MODEL.YOLACT.ANCHOR_ASPECT_RATIOS,
            "square_anchors": cfg.MODEL.YOLACT.SQUARE_ANCHORS,
        }

    @property
    def num_levels(self) -> int:
        return len(self.scales)

    def _level_anchors(self, level: int, feat_h: int, feat_w: int, img_h: int, img_w: int) -> torch.Tensor:
        # float64 arithmetic and one cast at the end reproduce the original's Python-float priors
        # bit for bit before they become float32.
        ys = (torch.arange(feat_h, dtype=torch.float64) + 0.5) / feat_h
        xs = (torch.arange(feat_w, dtype=torch.float64) + 0.5) / feat_w
        sizes = []
        for scale in self.scales[level]:
            for ratio in self.aspect_ratios[level]:
                r = math.sqrt(ratio)
                w = scale * r / img_w
                h = (scale * r if self.square_anchors else scale / r) / img_h
                sizes.append((w, h))
        wh = torch.tensor(sizes, dtype=torch.float64)  # (A, 2)
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centers = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)  # (H*W, 1, 2)
        centers = centers.expand(-1, len(sizes), 2)
        wh = wh.reshape(1, -1, 2).expand(centers.shape[0], -1, 2)
        return torch.cat([centers, wh], dim=-1).reshape(-1, 4)

    def forward(self, feature_sizes: List[Tuple[int, int]], image_size: Tuple[int, int], device=None) -> torch.Tensor:
        """
        Args:
            feature_sizes: (H, W) of every level, finest first.
            image_size: (H, W) of the padded network input the features were computed from.
        Returns:
            Tensor (sum_l H_l*W_l*A, 4): relative (cx, cy, w, h), float32.
        """
        if len(feature_sizes) != self.num_levels:
            raise ConfigError(
                f"MODEL.YOLACT.ANCHOR_SCALES defines {self.num_levels} levels",
                f"got {len(feature_sizes)} feature levels", fix="one list of scales per level of the features",
            )
        key = (tuple(map(tuple, feature_sizes)), tuple(image_size), str(device))
        if key not in self._cache:
            if len(self._cache) > 16:  # many input sizes (keep_aspect inference): bound memory
                self._cache.clear()
            anchors = torch.cat(
                [
                    self._level_anchors(level, int(h), int(w), int(image_size[0]), int(image_size[1]))
                    for level, (h, w) in enumerate(feature_sizes)
                ]
            )
            self._cache[key] = anchors.to(dtype=torch.float32, device=device)
        return self._cache[key]


def build_yolact_anchor_generator(cfg, input_shape=None) -> YolactAnchorGenerator:
    """The generator named by ``MODEL.ANCHOR_GENERATOR.NAME`` (Base-YOLACT.yaml: YolactAnchorGenerator),
    built through Detectron2's registry as RetinaNet does.

    The head and the losses need YOLACT's relative (cx, cy, w, h) priors, which Detectron2's stock
    generator cannot make; its name, the Detectron2 default, therefore means "not set" (a config
    written before this key was set in Base-YOLACT.yaml) and selects YOLACT's generator.
    """
    name = cfg.MODEL.ANCHOR_GENERATOR.NAME
    if name == "DefaultAnchorGenerator":
        return YolactAnchorGenerator(cfg, input_shape)
    generator = build_anchor_generator(cfg, input_shape)
    if not isinstance(generator, YolactAnchorGenerator):
        raise ConfigError(
            f"MODEL.ANCHOR_GENERATOR.NAME {name!r} does not make YOLACT anchors",
            cause="Yolact needs relative (cx, cy, w, h) priors in YOLACT's order (level, row, column, anchor)",
            fix="use 'YolactAnchorGenerator' or a generator derived from it",
        )
    return generator
