# YOLACT-550 with ResNet-101-FPN (docs/MODEL.md) as a LazyConfig: the same classes that
# Base-YOLACT.yaml builds through their from_config, here called with explicit arguments.
# Values shared by several parts are interpolations ("${..head.num_classes}"), so that one override
# (e.g. model.head.num_classes=3) changes all of them.
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from yolact_d2.modeling import FastMaskIoUNet, ProtoNet, Yolact, YolactAnchorGenerator, YolactHead
from yolact_d2.modeling.backbone import YolactFPN, make_yolact_resnet_stages
from yolact_d2.modeling.losses import YolactLoss
from yolact_d2.modeling.semantic_seg import SemanticSegHead

model = L(Yolact)(
    backbone=L(YolactFPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="BN"),
            # MODEL.RESNETS.*: torchvision-style stride in the 3x3, trained BN (batch 8 on one device)
            stages=L(make_yolact_resnet_stages)(depth=101, norm="BN", stride_in_1x1=False, res2_out_channels=256),
            out_features=["res3", "res4", "res5"],
            freeze_at=0,  # the original trains every backbone layer
        ),
        in_features="${.bottom_up.out_features}",
        out_channels=256,
        num_downsample=2,  # P6, P7
        norm="",
    ),
    head=L(YolactHead)(
        in_channels="${..backbone.out_channels}", num_classes=80, num_anchors=3, num_prototypes=32, norm=""
    ),
    protonet=L(ProtoNet)(
        in_channels="${..backbone.out_channels}",
        num_prototypes="${..head.num_prototypes}",
        conv_dim="${..backbone.out_channels}",  # the original's protonet width is the FPN width
        norm="${..head.norm}",
    ),
    sem_seg_head=L(SemanticSegHead)(in_channels="${..backbone.out_channels}", num_classes="${..head.num_classes}"),
    maskiou_net=None,  # YOLACT++: L(FastMaskIoUNet)(num_classes=...), see yolact_plus_R_101_FPN_550.py
    # relative (cx, cy, w, h) priors (docs/MODEL.md); head.num_anchors = scales x ratios per level
    anchor_generator=L(YolactAnchorGenerator)(
        scales=[[24], [48], [96], [192], [384]], aspect_ratios=[[1.0, 0.5, 2.0]], square_anchors=True
    ),
    criterion=L(YolactLoss)(
        num_classes="${..head.num_classes}",
        positive_iou_threshold=0.5,
        negative_iou_threshold=0.4,
        crowd_ioa_threshold=0.7,
        bbox_variances=[0.1, 0.2],
        neg_pos_ratio=3,
        masks_to_train=100,
        loss_weights={
            "loss_cls": 1.0, "loss_box_reg": 1.5, "loss_mask": 6.125, "loss_sem_seg": 1.0, "loss_mask_iou": 25.0,
        },
        mask_iou_min_area=25,
    ),
    in_features=["p3", "p4", "p5", "p6", "p7"],
    # The original normalises BGR with (103.94, 116.78, 123.68) / (57.38, 57.12, 58.40), then feeds RGB.
    pixel_mean=[123.68, 116.78, 103.94],
    pixel_std=[58.40, 57.12, 57.38],
    input_format="RGB",
    bbox_variances="${.criterion.bbox_variances}",
    score_threshold=0.05,
    nms_type="fast",
    nms_threshold=0.5,
    topk_candidates=200,
    max_detections_per_image=100,
    mask_threshold=0.5,
    truncate_boxes=True,
)

# For configs that switch the mask re-scoring on (YOLACT++).
maskiou_net = L(FastMaskIoUNet)(num_classes="${..head.num_classes}")
