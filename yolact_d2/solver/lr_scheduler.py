"""The original YOLACT's learning-rate schedule, to the iteration: with the original's recipe on
(``SOLVER.REFERENCE_IMS_PER_BATCH`` > 0), ``SOLVER.LR_SCHEDULER_NAME "WarmupMultiStepLR"`` with a linear
warm-up is evaluated at integer iterations with the original's arithmetic.

Detectron2's ``WarmupMultiStepLR`` has the same shape but evaluates it at ``iteration / MAX_ITER`` with a
1e-6 tolerance: with ``MAX_ITER`` above 1e6 (800k iterations scaled to a batch of 4) every LR step and
the end of the warm-up come one iteration early, and the warm-up values differ in the last bits.
"""
import bisect

import torch

from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler

__all__ = ["YolactWarmupMultiStepLR", "build_lr_scheduler", "yolact_lr_at"]


def yolact_lr_at(iteration: int, base_lr: float, warmup_start_lr: float, warmup_iters: int, steps, gamma: float):
    """The LR of ``iteration`` (0-based) as the original ``train.py`` sets it before that iteration's step:
    ``(base_lr - warmup_start_lr) * (iteration / warmup_iters) + warmup_start_lr`` up to ``warmup_iters``
    (kept until the first step), then ``base_lr * gamma ** k`` after the k-th of ``steps`` (sorted).
    A step inside the warm-up multiplies the warm-up value (the original loses it at the next iteration)."""
    k = bisect.bisect_right(steps, iteration)
    if warmup_iters > 0 and (k == 0 or iteration < warmup_iters):
        lr = (base_lr - warmup_start_lr) * (min(iteration, warmup_iters) / warmup_iters) + warmup_start_lr
        return lr * gamma**k if k else lr
    return base_lr * (gamma**k) if k else base_lr


class YolactWarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """:func:`yolact_lr_at` for every param group: a group whose initial LR is not ``base_lr`` (e.g.
    ``SOLVER.BIAS_LR_FACTOR``) gets the same schedule times its ratio to ``base_lr``."""

    def __init__(self, optimizer, base_lr: float, warmup_factor: float, warmup_iters: int, steps, gamma: float,
                 last_epoch: int = -1):
        self.base_lr = base_lr
        self.warmup_start_lr = base_lr * warmup_factor
        self.warmup_iters = int(warmup_iters)
        self.steps = sorted(steps)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def state_dict(self):
        # the schedule comes from the config (which may scale it to another batch on resume): only the position
        return {"last_epoch": self.last_epoch}

    def get_lr(self):
        lr = yolact_lr_at(self.last_epoch, self.base_lr, self.warmup_start_lr, self.warmup_iters, self.steps,
                          self.gamma)
        return [lr if group_lr == self.base_lr else lr * (group_lr / self.base_lr) for group_lr in self.base_lrs]


def build_lr_scheduler(cfg, optimizer):
    """:class:`YolactWarmupMultiStepLR` for Detectron2's "WarmupMultiStepLR" with a linear warm-up when
    ``SOLVER.REFERENCE_IMS_PER_BATCH`` > 0 (the YOLACT configs); Detectron2's scheduler otherwise."""
    s = cfg.SOLVER
    if s.REFERENCE_IMS_PER_BATCH > 0 and s.LR_SCHEDULER_NAME == "WarmupMultiStepLR" and s.WARMUP_METHOD == "linear":
        return YolactWarmupMultiStepLR(optimizer, s.BASE_LR, s.WARMUP_FACTOR, s.WARMUP_ITERS, s.STEPS, s.GAMMA)
    return d2_build_lr_scheduler(cfg, optimizer)
