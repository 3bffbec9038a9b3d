"""``YolactTrainer``: Detectron2's ``DefaultTrainer`` with YOLACT's data mappers, COCO evaluation,
``SOLVER.OPTIMIZER`` (SGD or AdamW) and a DistributedDataParallel wrapper that also works for
multi-process CPU (gloo) training. It is built through DefaultTrainer's own extension points
(``build_model``, ``build_optimizer``, ``build_train_loader``, ``build_evaluator``, ``build_hooks``,
``run_step``, ``state_dict``); the two parts ``DefaultTrainer.__init__`` hard-codes, the DDP wrapper
and the step object, are given to it through :mod:`yolact_d2.utils.detectron2_internals`.

The original's recipe at any batch: the schedule scaled by ``SOLVER.REFERENCE_IMS_PER_BATCH``,
BatchNorm frozen below ``SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE`` images per process, the step of a
non-finite loss skipped.

Reliability (docs/RELIABILITY.md): checkpoints are written atomically, repeated non-finite losses stop
training with the iteration, every loss term and hints, the configuration is checked before
training, and skipped bad training images are counted in the log and in ``metrics.json``.
"""
import os
import weakref

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.utils import comm

from ..data.datasets import register_datasets_from_config
from ..runtime.checkpointer import AtomicDetectionCheckpointer
from ..runtime.finite_loss import nonfinite_loss_hints
from ..runtime.interrupt import InterruptHook
from ..runtime.results_files import AtomicYolactCOCOEvaluator
from ..runtime.run_checks import (
    check_class_names,
    check_input_fits_model,
    check_num_classes,
    check_training_config,
    check_yolact_config,
)
from ..runtime.safe_load import trusted_weights_file
from ..runtime.weights_catalog import RANDOM_WEIGHTS, imagenet_weights_name
from ..solver import build_lr_scheduler, build_optimizer, scale_schedule_to_batch
from ..utils.detectron2_internals import default_trainer_parts, last_eval_results
from ..utils.errors import ConfigError
from . import loaders
from .cpu_amp import training_step_class
from .ddp import create_ddp_model
from .frozen_bn import freeze_bn_for_small_batches
from .skipped_images import SkippedImages

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
        check_training_config(cfg)
        # SOLVER.REFERENCE_IMS_PER_BATCH: the original's --autoscale (instead of Detectron2's auto_scale_workers)
        cfg = scale_schedule_to_batch(cfg, comm.get_world_size())
        self.skipped_images = SkippedImages(skipping=cfg.DATALOADER.SKIP_BAD_IMAGES)  # DATALOADER.SKIP_BAD_IMAGES
        with default_trainer_parts(create_ddp_model=create_ddp_model, build_step=self._step_builder(cfg)):
            super().__init__(cfg)
        check_num_classes(cfg, cfg.DATASETS.TEST, "DATASETS.TEST")  # the run's one check of them, before training
        class_names = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", None)
        check_class_names(class_names, f"DATASETS.TRAIN '{cfg.DATASETS.TRAIN[0]}'", cfg.DATASETS.TEST)

    def _step_builder(self, cfg):
        """What DefaultTrainer.__init__ builds its step object with: SOLVER.AMP.ENABLED's CUDA AMP or CPU
        bf16 autocast, the finite-loss check of SOLVER.NONFINITE_LOSS, and a data loader whose batches
        have the skipped-image reports taken out (and counted)."""
        step_class = training_step_class(cfg)

        def build_step(model, data_loader, optimizer):
            step = step_class(model, self.skipped_images.batches(data_loader), optimizer)
            step.hint_source = weakref.ref(self)
            step.configure_nonfinite_loss(cfg)
            return step

        return build_step

    def resume_or_load(self, resume=True):
        if not (resume and self.checkpointer.has_checkpoint()):  # MODEL.WEIGHTS is read: it must say something
            check_initial_weights(self.cfg)
        return super().resume_or_load(resume=resume)

    def build_checkpointer(self) -> AtomicDetectionCheckpointer:
        """The checkpointer of DefaultTrainer (the model, OUTPUT_DIR, the trainer's state), with atomic
        writes (a process killed while saving never leaves last_checkpoint pointing at a partial file)
        and weights of another architecture an error before training starts; the training classes go
        into every checkpoint."""
        cfg = self.cfg
        checkpointer = AtomicDetectionCheckpointer(
            self.model, cfg.OUTPUT_DIR, trusted_file=trusted_weights_file(cfg), trainer=weakref.proxy(self)
        )
        checkpointer.class_names = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", None)
        return checkpointer

    def build_hooks(self):
        # DefaultTrainer.__init__ makes its DetectionCheckpointer and then asks for the hooks, and its
        # PeriodicCheckpointer takes self.checkpointer: the atomic checkpointer takes its place first.
        self.checkpointer = self.build_checkpointer()
        hooks = super().build_hooks()
        hooks.append(InterruptHook())  # last: saves after the scheduler and writers did the iteration
        return hooks

    def run_step(self):
        super().run_step()
        self.skipped_images.put_total(self.storage)  # before the hooks: in this iteration's metrics.json record

    def after_train(self):
        super().after_train()
        self.skipped_images.log_total()

    def state_dict(self):
        state = super().state_dict()
        state["bad_images_skipped"] = self.skipped_images.state_dict()  # the total continues after --resume
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.skipped_images.load_state_dict(state_dict.get("bad_images_skipped", {}))

    @property
    def last_eval_results(self):
        """The results of the last evaluation during training (``TEST.EVAL_PERIOD`` and the final one), or None."""
        return last_eval_results(self)

    def nonfinite_loss_hints(self) -> str:
        """Hints appended to :class:`~yolact_d2.runtime.finite_loss.NonFiniteLossError`."""
        return nonfinite_loss_hints(self.cfg, self.optimizer, self.checkpointer)

    @classmethod
    def build_model(cls, cfg):
        check_yolact_config(cfg)  # builds YOLACT, on a usable device; the model checks its own keys
        model = super().build_model(cfg)
        check_input_fits_model(cfg, model)  # INPUT.IMAGE_SIZE against the built model's coarsest stride
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        # DefaultTrainer.__init__ builds the optimizer right after the model: BatchNorm is frozen here
        # (SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE), before the optimizer takes the trainable parameters,
        # and not in build_model, which evaluation uses too.
        freeze_bn_for_small_batches(cfg, model, comm.get_world_size())
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
        # COCOEvaluator that ranks masks by Instances.mask_scores when the model sets them (YOLACT++'s
        # mask re-scoring; identical to COCOEvaluator otherwise), its result files written atomically
        return AtomicYolactCOCOEvaluator(
            dataset_name, tasks=("bbox", "segm"), distributed=True, output_dir=output_folder,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE, eval_backend=cfg.TEST.COCO_EVAL_BACKEND,
        )
