"""``YolactTrainer``: Detectron2's ``DefaultTrainer`` with YOLACT's data mappers, COCO evaluation,
``SOLVER.OPTIMIZER`` (SGD or AdamW) and a DistributedDataParallel wrapper that also works for
multi-process CPU (gloo) training.

The original's recipe at any batch (docs/MODEL.md): the schedule scaled by
``SOLVER.REFERENCE_IMS_PER_BATCH``, BatchNorm frozen below ``SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE``
images per process, the step of a non-finite loss skipped.

Reliability (docs/RELIABILITY.md): checkpoints are written atomically, repeated non-finite losses stop
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

from ..data.datasets import register_datasets_from_config
from ..evaluation import YolactCOCOEvaluator
from ..runtime.checkpointer import AtomicDetectionCheckpointer
from ..runtime.finite_loss import nonfinite_loss_hints
from ..runtime.interrupt import InterruptHook
from ..runtime.run_checks import check_class_names, check_num_classes, check_training_config, check_yolact_config
from ..runtime.safe_load import trusted_weights_file
from ..runtime.weights_catalog import RANDOM_WEIGHTS, imagenet_weights_name
from ..solver import build_lr_scheduler, build_optimizer, scale_schedule_to_batch
from ..utils.errors import ConfigError
from . import loaders
from .cpu_amp import training_step_class
from .ddp import create_ddp_model
from .frozen_bn import freeze_bn_for_small_batches
from .hooks import BadImageCounter, BadImageTally

__all__ = ["YolactTrainer", "check_initial_weights"]


def check_initial_weights(cfg) -> None:
    """Training needs weights to start from: an empty MODEL.WEIGHTS would train the backbone from random
    weights, which the original never does (it always starts from ImageNet). ``MODEL.WEIGHTS random``
    says it is on purpose (the synthetic config)."""
    if not cfg.MODEL.WEIGHTS:
        depth = cfg.MODEL.RESNETS.DEPTH
        raise ConfigError(
            "MODEL.WEIGHTS is empty", "training would start from a random backbone",
            fix=f"give MODEL.WEIGHTS {imagenet_weights_name(depth)} (ImageNet ResNet-{depth}, downloaded once) or a "
            f"checkpoint; MODEL.WEIGHTS {RANDOM_WEIGHTS} trains from scratch on purpose",
        )


class YolactTrainer(DefaultTrainer):
    def __init__(self, cfg):
        # Same construction order as DefaultTrainer.__init__, with our DDP wrapper.
        super(DefaultTrainer, self).__init__()
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        # first: checks that cfg builds YOLACT (the other checks would describe another model's config)
        model = self.build_model(cfg)
        check_training_config(cfg)
        # SOLVER.REFERENCE_IMS_PER_BATCH: the original's --autoscale (instead of Detectron2's auto_scale_workers)
        cfg = scale_schedule_to_batch(cfg, comm.get_world_size())
        freeze_bn_for_small_batches(cfg, model, comm.get_world_size())  # SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        check_num_classes(cfg, cfg.DATASETS.TEST, "DATASETS.TEST")  # the run's one check of them, before training
        class_names = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", None)
        check_class_names(class_names, f"DATASETS.TRAIN '{cfg.DATASETS.TRAIN[0]}'", cfg.DATASETS.TEST)
        model = create_ddp_model(model, broadcast_buffers=False)
        run_step = training_step_class(cfg)  # SOLVER.AMP.ENABLED: CUDA AMP, or bf16 autocast on the CPU
        self._trainer = run_step(model, data_loader, optimizer)
        self._trainer.hint_source = weakref.ref(self)
        self._trainer.configure_nonfinite_loss(cfg)
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

    def resume_or_load(self, resume=True):
        if not (resume and self.checkpointer.has_checkpoint()):  # MODEL.WEIGHTS is read: it must say something
            check_initial_weights(self.cfg)
        return super().resume_or_load(resume=resume)

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
        """Hints appended to :class:`~yolact_d2.runtime.finite_loss.NonFiniteLossError`."""
        return nonfinite_loss_hints(self.cfg, self.optimizer, self.checkpointer)

    @classmethod
    def build_model(cls, cfg):
        check_yolact_config(cfg)  # builds YOLACT, on a usable device; the model checks its own keys
        return super().build_model(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        return loaders.build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return loaders.build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        register_datasets_from_config(cfg)  # DATASETS.COCO_INSTANCES, as the loaders do
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        # COCOEvaluator that ranks masks by Instances.mask_scores when the model sets them
        # (YOLACT++ mask re-scoring); identical to COCOEvaluator otherwise.
        return YolactCOCOEvaluator(
            dataset_name, tasks=("bbox", "segm"), distributed=True, output_dir=output_folder,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE, eval_backend=cfg.TEST.COCO_EVAL_BACKEND,
        )
