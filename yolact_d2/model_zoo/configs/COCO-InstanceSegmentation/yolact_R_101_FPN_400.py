# yolact_im400_config as a LazyConfig: 400x400 input, anchor scales int(s / 550 * 400).
from .yolact_R_101_FPN_550 import dataloader, lr_multiplier, model, optimizer, train

model.anchor_generator.scales = [[17], [34], [69], [139], [279]]
dataloader.train.mapper.augmentations.image_size = 400
