"""The YOLACT feature pyramid on top of Detectron2's ResNet.

It differs from Detectron2's ``FPN`` + ``LastLevelP6P7`` in four ways that the released weights
depend on: the top-down path upsamples *bilinearly to the lateral's exact size* (so a 550 input
needs no padding to a multiple of 128 and gives 69/35/18/9/5 levels), the 3x3 output convs are
followed by ReLU, P6 is a stride-2 conv of the ReLU'd P5 (not of C5), and there is no ReLU between
P6 and P7.
"""
import math
from typing import Dict, List

import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, build_resnet_backbone

from ...utils.errors import ConfigError
from ..config_checks import COUNT, check_group_norm_widths, check_value_ranges
from .resnet_dcn import BASIC_BLOCK_DEPTHS, build_yolact_resnet_backbone, check_resnet_depth

__all__ = ["YolactFPN", "build_yolact_resnet_fpn_backbone"]

# Widths the backbone reads: 0 channels is a shape error deep in torch, naming no key.
_VALUE_RANGES = {
    "MODEL.FPN.OUT_CHANNELS": COUNT,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": COUNT,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": COUNT,
    "MODEL.RESNETS.NUM_GROUPS": COUNT,
    "MODEL.RESNETS.WIDTH_PER_GROUP": COUNT,
}


class YolactFPN(Backbone):
    """Bottom-up network + YOLACT FPN. Outputs ``p<l>`` for every level, named by log2 of the
    nominal stride (``p3``..``p7`` for C3-C5 plus two downsampled levels)."""

    def __init__(
        self,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int = 256,
        num_downsample: int = 2,
        norm: str = "",
    ):
        """
        Args:
            bottom_up: a Detectron2 backbone whose ``in_features`` outputs are C3, C4, C5 (finest first).
            in_features: names of the bottom-up outputs used as laterals, finest first.
            out_channels: channels of every pyramid level (256 in YOLACT).
            num_downsample: extra stride-2 levels computed from the coarsest output (P6, P7).
            norm: normalisation after the lateral and output convs (``MODEL.FPN.NORM``, as in
                Detectron2's FPN). YOLACT has none (""); "GN" makes training from scratch stable.
        """
        super().__init__()
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        in_shapes = bottom_up.output_shape()
        # Stored finest first (lateral_convs[0] reads C3); the original stores them reversed,
        # which the weight converter accounts for.
        use_bias = norm == ""
        self.lateral_convs = nn.ModuleList(
            Conv2d(in_shapes[f].channels, out_channels, 1, bias=use_bias, norm=get_norm(norm, out_channels))
            for f in self.in_features
        )
        self.output_convs = nn.ModuleList(
            Conv2d(out_channels, out_channels, 3, padding=1, bias=use_bias, norm=get_norm(norm, out_channels))
            for _ in self.in_features
        )
        self.downsample_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(num_downsample)
        )
        first_stride = in_shapes[self.in_features[0]].stride
        first_level = int(math.log2(first_stride))
        num_levels = len(self.in_features) + num_downsample
        self._out_features = [f"p{first_level + i}" for i in range(num_levels)]
        self._out_feature_strides = {
            name: first_stride * 2**i for i, name in enumerate(self._out_features)
        }
        self._out_feature_channels = {name: out_channels for name in self._out_features}
        for conv in [*self.lateral_convs, *self.output_convs, *self.downsample_convs]:
            # Xavier-uniform, bias 0: the original's start for every non-backbone conv, so training starts alike.
            nn.init.xavier_uniform_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    @property
    def size_divisibility(self) -> int:
        # Top-down upsampling goes to the lateral's exact size, so no padding is needed.
        return 0

    def forward(self, x) -> Dict[str, "torch.Tensor"]:  # noqa: F821
        bottom_up_features = self.bottom_up(x)
        laterals = [bottom_up_features[f] for f in self.in_features]
        # Top-down: the *pre-3x3* sums are what gets upsampled, as in the original (the released weights expect it).
        merged = [None] * len(laterals)
        top = None
        for i in range(len(laterals) - 1, -1, -1):
            lateral = self.lateral_convs[i](laterals[i])
            if top is not None:
                lateral = lateral + F.interpolate(
                    top, size=lateral.shape[-2:], mode="bilinear", align_corners=False
                )
            merged[i] = top = lateral
        outputs = [F.relu(conv(m)) for conv, m in zip(self.output_convs, merged)]
        for conv in self.downsample_convs:  # P6 from the ReLU'd P5, P7 from P6, no ReLU
            outputs.append(conv(outputs[-1]))
        return dict(zip(self._out_features, outputs))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_yolact_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> YolactFPN:
    """Detectron2 ResNet (``MODEL.RESNETS.*``; YOLACT configs use torchvision-style
    ``STRIDE_IN_1X1: False``) + YOLACT FPN (``MODEL.FPN.IN_FEATURES``, ``MODEL.FPN.OUT_CHANNELS``).
    The number of extra stride-2 levels follows ``MODEL.YOLACT.IN_FEATURES``.

    With deformable stages (``MODEL.RESNETS.DEFORM_ON_PER_STAGE``, YOLACT++), the ResNet is built
    by :func:`build_yolact_resnet_backbone` (torchvision-based DCNv2, no compiled extension); so is
    an R-18/R-34 narrower than 64 channels in res2 (a cheaper CPU model, measured in
    docs/DEVELOPMENT_NOTES.md), which Detectron2's builder refuses."""
    r = cfg.MODEL.RESNETS
    check_value_ranges(cfg, _VALUE_RANGES)
    check_resnet_depth(r.DEPTH)
    check_group_norm_widths("MODEL.RESNETS.NORM", r.NORM, {
        "MODEL.RESNETS.STEM_OUT_CHANNELS": r.STEM_OUT_CHANNELS, "MODEL.RESNETS.RES2_OUT_CHANNELS": r.RES2_OUT_CHANNELS,
        "MODEL.RESNETS.NUM_GROUPS x WIDTH_PER_GROUP": r.NUM_GROUPS * r.WIDTH_PER_GROUP,
    })
    fpn = cfg.MODEL.FPN
    check_group_norm_widths("MODEL.FPN.NORM", fpn.NORM, {"MODEL.FPN.OUT_CHANNELS": fpn.OUT_CHANNELS})
    if any(r.DEFORM_ON_PER_STAGE) or (r.DEPTH in BASIC_BLOCK_DEPTHS and r.RES2_OUT_CHANNELS != 64):
        bottom_up = build_yolact_resnet_backbone(cfg, input_shape)
    else:
        bottom_up = build_resnet_backbone(cfg, input_shape)
    in_features = cfg.MODEL.FPN.IN_FEATURES
    num_downsample = len(cfg.MODEL.YOLACT.IN_FEATURES) - len(in_features)
    if num_downsample < 0:
        raise ConfigError(
            f"MODEL.YOLACT.IN_FEATURES ({cfg.MODEL.YOLACT.IN_FEATURES})",
            f"has fewer levels than MODEL.FPN.IN_FEATURES ({in_features})",
            "list one level per FPN input level, then the extra stride-2 levels (p3..p7 for res3..res5)",
        )
    return YolactFPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        num_downsample=num_downsample,
        norm=cfg.MODEL.FPN.NORM,
    )
