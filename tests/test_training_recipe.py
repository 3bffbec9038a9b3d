"""The original YOLACT's training recipe at any batch (docs/MODEL.md §8): the schedule scaled as the
original's --autoscale by SOLVER.REFERENCE_IMS_PER_BATCH (and Detectron2's REFERENCE_WORLD_SIZE rule not on
top), the original's LR at every iteration, BatchNorm frozen below 6 images per process, the optimizer per
parameter, and batches that mix image orientations. Expected values are computed by hand from the original
train.py: lr *= B/8, max_iter //= B/8, steps //= B/8; before iteration t: (lr - 1e-4) * (t / 500) + 1e-4 while
t <= 500, lr * 0.1 ** k from the k-th step on."""
import json
import os
import uuid

import pytest
import torch
from torch import nn

from yolact_d2 import YolactTrainer
from yolact_d2.data.datasets import register_datasets_from_config
from yolact_d2.engine.frozen_bn import EvalModeBatchNorm2d, freeze_bn_for_small_batches
from yolact_d2.solver import build_lr_scheduler, scale_schedule_to_batch
from yolact_d2.utils.errors import ConfigError

from conftest import small_synthetic_coco, tiny_cfg, yolact_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

R50 = "COCO-InstanceSegmentation/yolact_R_50_FPN_550.yaml"
ORIGINAL_STEPS = (280000, 600000, 700000, 750000)


def _lr_of(scheduler, iteration):
    """The LR the trainer uses at ``iteration`` (the scheduler's state after ``iteration`` steps)."""
    scheduler.last_epoch = iteration - 1
    scheduler.step()
    return scheduler.optimizer.param_groups[0]["lr"]


def _scheduler(cfg):
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.SOLVER.BASE_LR, momentum=0.9)
    scheduler = build_lr_scheduler(cfg, optimizer)
    optimizer.step()  # no gradient: changes nothing (torch warns about a scheduler step before any)
    return scheduler


# (batch, scaled LR, max_iter, steps) from the original's formulas with factor B / 8
SCALED = {
    4: (0.001 * 0.5, 1600000, (560000, 1200000, 1400000, 1500000)),
    8: (0.001, 800000, ORIGINAL_STEPS),
    16: (0.001 * 2.0, 400000, (140000, 300000, 350000, 375000)),
}


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("batch", [4, 8, 16])
def test_schedule_scaled_to_the_total_batch_as_the_original(batch, world_size):
    cfg = scale_schedule_to_batch(yolact_cfg(R50, ["SOLVER.IMS_PER_BATCH", batch]), world_size)
    lr, max_iter, steps = SCALED[batch]
    s = cfg.SOLVER
    assert (s.BASE_LR, s.MAX_ITER, tuple(s.STEPS), s.WARMUP_ITERS) == (lr, max_iter, steps, 500)
    assert s.IMS_PER_BATCH == batch  # the total over all processes, not multiplied by the world size
    assert s.BASE_LR * s.WARMUP_FACTOR == 1e-4  # the warm-up starts at the original's absolute LR
    sched = _scheduler(cfg)
    expected = {
        0: 1e-4,
        1: (lr - 1e-4) * (1 / 500) + 1e-4,
        250: (lr - 1e-4) * (250 / 500) + 1e-4,
        499: (lr - 1e-4) * (499 / 500) + 1e-4,
        500: (lr - 1e-4) * (500 / 500) + 1e-4,
        501: (lr - 1e-4) * (500 / 500) + 1e-4,
        steps[0] - 1: (lr - 1e-4) * (500 / 500) + 1e-4,
        steps[0]: lr * 0.1,
        steps[1] - 1: lr * 0.1,
        steps[1]: lr * 0.1**2,
        steps[2]: lr * 0.1**3,
        steps[3] - 1: lr * 0.1**3,
        steps[3]: lr * 0.1**4,
        max_iter - 1: lr * 0.1**4,
    }
    for iteration, value in expected.items():
        assert _lr_of(sched, iteration) == value, iteration


def test_every_iteration_of_the_warm_up_and_first_step_at_batch_4():
    """Stepped like the trainer's LRScheduler hook; Detectron2's WarmupMultiStepLR ends the warm-up and
    takes each step one iteration early at MAX_ITER 1.6M."""
    cfg = scale_schedule_to_batch(yolact_cfg(R50, ["SOLVER.IMS_PER_BATCH", 4, "SOLVER.STEPS", (300,)]), 1)
    sched = _scheduler(cfg)
    assert tuple(cfg.SOLVER.STEPS) == (600,)
    for t in range(700):
        expected = (0.0005 - 1e-4) * (min(t, 500) / 500) + 1e-4 if t < 600 else 0.0005 * 0.1
        assert sched.optimizer.param_groups[0]["lr"] == expected, t
        sched.step()


@pytest.mark.parametrize("world_size", [2, 8])
def test_detectron2_reference_world_size_rule_is_not_applied_on_top(world_size):
    cfg = yolact_cfg(R50, ["SOLVER.IMS_PER_BATCH", 16])
    assert cfg.SOLVER.REFERENCE_WORLD_SIZE == 0
    scaled = scale_schedule_to_batch(cfg, world_size)
    assert (scaled.SOLVER.IMS_PER_BATCH, scaled.SOLVER.BASE_LR, scaled.SOLVER.WARMUP_ITERS) == (16, 0.002, 500)
    with pytest.raises(ConfigError, match="SOLVER.REFERENCE_WORLD_SIZE 1 with SOLVER.REFERENCE_IMS_PER_BATCH 8"):
        scale_schedule_to_batch(yolact_cfg(R50, ["SOLVER.REFERENCE_WORLD_SIZE", 1]), world_size)
    # rule off: the keys as written, or Detectron2's rule when asked for
    off = yolact_cfg(R50, ["SOLVER.IMS_PER_BATCH", 16, "SOLVER.REFERENCE_IMS_PER_BATCH", 0])
    assert scale_schedule_to_batch(off, world_size).SOLVER.BASE_LR == 0.001
    off.SOLVER.REFERENCE_WORLD_SIZE = 1
    assert scale_schedule_to_batch(off, world_size).SOLVER.IMS_PER_BATCH == 16 * world_size


def test_scaling_that_leaves_no_iteration_is_an_error():
    cfg = yolact_cfg(R50, ["SOLVER.IMS_PER_BATCH", 64, "SOLVER.MAX_ITER", 7, "SOLVER.STEPS", ()])
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER 7"):
        scale_schedule_to_batch(cfg, 1)
