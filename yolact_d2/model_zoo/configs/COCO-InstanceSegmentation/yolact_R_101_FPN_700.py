# yolact_im700_config as a LazyConfig: 700x700 input, anchor scales int(s / 550 * 700), 300 masks
# trained per image.
from .yolact_R_101_FPN_550 import dataloader, lr_multiplier, model, optimizer, train

model.anchor_generator.scales = [[30], [61], [122], [244], [488]]
model.criterion.masks_to_train = 300
dataloader.train.mapper.augmentations.image_size = 700
