"""Auxiliary semantic-segmentation head of YOLACT: a 1x1 conv on P3 giving
one logit map per foreground class. Used only for the training loss ``loss_sem_seg``; it adds
features that help the protonet at no inference cost."""
import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec

__all__ = ["SemanticSegHead"]


class SemanticSegHead(nn.Module):
    @configurable
    def __init__(self, *, in_channels: int, num_classes: int):
        super().__init__()
        self.predictor = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.xavier_uniform_(self.predictor.weight)
        nn.init.zeros_(self.predictor.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        return {"in_channels": input_shape.channels, "num_classes": cfg.MODEL.YOLACT.NUM_CLASSES}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(x)
