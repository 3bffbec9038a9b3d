"""The LR schedule of the LazyConfigs, and the original's batch-size scaling of it (the same rule as the
yaml configs', so that both config systems train alike).

:func:`warmup_multistep_multiplier` is the multiplier the yacs path's ``build_lr_scheduler`` makes for
``SOLVER.LR_SCHEDULER_NAME "WarmupMultiStepLR"``, as a function of plain numbers that a LazyConfig's
``lr_multiplier`` calls (so that ``train.max_iter`` given on the command line also moves the warm-up
fraction): with ``original_arithmetic`` the original's per-iteration LR (as ``SOLVER.REFERENCE_IMS_PER_BATCH``
> 0 gives), else Detectron2's. :func:`scaled_schedule` is the original's ``--autoscale``, the one rule both
config systems use: the LR, iterations, steps and warm-up for a total batch other than the reference one.
"""
from typing import Dict, Sequence

from fvcore.common.param_scheduler import MultiStepParamScheduler, ParamScheduler

from detectron2.solver import WarmupParamScheduler

from .lr_scheduler import yolact_lr_at

__all__ = ["warmup_multistep_multiplier", "scaled_schedule", "OriginalWarmupMultiStep"]


class OriginalWarmupMultiStep(ParamScheduler):
    """:func:`~yolact_d2.solver.lr_scheduler.yolact_lr_at` as a multiplier of the base LR. Detectron2's
    ``LRMultiplier`` calls it with ``iteration / max_iter``; the iteration is recovered exactly and the LR is
    computed at whole iterations, as in the original (Detectron2's own scheduler evaluates the fraction)."""

    def __init__(self, max_iter: int, steps: Sequence[int], warmup_iters: int, warmup_factor: float, gamma: float):
        self.max_iter, self.steps = int(max_iter), sorted(int(s) for s in steps)
        self.warmup_iters, self.warmup_factor, self.gamma = int(warmup_iters), float(warmup_factor), float(gamma)

    def __call__(self, where: float) -> float:
        iteration = int(round(where * self.max_iter))
        return yolact_lr_at(iteration, 1.0, self.warmup_factor, self.warmup_iters, self.steps, self.gamma)


def warmup_multistep_multiplier(
    max_iter: int,
    steps: Sequence[int],
    warmup_iters: int,
    warmup_factor: float = 0.1,
    gamma: float = 0.1,
    warmup_method: str = "linear",
    rescale_interval: bool = False,
    original_arithmetic: bool = False,
) -> ParamScheduler:
    """The LR multiplier of ``SOLVER.MAX_ITER / STEPS / WARMUP_ITERS / WARMUP_FACTOR / GAMMA /
    WARMUP_METHOD / RESCALE_INTERVAL`` with Detectron2's ``WarmupMultiStepLR``: ``gamma ** k`` after the
    k-th step (steps beyond ``max_iter`` are ignored), linear warm-up from ``warmup_factor`` over
    ``warmup_iters`` iterations. Same values as the yaml path, iteration for iteration.
    ``original_arithmetic`` (linear warm-up only): :class:`OriginalWarmupMultiStep`."""
    max_iter = int(max_iter)
    steps = [int(s) for s in steps if s <= max_iter]
    if original_arithmetic and warmup_method == "linear" and not rescale_interval:
        return OriginalWarmupMultiStep(max_iter, steps, warmup_iters, warmup_factor, gamma)
    multistep = MultiStepParamScheduler(
        values=[gamma**k for k in range(len(steps) + 1)], milestones=steps, num_updates=max_iter
    )
    return WarmupParamScheduler(
        multistep, warmup_factor, min(warmup_iters / max_iter, 1.0), warmup_method, rescale_interval
    )


def scaled_schedule(
    total_batch_size: int,
    *,
    reference_batch_size: int = 8,
    base_lr: float = 1e-3,
    max_iter: int = 800000,
    steps: Sequence[int] = (280000, 600000, 700000, 750000),
    warmup_iters: int = 500,
    warmup_factor: float = 0.1,
) -> Dict:
    """The original's ``--autoscale`` for a total batch of ``total_batch_size`` images: with
    ``f = total_batch_size / reference_batch_size``, ``lr = base_lr * f``, ``max_iter = max_iter // f`` and
    every step ``// f``; the warm-up keeps its length in iterations and its absolute starting LR, as in
    the original (so ``warmup_factor / f``: the factor is relative to the LR). The defaults are the COCO
    schedule at batch 8 (LR 1e-3, 800k iterations). Returns ``dict(lr, max_iter, steps, warmup_iters,
    warmup_factor)``; ``f == 1`` returns the inputs unchanged.

    Example (batch 16): ``lr 2e-3``, ``max_iter 400000``, ``steps (140000, 300000, 350000, 375000)``.
    """
    if total_batch_size < 1 or reference_batch_size < 1:
        raise ValueError(f"batch sizes must be >= 1, got {total_batch_size} and reference {reference_batch_size}")
    factor = total_batch_size / reference_batch_size
    return {
        "lr": base_lr * factor,
        "max_iter": int(max_iter // factor),
        "steps": tuple(int(s // factor) for s in steps),
        "warmup_iters": int(warmup_iters),
        "warmup_factor": warmup_factor / factor,
    }
