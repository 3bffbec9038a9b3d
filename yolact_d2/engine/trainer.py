"""``YolactTrainer``: Detectron2's ``DefaultTrainer`` with YOLACT's data mappers, COCO evaluation
and a DistributedDataParallel wrapper that also works for multi-process CPU (gloo) training.

Detectron2's ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which PyTorch rejects
for CPU modules (DETECTRON2_NOTES.md §4.7); ``launch(--num-gpus 2)`` with ``MODEL.DEVICE cpu``
therefore crashes with the stock trainer.
"""
import logging
import os
import weakref

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetMapper, MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data.dataset_mapper import YolactDatasetMapper

__all__ = ["YolactTrainer", "create_ddp_model"]

logger = logging.getLogger(__name__)


def create_ddp_model(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """Wrap ``model`` in DDP when there is more than one process; ``device_ids`` only on CUDA."""
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    if device.type == "cuda" and "device_ids" not in kwargs:
        kwargs["device_ids"] = [comm.get_local_rank()]
    return DistributedDataParallel(model, **kwargs)


def check_num_classes(cfg, dataset_names) -> None:
    """Fail before training if ``MODEL.YOLACT.NUM_CLASSES`` disagrees with a dataset's classes."""
    for name in dataset_names:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != cfg.MODEL.YOLACT.NUM_CLASSES:
            raise ValueError(
                f"Dataset '{name}' has {len(classes)} classes ({', '.join(classes[:10])}"
                f"{', ...' if len(classes) > 10 else ''}) but MODEL.YOLACT.NUM_CLASSES is "
                f"{cfg.MODEL.YOLACT.NUM_CLASSES}. Set MODEL.YOLACT.NUM_CLASSES {len(classes)}."
            )


class YolactTrainer(DefaultTrainer):
    def __init__(self, cfg):
        # Same construction order as DefaultTrainer.__init__, with our DDP wrapper.
        super(DefaultTrainer, self).__init__()
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_train_loader(cls, cfg):
        mapper_name = cfg.INPUT.DATASET_MAPPER_NAME
        if mapper_name == "yolact":
            mapper = YolactDatasetMapper(cfg, is_train=True)
        elif mapper_name == "detectron2":
            mapper = DatasetMapper(cfg, is_train=True)
        else:
            raise ValueError(f"INPUT.DATASET_MAPPER_NAME must be 'yolact' or 'detectron2', got {mapper_name!r}")
        loader = build_detection_train_loader(cfg, mapper=mapper)
        check_num_classes(cfg, cfg.DATASETS.TRAIN)  # metadata is complete once the dicts are loaded
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = YolactDatasetMapper(cfg, is_train=False) if cfg.INPUT.DATASET_MAPPER_NAME == "yolact" else None
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        check_num_classes(cfg, [dataset_name])
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(
            dataset_name, tasks=("bbox", "segm"), distributed=True, output_dir=output_folder,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )
