"""``YolactTrainer``: Detectron2's ``DefaultTrainer`` with YOLACT's data mappers, COCO evaluation,
``SOLVER.OPTIMIZER`` (SGD or AdamW) and a DistributedDataParallel wrapper that also works for
multi-process CPU (gloo) training.

Detectron2's ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which PyTorch rejects
for CPU modules; ``launch(--num-gpus 2)`` with ``MODEL.DEVICE cpu``
therefore crashes with the stock trainer.

Reliability (docs/RELIABILITY.md): checkpoints are written atomically
(:class:`~yolact_d2.checkpoint.AtomicDetectionCheckpointer`), a non-finite loss stops training with
the iteration, every loss term and hints (:class:`NonFiniteLossError`), the configuration is
checked before training (:func:`check_yolact_config`), and training images skipped by
``DATALOADER.SKIP_BAD_IMAGES`` are counted in the log and in ``metrics.json``.
"""
import logging
import math
import os
import weakref

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.data import get_detection_dataset_dicts
from detectron2.engine import AMPTrainer, DefaultTrainer, HookBase, SimpleTrainer
from detectron2.engine import hooks as d2_hooks
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint.atomic import AtomicDetectionCheckpointer
from ..checkpoint.safe_load import trusted_weights_file
from ..config import anchor_aspect_ratios_per_level
from ..data.dataset_mapper import SKIPPED_IMAGES_KEY, YolactDatasetMapper
from ..evaluation import YolactCOCOEvaluator
from .interrupt import InterruptHook
from ..utils.errors import ConfigError

__all__ = [
    "YolactTrainer",
    "create_ddp_model",
    "NonFiniteLossError",
    "check_yolact_config",
    "with_foreach_norm_clipping",
]

logger = logging.getLogger(__name__)


def create_ddp_model(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """Wrap ``model`` in DDP when there is more than one process; ``device_ids`` only on CUDA."""
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    if device.type == "cuda" and "device_ids" not in kwargs:
        kwargs["device_ids"] = [comm.get_local_rank()]
    return DistributedDataParallel(model, **kwargs)


def with_foreach_norm_clipping(optimizer_cls, max_norm: float, norm_type: float):
    """``optimizer_cls`` with Detectron2's per-parameter gradient-norm clipping
    (``SOLVER.CLIP_GRADIENTS`` with ``CLIP_TYPE "norm"``) done in one multi-tensor pass: every
    gradient is scaled by ``min(1, max_norm / (||g|| + 1e-6))``, the arithmetic of
    ``clip_grad_norm_`` on each parameter alone, without a ``clip_grad_norm_`` call per parameter
    (about 40 ms per step on CPU for the ~200 tensors of the synthetic config)."""

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norms = torch.stack(torch._foreach_norm(grads, norm_type))
            scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
            torch._foreach_mul_(grads, scale.tolist())
        return super(clipped, self).step(closure)

    clipped = type(optimizer_cls.__name__ + "WithGradientClip", (optimizer_cls,), {"step": step})
    return clipped


def check_num_classes(cfg, dataset_names, key: str = "DATASETS.TRAIN") -> None:
    """Fail before training (or evaluation) if ``MODEL.YOLACT.NUM_CLASSES`` disagrees with a
    dataset's classes. A dataset whose metadata has no ``thing_classes`` yet (a json registered by
    ``DATASETS.COCO_INSTANCES`` fills them when loaded) is loaded once here to read them; a name that
    is not registered is a :class:`ConfigError` naming ``key``."""
    for name in dataset_names:
        if name not in DatasetCatalog.list():
            raise ConfigError(
                f"{key}: dataset '{name}' is not registered",
                fix="register it with DATASETS.COCO_INSTANCES [[name, json, image_root]] or in code",
            )
        if MetadataCatalog.get(name).get("thing_classes", None) is None:
            DatasetCatalog.get(name)
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != cfg.MODEL.YOLACT.NUM_CLASSES:
            raise ConfigError(
                f"{key}: dataset '{name}' has {len(classes)} classes ({', '.join(classes[:10])}"
                f"{', ...' if len(classes) > 10 else ''}) but MODEL.YOLACT.NUM_CLASSES is "
                f"{cfg.MODEL.YOLACT.NUM_CLASSES}. Set MODEL.YOLACT.NUM_CLASSES {len(classes)}."
            )


def check_yolact_config(cfg, model=None) -> None:
    """Fail before training (or inference) with a message naming the keys when the anchor
    definition does not fit the feature levels, or (given the built model) when
    ``INPUT.IMAGE_SIZE`` is smaller than the stride of the coarsest level, i.e. that level would
    cover less than one pixel of the image."""
    y = cfg.MODEL.YOLACT
    features = list(y.IN_FEATURES)
    scales, ratios = list(y.ANCHOR_SCALES), list(y.ANCHOR_ASPECT_RATIOS)
    if len(scales) != len(features):
        raise ValueError(
            f"MODEL.YOLACT.ANCHOR_SCALES has {len(scales)} levels {scales} but "
            f"MODEL.YOLACT.IN_FEATURES has {len(features)} {features}: give one list of anchor "
            "scales per feature level."
        )
    anchor_aspect_ratios_per_level(ratios, len(features))  # the one rule, shared with the anchor generator
    for key, lists in (("ANCHOR_SCALES", scales), ("ANCHOR_ASPECT_RATIOS", ratios)):
        if any(len(level) == 0 or any(not v > 0 for v in level) for level in lists):
            raise ValueError(f"MODEL.YOLACT.{key} {lists}: every level needs positive values.")
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "output_shape"):
        return
    shapes = backbone.output_shape()
    strides = {f: shapes[f].stride for f in features if f in shapes}
    if not strides:
        return
    coarsest = max(strides, key=strides.get)
    size = int(cfg.INPUT.IMAGE_SIZE)
    if size < strides[coarsest]:
        raise ValueError(
            f"INPUT.IMAGE_SIZE {size} is smaller than the stride {strides[coarsest]} of the "
            f"coarsest feature level '{coarsest}' (MODEL.YOLACT.IN_FEATURES {features}): that "
            f"level would cover {size / strides[coarsest]:.2g} pixel of the image. Use "
            f"INPUT.IMAGE_SIZE >= {strides[coarsest]} (YOLACT uses 550), or fewer levels in "
            "MODEL.YOLACT.IN_FEATURES (with as many MODEL.YOLACT.ANCHOR_SCALES)."
        )


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite (raised before the optimizer step of that iteration)."""


class _FiniteLossCheck:
    """Mixin for Detectron2's SimpleTrainer / AMPTrainer: checks every loss term of every
    iteration on every process (Detectron2 only checks their sum, on the main process) and raises
    :class:`NonFiniteLossError` with all the terms and the hints of the outer trainer. The check
    runs in ``_write_metrics``, i.e. after ``backward`` and before ``optimizer.step``, so the
    weights are never updated from a non-finite loss."""

    hint_source = None  # weakref to the YolactTrainer, for the hints

    def _write_metrics(self, loss_dict, data_time, prefix="", iter=None):
        tensors = [v.detach().float().reshape(-1) for v in loss_dict.values() if isinstance(v, torch.Tensor)]
        if tensors and bool(torch.isfinite(torch.cat(tensors)).all()) and len(tensors) == len(loss_dict):
            return super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)  # one sync
        cur_iter = self.iter if iter is None else iter
        values = {
            k: float(v.detach().float().sum().item()) if isinstance(v, torch.Tensor) else float(v)
            for k, v in loss_dict.items()
        }
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            terms = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
            outer = self.hint_source() if self.hint_source is not None else None
            hints = outer.nonfinite_loss_hints() if outer is not None else ""
            raise NonFiniteLossError(
                f"Non-finite loss at iteration {cur_iter} (process rank {comm.get_rank()}): "
                f"{terms} (non-finite: {', '.join(bad)}). The weights were not updated from it.\n"
                f"{hints}"
            )
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


class _FiniteSimpleTrainer(_FiniteLossCheck, SimpleTrainer):
    pass


class _FiniteAMPTrainer(_FiniteLossCheck, AMPTrainer):
    pass


class _BadImageTally:
    """Wraps the training data loader in the main process: removes the reports of images skipped
    by :class:`YolactDatasetMapper` (``DATALOADER.SKIP_BAD_IMAGES``) from the batches, counts them
    and logs the running count."""

    def __init__(self, loader):
        self.loader = loader
        self.count = 0  # skips (an image drawn again is skipped again)
        self.files = {}  # file name -> message, in order of first skip

    def __iter__(self):
        for batch in self.loader:
            for d in batch:
                reports = d.pop(SKIPPED_IMAGES_KEY, None) if isinstance(d, dict) else None
                for file_name, message in reports or ():
                    self.count += 1
                    self.files.setdefault(file_name, message)
                    logger.warning(
                        f"Bad training images skipped so far: {self.count} ({len(self.files)} "
                        f"distinct file(s)); latest: {file_name}"
                    )
            yield batch

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


class BadImageCounter(HookBase):
    """Puts the number of skipped bad training images in the event storage
    (``bad_images_skipped`` in metrics.json), logs the total at the end of training and keeps the
    count in checkpoints so that it continues after ``--resume``."""

    def __init__(self, tally: _BadImageTally):
        self.tally = tally

    def after_step(self):
        if self.tally.count:
            self.trainer.storage.put_scalar("bad_images_skipped", self.tally.count, smoothing_hint=False)

    def after_train(self):
        files = self.tally.files
        if self.tally.count:
            shown = "\n  ".join(list(files.values())[:20]) + ("\n  ..." if len(files) > 20 else "")
            logger.warning(
                f"Training skipped bad images {self.tally.count} time(s) in total, "
                f"{len(files)} distinct file(s) (DATALOADER.SKIP_BAD_IMAGES; this process):\n  {shown}"
            )
        else:
            logger.info("No bad training image was skipped.")

    def state_dict(self):
        return {"count": self.tally.count, "files": dict(self.tally.files)}

    def load_state_dict(self, state_dict):
        self.tally.count = int(state_dict.get("count", 0))
        self.tally.files = dict(state_dict.get("files", {}))


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
        check_num_classes(cfg, cfg.DATASETS.TEST, "DATASETS.TEST")  # not only after the whole training run
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = (_FiniteAMPTrainer if cfg.SOLVER.AMP.ENABLED else _FiniteSimpleTrainer)(model, data_loader, optimizer)
        self._trainer.hint_source = weakref.ref(self)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # Atomic writes: a process killed while saving never leaves last_checkpoint pointing at a
        # partial file; weights of another architecture are an error before training starts.
        self.checkpointer = AtomicDetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trusted_file=trusted_weights_file(cfg), trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        hooks = super().build_hooks()
        tally = self._trainer.data_loader
        if isinstance(tally, _BadImageTally):
            # before the PeriodicWriter, so that the count is in the same metrics.json record
            at = len(hooks) - 1 if hooks and isinstance(hooks[-1], d2_hooks.PeriodicWriter) else len(hooks)
            hooks.insert(at, BadImageCounter(tally))
        hooks.append(InterruptHook())  # last: saves after the scheduler and writers did the iteration
        return hooks

    def nonfinite_loss_hints(self) -> str:
        """Hints appended to :class:`NonFiniteLossError` (current values of the relevant keys)."""
        cfg = self.cfg
        lr = max(g["lr"] for g in self.optimizer.param_groups)
        per_device = max(cfg.SOLVER.IMS_PER_BATCH // max(comm.get_world_size(), 1), 1)
        lines = [
            "Hints:",
            f"- learning rate vs batch size: the LR is {lr:.3g} now (SOLVER.BASE_LR "
            f"{cfg.SOLVER.BASE_LR:g}, SOLVER.WARMUP_ITERS {cfg.SOLVER.WARMUP_ITERS}) for "
            f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH}; YOLACT uses 1e-3 for 8 images. "
            "Lower SOLVER.BASE_LR (scale it linearly with the batch), lengthen the warm-up"
            + ("" if cfg.SOLVER.CLIP_GRADIENTS.ENABLED else ", or enable SOLVER.CLIP_GRADIENTS")
            + ".",
        ]
        norm = cfg.MODEL.RESNETS.NORM
        bn_note = " (fewer than about 6: unstable)" if norm == "BN" and per_device < 6 else ""
        lines.append(
            f"- BatchNorm with tiny batches: MODEL.RESNETS.NORM is {norm!r} with {per_device} "
            f"image(s) per process{bn_note}; with fewer than about 6 images per process use "
            "'FrozenBN' (or 'SyncBN' on several GPUs)."
        )
        lines.append("- the data: look for degenerate boxes or masks in the images of this iteration.")
        if self.checkpointer.has_checkpoint():
            lines.append(
                f"The last complete checkpoint is {self.checkpointer.get_checkpoint_file()}: "
                "after changing the config, continue from it with --resume."
            )
        else:
            lines.append(
                "No checkpoint was written yet (SOLVER.CHECKPOINT_PERIOD "
                f"{cfg.SOLVER.CHECKPOINT_PERIOD}): training has to restart from the beginning."
            )
        return "\n".join(lines)

    @classmethod
    def build_model(cls, cfg):
        check_yolact_config(cfg)
        model = super().build_model(cfg)
        check_yolact_config(cfg, model)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        """``SOLVER.OPTIMIZER``: "SGD" (the original's, Detectron2's default) or "ADAMW"; both with
        Detectron2's per-parameter weight decay and LR factors and ``SOLVER.CLIP_GRADIENTS``."""
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        name = cfg.SOLVER.OPTIMIZER.upper()
        if name == "SGD":
            optimizer_cls, kwargs = torch.optim.SGD, {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
        elif name == "ADAMW":
            # fused: one kernel for the whole update, the same AdamW arithmetic (float rounding aside);
            # 7 % less per iteration of the synthetic config on CPU (docs/BENCHMARKS.md, main job).
            optimizer_cls, kwargs = torch.optim.AdamW, {"fused": True}
        else:
            raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'ADAMW', got {cfg.SOLVER.OPTIMIZER!r}")
        clip = cfg.SOLVER.CLIP_GRADIENTS
        if clip.ENABLED and clip.CLIP_TYPE == "norm":
            optimizer_cls = with_foreach_norm_clipping(optimizer_cls, clip.CLIP_VALUE, clip.NORM_TYPE)
        else:
            optimizer_cls = maybe_add_gradient_clipping(cfg, optimizer_cls)
        return optimizer_cls(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **kwargs)

    @classmethod
    def build_train_loader(cls, cfg):
        mapper_name = cfg.INPUT.DATASET_MAPPER_NAME
        if mapper_name == "yolact":
            mapper = YolactDatasetMapper(cfg, is_train=True)
        elif mapper_name == "detectron2":
            mapper = DatasetMapper(cfg, is_train=True)
        else:
            raise ValueError(f"INPUT.DATASET_MAPPER_NAME must be 'yolact' or 'detectron2', got {mapper_name!r}")
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        check_num_classes(cfg, cfg.DATASETS.TRAIN)  # metadata is complete once the dicts are loaded
        if isinstance(mapper, YolactDatasetMapper):
            mapper.dataset_size = len(dataset)  # to stop, not loop, when every image is bad
        loader = build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)
        return _BadImageTally(loader) if isinstance(mapper, YolactDatasetMapper) else loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = YolactDatasetMapper(cfg, is_train=False) if cfg.INPUT.DATASET_MAPPER_NAME == "yolact" else None
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        check_num_classes(cfg, [dataset_name], "DATASETS.TEST")
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        # COCOEvaluator that ranks masks by Instances.mask_scores when the model sets them
        # (YOLACT++ mask re-scoring, docs/MODEL.md §9.7); identical to COCOEvaluator otherwise.
        return YolactCOCOEvaluator(
            dataset_name, tasks=("bbox", "segm"), distributed=True, output_dir=output_folder,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE, eval_backend=cfg.TEST.COCO_EVAL_BACKEND,
        )
