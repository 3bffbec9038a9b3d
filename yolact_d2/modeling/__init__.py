"""YOLACT components; importing this module registers them with Detectron2."""
from .anchor_generator import YolactAnchorGenerator
from .backbone import YolactFPN, build_yolact_resnet_backbone, build_yolact_resnet_fpn_backbone
from .head import YOLACT_HEAD_REGISTRY, YolactHead, build_yolact_head
from .losses import YolactLoss
from .maskiou import MASKIOU_NET_REGISTRY, FastMaskIoUNet, build_maskiou_net
from .meta_arch import Yolact
from .protonet import PROTONET_REGISTRY, ProtoNet, build_protonet
from .semantic_seg import SemanticSegHead

__all__ = [
    "YolactAnchorGenerator",
    "YolactFPN",
    "build_yolact_resnet_backbone",
    "build_yolact_resnet_fpn_backbone",
    "YOLACT_HEAD_REGISTRY",
    "YolactHead",
    "build_yolact_head",
    "YolactLoss",
    "MASKIOU_NET_REGISTRY",
    "FastMaskIoUNet",
    "build_maskiou_net",
    "Yolact",
    "PROTONET_REGISTRY",
    "ProtoNet",
    "build_protonet",
    "SemanticSegHead",
]
