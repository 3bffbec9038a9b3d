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


# ------------------------------------------------------------------------------------------------
# BatchNorm below 6 images per process, the optimizer per parameter
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 6, 2, seed=5)


def _trainer(coco, out, *opts):
    (train_json, train_root), (val_json, val_root) = coco
    tag = f"recipe_{uuid.uuid4().hex[:8]}"
    cfg = tiny_cfg(num_classes=6, opts=[
        "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.CHECKPOINT_PERIOD", 100,
        "TEST.EVAL_PERIOD", 0, "SEED", 1, "OUTPUT_DIR", str(out),
        "DATASETS.COCO_INSTANCES", str([[f"{tag}_train", train_json, train_root], [f"{tag}_val", val_json, val_root]]),
        "DATASETS.TRAIN", f"('{tag}_train',)", "DATASETS.TEST", "()", *opts,
    ])
    register_datasets_from_config(cfg)
    return YolactTrainer(cfg)


def _bn_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if ".norm." in k or "bn" in k}


@pytest.mark.parametrize("threshold", [6, 0])
def test_bn_frozen_below_6_images_per_process_or_trained_on_request(coco, tmp_path, threshold):
    trainer = _trainer(coco, tmp_path / "out", "SOLVER.MAX_ITER", 2, "SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE", threshold)
    model = trainer.model
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 20  # ResNet-18: stem + 2 x 8 blocks + 3 shortcuts
    before = _bn_state(model)
    assert before and all(k.startswith("backbone.bottom_up.") for k in before)
    conv = model.backbone.bottom_up.stem.conv1.weight.detach().clone()
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    trainer.train()
    after = _bn_state(model)
    assert not torch.equal(conv, model.backbone.bottom_up.stem.conv1.weight)  # the rest trains
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if threshold:  # frozen: eval mode, weight/bias without gradient, nothing changes
        assert all(type(m) is EvalModeBatchNorm2d and not m.training for m in bns)
        assert all(not m.weight.requires_grad and id(m.weight) not in optimized for m in bns)
        assert changed == set()
    else:  # trained: running statistics, counters, weight and bias all move
        assert all(type(m) is nn.BatchNorm2d and m.training for m in bns)
        assert changed == set(before)
        assert int(after["backbone.bottom_up.stem.conv1.norm.num_batches_tracked"]) == 2


def test_only_plain_bn_is_frozen_and_it_stays_in_eval_mode():
    from detectron2.layers import FrozenBatchNorm2d

    model = nn.Sequential(nn.BatchNorm2d(4), nn.SyncBatchNorm(4), FrozenBatchNorm2d(4), nn.GroupNorm(2, 4))
    cfg = tiny_cfg(opts=["SOLVER.IMS_PER_BATCH", 10])
    assert freeze_bn_for_small_batches(cfg, model, world_size=2) == 1  # 5 per process
    model.train()
    assert type(model[0]) is EvalModeBatchNorm2d and not model[0].training and not model[0].weight.requires_grad
    assert type(model[1]) is nn.SyncBatchNorm and model[1].training and model[1].weight.requires_grad
    assert isinstance(model[2], FrozenBatchNorm2d) and model[3].weight.requires_grad
    assert list(model.state_dict()) == list(nn.Sequential(nn.BatchNorm2d(4)).state_dict()) + [
        k for k in model.state_dict() if not k.startswith("0.")]
    # 6 per process: trained, as in the original
    fresh = nn.Sequential(nn.BatchNorm2d(4))
    assert freeze_bn_for_small_batches(cfg, fresh, world_size=1) == 0 and type(fresh[0]) is nn.BatchNorm2d


def test_optimizer_per_parameter_is_the_originals_sgd():
    """The original: optim.SGD(net.parameters(), lr, momentum=0.9, weight_decay=5e-4): every parameter
    (BN and biases included) trained with the same LR, momentum and decay."""
    cfg = yolact_cfg(R50, ["MODEL.YOLACT.NUM_CLASSES", 3, "INPUT.IMAGE_SIZE", 128])
    model = YolactTrainer.build_model(cfg)
    params = list(model.parameters())
    assert all(p.requires_grad for p in params)
    optimizer = YolactTrainer.build_optimizer(cfg, model)
    assert type(optimizer) is torch.optim.SGD
    grouped = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert set(grouped) == {id(p) for p in params}
    for group in optimizer.param_groups:
        assert (group["lr"], group["momentum"], group["weight_decay"], group["dampening"], group["nesterov"]) == (
            0.001, 0.9, 0.0005, 0, False)


def test_yolact_configs_mix_orientations_in_a_batch():
    for config in ("Base-YOLACT.yaml", R50, "Custom/yolact_R_50_FPN_550_finetune.yaml"):
        assert yolact_cfg(config).DATALOADER.ASPECT_RATIO_GROUPING is False


def test_trainer_lr_per_iteration_at_batch_2(coco, tmp_path):
    """Batch 2 = 1/4 of the reference: LR 0.00025 after a 500-iteration warm-up from 1e-4 (metrics.json)."""
    trainer = _trainer(coco, tmp_path / "out", "SOLVER.MAX_ITER", 12, "SOLVER.STEPS", (8,),
                       "SOLVER.REFERENCE_IMS_PER_BATCH", 8)
    assert (trainer.cfg.SOLVER.MAX_ITER, tuple(trainer.cfg.SOLVER.STEPS)) == (48, (32,))
    trainer.max_iter = 3
    trainer.train()
    with open(os.path.join(trainer.cfg.OUTPUT_DIR, "metrics.json")) as f:
        lrs = {r["iteration"]: r["lr"] for r in map(json.loads, f) if "lr" in r}
    assert lrs == {2: (0.00025 - 1e-4) * (2 / 500) + 1e-4}


@pytest.mark.parametrize("key, value", [
    ("SOLVER.REFERENCE_IMS_PER_BATCH", -8), ("SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE", 2.5),
    ("SOLVER.NONFINITE_LOSS.MAX_CONSECUTIVE", 0), ("SOLVER.NONFINITE_LOSS.MAX_SKIPPED_FRACTION", 1.5),
])
def test_recipe_keys_out_of_range_are_config_errors(key, value):
    from yolact_d2.runtime.run_checks import check_training_config

    with pytest.raises(ConfigError, match=f"^{key} {value}"):
        check_training_config(tiny_cfg(opts=[key, value]))
