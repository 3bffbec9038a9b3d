# The LazyConfig twin of yolact_R_18_FPN_synthetic.yaml (the README's main job): CPU-sized YOLACT for
# the bundled synthetic shapes dataset, ResNet-18 from scratch, 192x192 input, 64-channel FPN / head /
# protonet with GroupNorm, fused AdamW with gradient-norm clipping, 1600 iterations of 4 images.
# The yaml's comments give the measurements behind each choice.
from ..common.data.coco import dataloader
from ..common.models.yolact import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import lr_multiplier
from ..common.train import train

model.backbone.bottom_up.stages.depth = 18
model.backbone.bottom_up.stages.res2_out_channels = 64
model.backbone.out_channels = 64
model.backbone.norm = "GN"  # not in YOLACT: without it the ReLU'd FPN outputs die when training from scratch
model.head.num_classes = 6
model.head.norm = "GN"  # head and protonet, same reason

dataloader.train.dataset.names = "yolact_synthetic_train"
dataloader.test.dataset.names = "yolact_synthetic_val"
dataloader.train.mapper.augmentations.image_size = 192
dataloader.train.mapper.augmentations.names = ["mirror"]
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = dataloader.test.num_workers = 0  # on 2 cores a loader worker costs more than it saves

optimizer.lr = 0.002
optimizer.weight_decay = 0.05  # weights only: no decay on norm layers and biases
optimizer.clip_gradients = dict(clip_type="norm", clip_value=10.0, norm_type=2.0)

lr_multiplier.steps = [1280]
lr_multiplier.warmup_iters = 200
# Detectron2's arithmetic, as the yaml twin (SOLVER.REFERENCE_IMS_PER_BATCH 0)
lr_multiplier.original_arithmetic = False

train.max_iter = 1600
train.checkpointer.period = 1000
train.eval_period = 0
train.device = "cpu"
train.seed = 0  # a reproducible demo
train.output_dir = "output/synthetic"
