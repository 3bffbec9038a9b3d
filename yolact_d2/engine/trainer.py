"""``YolactTrainer``: Detectron2's ``DefaultTrainer`` with YOLACT's data mappers, COCO evaluation,
``SOLVER.OPTIMIZER`` (SGD or AdamW) and a DistributedDataParallel wrapper that also works for
multi-process CPU (gloo) training.

Reliability (docs/RELIABILITY.md): checkpoints are written atomically, a non-finite loss stops
training with the iteration, every loss term and hints, the configuration is checked before
training, and skipped bad training images are counted in the log and in ``metrics.json``.
"""
import logging
import os
import weakref

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.engine import hooks as d2_hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint.atomic import AtomicDetectionCheckpointer
from ..checkpoint.safe_load import trusted_weights_file
from ..config_checks import (
    check_class_names,
    check_meta_architecture,
    check_num_classes,
    check_training_config,
    check_yolact_config,
)
from ..data.datasets import register_datasets_from_config
from ..evaluation import YolactCOCOEvaluator
from ..solver import build_optimizer
from . import loaders
from .ddp import create_ddp_model
from .finite_loss import FiniteAMPTrainer, FiniteSimpleTrainer, nonfinite_loss_hints
from .hooks import BadImageCounter, BadImageTally
from .interrupt import InterruptHook

__all__ = ["YolactTrainer"]


class YolactTrainer(DefaultTrainer):
    def __init__(self, cfg):
        # Same construction order as DefaultTrainer.__init__, with our DDP wrapper.
        super(DefaultTrainer, self).__init__()
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        check_meta_architecture(cfg)  # first: the other checks would describe another model's config
        check_training_config(cfg)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        check_num_classes(cfg, cfg.DATASETS.TEST, "DATASETS.TEST")  # not only after the whole training run
        class_names = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", None)
        check_class_names(class_names, f"DATASETS.TRAIN '{cfg.DATASETS.TRAIN[0]}'", cfg.DATASETS.TEST)
        model = create_ddp_model(model, broadcast_buffers=False)
        run_step = FiniteAMPTrainer if cfg.SOLVER.AMP.ENABLED else FiniteSimpleTrainer
        self._trainer = run_step(model, data_loader, optimizer)
        self._trainer.hint_source = weakref.ref(self)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # Atomic writes: a process killed while saving never leaves last_checkpoint pointing at a
        # partial file; weights of another architecture are an error before training starts.
        self.checkpointer = AtomicDetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trusted_file=trusted_weights_file(cfg), trainer=weakref.proxy(self)
        )
        self.checkpointer.class_names = class_names
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        hooks = super().build_hooks()
        tally = self._trainer.data_loader
        if isinstance(tally, BadImageTally):
            # before the PeriodicWriter, so that the count is in the same metrics.json record
            at = len(hooks) - 1 if hooks and isinstance(hooks[-1], d2_hooks.PeriodicWriter) else len(hooks)
            hooks.insert(at, BadImageCounter(tally))
        hooks.append(InterruptHook())  # last: saves after the scheduler and writers did the iteration
        return hooks

    def nonfinite_loss_hints(self) -> str:
        """Hints appended to :class:`~yolact_d2.engine.finite_loss.NonFiniteLossError`."""
        return nonfinite_loss_hints(self.cfg, self.optimizer, self.checkpointer)

    @classmethod
    def build_model(cls, cfg):
        check_yolact_config(cfg)
        model = super().build_model(cfg)
        check_yolact_config(cfg, model)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return loaders.build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return loaders.build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        register_datasets_from_config(cfg)  # DATASETS.COCO_INSTANCES, as the loaders do
        check_num_classes(cfg, [dataset_name], "DATASETS.TEST")
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        # COCOEvaluator that ranks masks by Instances.mask_scores when the model sets them
        # (YOLACT++ mask re-scoring, docs/MODEL.md §9.7); identical to COCOEvaluator otherwise.
        return YolactCOCOEvaluator(
            dataset_name, tasks=("bbox", "segm"), distributed=True, output_dir=output_folder,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE, eval_backend=cfg.TEST.COCO_EVAL_BACKEND,
        )
