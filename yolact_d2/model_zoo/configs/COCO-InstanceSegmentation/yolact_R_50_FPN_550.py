# yolact_resnet50_config as a LazyConfig: YOLACT-550 with ResNet-50-FPN (28.2 mask AP on test-dev).
from ..common.data.coco import dataloader
from ..common.models.yolact import model
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier
from ..common.train import train

model.backbone.bottom_up.stages.depth = 50
# ImageNet weights, downloaded once (docs/MODEL_ZOO.md); or a converted yolact_resnet50_54_800000.pth
train.init_checkpoint = "yolact://ImageNetPretrained/R-50"
