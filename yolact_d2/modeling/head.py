"""The YOLACT prediction head and its registry (the extension point for other heads).

One module shared by all pyramid levels: a 3x3 conv + ReLU, then three parallel 3x3 convs giving,
per anchor, box deltas, ``K + 1`` class logits (index 0 = background) and ``k`` mask coefficients
squashed by tanh. Outputs are flattened in the anchor generator's order (level, row, column,
anchor), with the per-location channel layout anchor-major (``a * K + k``) as in the original.
"""
from typing import List, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.utils.registry import Registry

from ..utils.errors import ConfigError
from .anchor_generator import build_yolact_anchor_generator
from .config_checks import COUNT, check_group_norm_widths, check_value_ranges

__all__ = ["YOLACT_HEAD_REGISTRY", "YolactHead", "build_yolact_head"]

YOLACT_HEAD_REGISTRY = Registry("YOLACT_HEAD")
YOLACT_HEAD_REGISTRY.__doc__ = """
Registry for YOLACT prediction heads, selected by ``MODEL.YOLACT.HEAD_NAME``.

The registered object is called with ``obj(cfg, input_shape)`` where ``input_shape`` is the list
of ``ShapeSpec`` of the levels in ``MODEL.YOLACT.IN_FEATURES``. Its forward takes the list of
feature maps and returns ``(class_logits (B, P, K+1), box_deltas (B, P, 4), coefficients (B, P, k))``.
"""


def _flatten(x: torch.Tensor, last_dim: int) -> torch.Tensor:
    # (B, A*C, H, W) -> (B, H*W*A, C)
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, last_dim)


@YOLACT_HEAD_REGISTRY.register()
class YolactHead(nn.Module):
    @configurable
    def __init__(
        self, *, in_channels: int, num_classes: int, num_anchors: int, num_prototypes: int, norm: str = ""
    ):
        """
        Args:
            in_channels: channels of every input level (shared weights need equal channels).
            num_classes: foreground classes K; the classifier predicts K + 1 logits.
            num_anchors: anchors per location A.
            num_prototypes: mask coefficients per anchor k.
            norm: normalisation after the shared 3x3 conv (``MODEL.YOLACT.NORM``); none in YOLACT.
        """
        super().__init__()
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self.conv = Conv2d(
            in_channels, in_channels, 3, padding=1, bias=norm == "", norm=get_norm(norm, in_channels)
        )
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        self.cls_score = nn.Conv2d(in_channels, num_anchors * (num_classes + 1), 3, padding=1)
        self.coeff_pred = nn.Conv2d(in_channels, num_anchors * num_prototypes, 3, padding=1)
        for conv in (self.conv, self.bbox_pred, self.cls_score, self.coeff_pred):
            nn.init.xavier_uniform_(conv.weight)  # the original's init of every conv outside the backbone
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        check_value_ranges(cfg, {"MODEL.YOLACT.NUM_CLASSES": COUNT, "MODEL.YOLACT.NUM_PROTOTYPES": COUNT})
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ConfigError(
                f"MODEL.YOLACT.IN_FEATURES {list(cfg.MODEL.YOLACT.IN_FEATURES)}",
                f"the levels have {sorted(channels)} channels, but YolactHead shares its weights across levels",
                fix="feed it levels of one width, or register a head for mixed widths as MODEL.YOLACT.HEAD_NAME",
            )
        in_channels = channels.pop()
        # the width of the head's conv, which is the FPN's for the YOLACT backbone
        check_group_norm_widths("MODEL.YOLACT.NORM", cfg.MODEL.YOLACT.NORM, {"MODEL.FPN.OUT_CHANNELS": in_channels})
        return {
            "in_channels": in_channels,
            "num_classes": cfg.MODEL.YOLACT.NUM_CLASSES,
            "num_anchors": build_yolact_anchor_generator(cfg, input_shape).num_anchors,
            "num_prototypes": cfg.MODEL.YOLACT.NUM_PROTOTYPES,
            "norm": cfg.MODEL.YOLACT.NORM,
        }

    def forward(self, features: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, deltas, coeffs = [], [], []
        for x in features:
            x = torch.relu(self.conv(x))
            deltas.append(_flatten(self.bbox_pred(x), 4))
            logits.append(_flatten(self.cls_score(x), self.num_classes + 1))
            coeffs.append(_flatten(self.coeff_pred(x), self.num_prototypes))
        return torch.cat(logits, 1), torch.cat(deltas, 1), torch.tanh(torch.cat(coeffs, 1))


def build_yolact_head(cfg, input_shape: List[ShapeSpec]) -> nn.Module:
    return YOLACT_HEAD_REGISTRY.get(cfg.MODEL.YOLACT.HEAD_NAME)(cfg, input_shape)
