# yolact_plus_resnet50_config as a LazyConfig: YOLACT++-550 with ResNet-50-FPN (34.1 mask AP on test-dev).
# Differences from yolact_resnet50 (docs/MODEL.md): DCNv2 in every bottleneck of C3-C5 (13 blocks),
# 3 scales x 3 real aspect ratios = 9 anchors per location, mask re-scoring.
from .yolact_plus_R_101_FPN_550 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 50
model.backbone.bottom_up.stages.deform_interval = 1
# ImageNet weights, downloaded once (docs/MODEL_ZOO.md); or a converted yolact_plus_resnet50_54_800000.pth
train.init_checkpoint = "yolact://ImageNetPretrained/R-50"
