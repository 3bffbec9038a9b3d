"""The YOLACT prototype network and its registry (the extension point for other protonets).

An FCN on P3: three 3x3 convs + ReLU, bilinear x2 upsampling, one 3x3 conv + ReLU and a 1x1 conv
to ``k`` prototypes followed by ReLU (k = 32 at 138x138 for a 550 input).
"""

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.utils.registry import Registry

from .config_checks import check_group_norm_widths

__all__ = ["PROTONET_REGISTRY", "ProtoNet", "build_protonet"]

PROTONET_REGISTRY = Registry("YOLACT_PROTONET")
PROTONET_REGISTRY.__doc__ = """
Registry for YOLACT prototype networks, selected by ``MODEL.YOLACT.PROTONET_NAME``.

The registered object is called with ``obj(cfg, input_shape)`` where ``input_shape`` is the
``ShapeSpec`` of the first level of ``MODEL.YOLACT.IN_FEATURES``. Its forward takes that feature
map and returns prototypes ``(B, k, H', W')``.
"""


@PROTONET_REGISTRY.register()
class ProtoNet(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_prototypes: int,
        conv_dim: int = 256,
        num_convs_before_upsample: int = 3,
        num_convs_after_upsample: int = 1,
        upsample_factor: float = 2.0,
        norm: str = "",
    ):
        """``norm``: normalisation after each hidden 3x3 conv (``MODEL.YOLACT.NORM``); none in YOLACT."""
        super().__init__()
        dims = [in_channels] + [conv_dim] * (num_convs_before_upsample + num_convs_after_upsample)
        convs = [
            Conv2d(d_in, d_out, 3, padding=1, bias=norm == "", norm=get_norm(norm, d_out))
            for d_in, d_out in zip(dims[:-1], dims[1:])
        ]
        self.convs_before_upsample = nn.ModuleList(convs[:num_convs_before_upsample])
        self.convs_after_upsample = nn.ModuleList(convs[num_convs_before_upsample:])
        self.predictor = nn.Conv2d(dims[-1], num_prototypes, 1)
        self.upsample_factor = upsample_factor
        for conv in [*convs, self.predictor]:
            nn.init.xavier_uniform_(conv.weight)  # the original's init of every conv outside the backbone
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        # The original's protonet width equals the FPN width (256).
        width = {"MODEL.FPN.OUT_CHANNELS": input_shape.channels}
        check_group_norm_widths("MODEL.YOLACT.NORM", cfg.MODEL.YOLACT.NORM, width)
        return {
            "in_channels": input_shape.channels,
            "num_prototypes": cfg.MODEL.YOLACT.NUM_PROTOTYPES,
            "conv_dim": input_shape.channels,
            "norm": cfg.MODEL.YOLACT.NORM,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs_before_upsample:
            x = F.relu(conv(x))
        x = F.interpolate(x, scale_factor=self.upsample_factor, mode="bilinear", align_corners=False)
        for conv in self.convs_after_upsample:
            x = F.relu(conv(x))
        return F.relu(self.predictor(x))


def build_protonet(cfg, input_shape: ShapeSpec) -> nn.Module:
    return PROTONET_REGISTRY.get(cfg.MODEL.YOLACT.PROTONET_NAME)(cfg, input_shape)
