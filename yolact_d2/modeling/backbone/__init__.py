from .fpn import YolactFPN, build_yolact_resnet_fpn_backbone
from .resnet_dcn import DCNv2BottleneckBlock, build_yolact_resnet_backbone, deformable_blocks, make_yolact_resnet_stages

__all__ = [
    "YolactFPN",
    "build_yolact_resnet_fpn_backbone",
    "DCNv2BottleneckBlock",
    "build_yolact_resnet_backbone",
    "deformable_blocks",
    "make_yolact_resnet_stages",
]
