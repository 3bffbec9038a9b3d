"""The LR schedule of the LazyConfigs, and the original's batch-size scaling of it (docs/MODEL.md §8).

:func:`warmup_multistep_multiplier` is the multiplier Detectron2's yacs ``build_lr_scheduler`` makes for
``SOLVER.LR_SCHEDULER_NAME "WarmupMultiStepLR"``, as a function of plain numbers that a LazyConfig's
``lr_multiplier`` calls (so that ``train.max_iter`` given on the command line also moves the warm-up
fraction). :func:`scaled_schedule` is the original's ``--autoscale``: the LR, iterations and steps for a
total batch other than the reference one.
"""
from typing import Dict, Sequence

from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.solver import WarmupParamScheduler

__all__ = ["warmup_multistep_multiplier", "scaled_schedule"]


def warmup_multistep_multiplier(
    max_iter: int,
    steps: Sequence[int],
    warmup_iters: int,
    warmup_factor: float = 0.1,
    gamma: float = 0.1,
    warmup_method: str = "linear",
    rescale_interval: bool = False,
) -> WarmupParamScheduler:
    """The LR multiplier of ``SOLVER.MAX_ITER / STEPS / WARMUP_ITERS / WARMUP_FACTOR / GAMMA /
    WARMUP_METHOD / RESCALE_INTERVAL`` with Detectron2's ``WarmupMultiStepLR``: ``gamma ** k`` after the
    k-th step (steps beyond ``max_iter`` are ignored), linear warm-up from ``warmup_factor`` over
    ``warmup_iters`` iterations. Same values as the yaml path, iteration for iteration."""
    max_iter = int(max_iter)
    steps = [int(s) for s in steps if s <= max_iter]
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
) -> Dict:
    """The original's ``--autoscale`` for a total batch of ``total_batch_size`` images: with
    ``f = total_batch_size / reference_batch_size``, ``lr = base_lr * f``, ``max_iter = max_iter // f`` and
    every step ``// f``; the warm-up keeps its length in iterations, as in the original. The defaults are
    the COCO schedule at batch 8 (LR 1e-3, 800k iterations). Returns ``dict(lr, max_iter, steps,
    warmup_iters)``; ``f == 1`` returns the inputs unchanged.

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
    }
