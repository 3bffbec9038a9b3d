# yolact_base_config as a LazyConfig: the reference YOLACT-550 with ResNet-101-FPN (29.8 mask AP on
# test-dev); builds the same model as yolact_R_101_FPN_550.yaml.
from ..common.data.coco import dataloader
from ..common.models.yolact import model
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier
from ..common.train import train

# ImageNet weights, downloaded once (docs/MODEL_ZOO.md); or a converted yolact_base_54_800000.pth
train.init_checkpoint = "yolact://ImageNetPretrained/R-101"
