"""One rule for the schedule at any batch and any number of processes, so that a run on other hardware
trains as the original's recipe: the original's ``--autoscale``. The schedule keys are written for
``SOLVER.REFERENCE_IMS_PER_BATCH`` images per iteration (8 in the YOLACT configs); for a total batch B
(``SOLVER.IMS_PER_BATCH``, over all processes) with ``f = B / REFERENCE_IMS_PER_BATCH``:

* ``BASE_LR x f``;
* ``MAX_ITER // f`` and every ``STEPS // f`` (the original's float floor division), so the same number
  of images is seen and the LR drops after the same number of images;
* the warm-up unchanged: ``WARMUP_ITERS`` iterations from the same absolute LR, so
  ``WARMUP_FACTOR / f`` (Detectron2's factor is relative to ``BASE_LR``);
* checkpoint and evaluation periods unchanged (iterations, as the original's ``--save_interval``).

Detectron2's ``SOLVER.REFERENCE_WORLD_SIZE`` rule (``DefaultTrainer.auto_scale_workers``) would scale
again by the number of processes and shorten the warm-up, so the two cannot be combined; with this rule
off it applies as in Detectron2.
"""
import logging

from detectron2.engine import DefaultTrainer

from ..utils.errors import ConfigError
from .lr_schedule import scaled_schedule

__all__ = ["scale_schedule_to_batch"]

logger = logging.getLogger(__name__)


def scale_schedule_to_batch(cfg, world_size: int):
    """The config to train with: ``cfg`` scaled by the rule above (a copy; ``cfg`` itself when nothing
    changes), logged once. With ``SOLVER.REFERENCE_IMS_PER_BATCH 0``, Detectron2's
    ``auto_scale_workers`` (a no-op unless ``SOLVER.REFERENCE_WORLD_SIZE`` is set)."""
    s = cfg.SOLVER
    reference = s.REFERENCE_IMS_PER_BATCH
    if reference < 0:
        raise ConfigError(f"SOLVER.REFERENCE_IMS_PER_BATCH {reference}", "must be >= 0 (0: no scaling)")
    if reference == 0:
        return DefaultTrainer.auto_scale_workers(cfg, world_size)
    if s.REFERENCE_WORLD_SIZE:
        raise ConfigError(
            f"SOLVER.REFERENCE_WORLD_SIZE {s.REFERENCE_WORLD_SIZE} with SOLVER.REFERENCE_IMS_PER_BATCH {reference}",
            "both scale the schedule (Detectron2's rule would scale it again by the number of processes)",
            fix="set SOLVER.REFERENCE_WORLD_SIZE 0: SOLVER.IMS_PER_BATCH is the total batch over all processes",
        )
    batch = s.IMS_PER_BATCH
    factor = batch / reference
    if factor != 1:
        cfg = _scaled(cfg, factor)
    s = cfg.SOLVER
    logger.info(
        f"Schedule for SOLVER.IMS_PER_BATCH {batch} on {world_size} process(es) (x{factor:g} the "
        f"SOLVER.REFERENCE_IMS_PER_BATCH {reference} the keys are written for): BASE_LR {s.BASE_LR:g}, MAX_ITER "
        f"{s.MAX_ITER}, STEPS {tuple(s.STEPS)}, warm-up {s.WARMUP_ITERS} iterations from LR "
        f"{s.BASE_LR * s.WARMUP_FACTOR:g} (WARMUP_FACTOR {s.WARMUP_FACTOR:g})"
    )
    return cfg


def _scaled(cfg, factor: float):
    s = cfg.SOLVER
    scaled = scaled_schedule(
        s.IMS_PER_BATCH, reference_batch_size=s.REFERENCE_IMS_PER_BATCH, base_lr=s.BASE_LR, max_iter=s.MAX_ITER,
        steps=s.STEPS, warmup_iters=s.WARMUP_ITERS, warmup_factor=s.WARMUP_FACTOR,
    )
    if scaled["max_iter"] < 1:
        raise ConfigError(
            f"SOLVER.MAX_ITER {s.MAX_ITER}",
            f"scaled to SOLVER.IMS_PER_BATCH {s.IMS_PER_BATCH} (// {factor:g}) leaves no iteration",
            fix="raise SOLVER.MAX_ITER, or set SOLVER.REFERENCE_IMS_PER_BATCH 0 to use the keys as written",
        )
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    s = cfg.SOLVER
    s.BASE_LR, s.MAX_ITER, s.STEPS = scaled["lr"], scaled["max_iter"], scaled["steps"]
    s.WARMUP_ITERS, s.WARMUP_FACTOR = scaled["warmup_iters"], scaled["warmup_factor"]
    if frozen:
        cfg.freeze()
    return cfg
