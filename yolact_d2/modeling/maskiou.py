"""YOLACT++ mask re-scoring network and its registry (the extension point for other re-scoring nets).

``FastMaskIoUNet`` predicts, for every (cropped, soft) mask at prototype resolution, the IoU of
the mask with its object for each class: five 3x3 stride-2 convs *without padding*
(1 -> 8 -> 16 -> 32 -> 64 -> 128), a 1x1 conv to the K classes, a ReLU after every conv including
the last one, and a max over the remaining spatial map. A 138x138 input (550-pixel image) shrinks
68 -> 33 -> 16 -> 7 -> 3 -> 3 -> max -> ``[N, K]``.

Layer ``layers.{0,2,4,6,8,10}`` corresponds to the original ``maskiou_net.maskiou_net.{0,...,10}``.
"""
from typing import Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.utils.registry import Registry

__all__ = ["MASKIOU_NET_REGISTRY", "FastMaskIoUNet", "build_maskiou_net"]

MASKIOU_NET_REGISTRY = Registry("YOLACT_MASKIOU_NET")
MASKIOU_NET_REGISTRY.__doc__ = """
Registry for YOLACT++ mask re-scoring networks, selected by ``MODEL.YOLACT.MASK_IOU_NET_NAME``.

The registered object is called with ``obj(cfg)``. Its forward takes soft masks ``(N, 1, H, W)``
at prototype resolution and returns predicted mask IoUs ``(N, K)`` for the K foreground classes.
"""


@MASKIOU_NET_REGISTRY.register()
class FastMaskIoUNet(nn.Module):
    @configurable
    def __init__(self, *, num_classes: int, channels: Sequence[int] = (8, 16, 32, 64, 128)):
        """
        Args:
            num_classes: foreground classes K (one predicted IoU per class).
            channels: output channels of the 3x3 stride-2 convs.
        """
        super().__init__()
        layers = []
        in_channels = 1
        for c in channels:
            layers += [nn.Conv2d(in_channels, c, 3, stride=2), nn.ReLU()]
            in_channels = c
        layers += [nn.Conv2d(in_channels, num_classes, 1), nn.ReLU()]
        self.layers = nn.Sequential(*layers)
        self.num_classes = num_classes
        # Every unpadded 3x3 stride-2 conv needs an input of at least 3 pixels.
        self.min_input_size = 2 ** (len(channels) + 1) - 1
        for m in self.layers:
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)  # the original's init of every conv outside the backbone
                nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, cfg):
        return {"num_classes": cfg.MODEL.YOLACT.NUM_CLASSES}

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """masks ``(N, 1, H, W)`` -> predicted IoUs ``(N, K)`` (non-negative)."""
        if min(masks.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f"FastMaskIoUNet needs masks of at least {self.min_input_size}x{self.min_input_size} "
                f"pixels (prototype resolution, about 1/4 of the input image), got {tuple(masks.shape[-2:])}; "
                "use a larger INPUT.IMAGE_SIZE or MODEL.YOLACT.MASK_IOU_ON False"
            )
        return self.layers(masks).amax(dim=(-2, -1))


def build_maskiou_net(cfg) -> nn.Module:
    return MASKIOU_NET_REGISTRY.get(cfg.MODEL.YOLACT.MASK_IOU_NET_NAME)(cfg)
