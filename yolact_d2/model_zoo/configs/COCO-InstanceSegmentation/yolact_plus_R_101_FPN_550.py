# yolact_plus_base_config as a LazyConfig: YOLACT++-550 with ResNet-101-FPN (34.6 mask AP on test-dev).
# Differences from yolact_base (docs/MODEL.md): DCNv2 in every 3rd bottleneck of C3-C5 (11 blocks),
# 3 scales x 3 real aspect ratios = 9 anchors per location, mask re-scoring.
from ..common.models.yolact import maskiou_net
from .yolact_R_101_FPN_550 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.deform_on_per_stage = [False, True, True, True]  # res2..res5
model.backbone.bottom_up.stages.deform_modulated = True
model.backbone.bottom_up.stages.deform_interval = 3
# s * 2 ** (j / 3) for j = 0, 1, 2
model.anchor_generator.scales = [[s * 2 ** (j / 3) for j in range(3)] for s in (24.0, 48.0, 96.0, 192.0, 384.0)]
model.anchor_generator.square_anchors = False
model.head.num_anchors = 9
model.maskiou_net = maskiou_net
# ImageNet weights, downloaded once (docs/MODEL_ZOO.md); or a converted yolact_plus_base_54_800000.pth
train.init_checkpoint = "yolact://ImageNetPretrained/R-101"
