"""YOLACT anchors ("priors", docs/MODEL.md §3).

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

from ..runtime.run_checks import anchor_aspect_ratios_per_level
from ..utils.errors import ConfigError

__all__ = ["YolactAnchorGenerator", "build_yolact_anchor_generator"]


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
            scales: per level, anchor sides in pixels of the network input (``s`` of docs/MODEL.md §3.2).
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
                "Every level must have the same number of anchors per location because the "
                f"prediction head is shared; got scales {self.scales} x ratios {self.aspect_ratios}"
            )
        self.num_anchors = counts.pop()
        self._cache = {}

    @classmethod
    def from_config(cls, cfg, input_shape=None):
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
                f"Got {len(feature_sizes)} feature levels but MODEL.YOLACT.ANCHOR_SCALES defines "
                f"{self.num_levels}"
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
            cause="Yolact needs relative (cx, cy, w, h) priors in YOLACT's order (docs/MODEL.md §3)",
            fix="use 'YolactAnchorGenerator' or a generator derived from it",
        )
    return generator
