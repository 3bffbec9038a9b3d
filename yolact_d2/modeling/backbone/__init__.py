from .fpn import YolactFPN, build_yolact_resnet_fpn_backbone

__all__ = ["YolactFPN", "build_yolact_resnet_fpn_backbone"]
