# Fine-tune a COCO-trained YOLACT-R50 on your own COCO-format dataset (docs/GETTING_STARTED.md,
# "LazyConfig"); the LazyConfig twin of yolact_R_50_FPN_550_finetune.yaml. Give your data as
# [name, json, image root] entries and the number of foreground classes:
#
#   python train_net.py --config-file configs/Custom/yolact_R_50_FPN_550_finetune.py \
#       'dataloader.train.dataset.coco_instances=[[mine_train,train.json,images/]]' \
#       'dataloader.test.dataset.coco_instances=[[mine_val,val.json,images/]]' model.head.num_classes=3
#
# The class-dependent layers (head.cls_score, sem_seg_head.predictor) do not match a different
# number of classes: Detectron2's checkpointer logs "Skip loading parameter ..." for each and keeps
# their fresh initialisation; everything else comes from the COCO checkpoint.
from ..common.data.coco import dataloader
from ..common.models.yolact import model
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier
from ..common.train import train

model.backbone.bottom_up.stages.depth = 50
# small fine-tuning batches: keep the COCO BN statistics
model.backbone.bottom_up.stem.norm = model.backbone.bottom_up.stages.norm = "FrozenBN"
model.head.num_classes = 3  # foreground classes of your dataset (checked against the data)

# dataset.coco_instances (see the command above) registers these names, as DATASETS.COCO_INSTANCES
dataloader.train.dataset.names = "mine_train"
dataloader.test.dataset.names = "mine_val"

lr_multiplier.steps = [8000]
train.max_iter = 10000
train.checkpointer.period = 2000
train.eval_period = 2000
# converted with: python tools/convert_yolact_weights.py yolact_resnet50_54_800000.pth yolact_R_50_coco.pth
train.init_checkpoint = "yolact_R_50_coco.pth"
train.output_dir = "output/finetune"
