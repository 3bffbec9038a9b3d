# The original's LR schedule (docs/MODEL.md) for a batch of 8: LR 1e-3 (optimizer.lr), linear warm-up
# over 500 iterations from 1e-4, x0.1 at 280k/600k/700k/750k, 800k iterations (train.max_iter).
# For another total batch, scaled_schedule gives the original's --autoscale numbers (LR x f, iterations
# and steps / f with f = batch / 8); yolact_schedule applies them to a config in one call.
from detectron2.config import LazyCall as L

from yolact_d2.solver import scaled_schedule, warmup_multistep_multiplier

COCO_STEPS = (280000, 600000, 700000, 750000)

lr_multiplier = L(warmup_multistep_multiplier)(
    max_iter="${train.max_iter}",  # follows train.max_iter, also when it is given on the command line
    steps=list(COCO_STEPS),
    warmup_iters=500,
    warmup_factor=0.1,
    gamma=0.1,
    original_arithmetic=True,  # the original's LR at whole iterations, as SOLVER.REFERENCE_IMS_PER_BATCH gives
)


def yolact_schedule(cfg_optimizer, cfg_train, cfg_lr_multiplier, total_batch_size, reference_batch_size=8):
    """Set ``optimizer.lr``, ``train.max_iter`` and ``lr_multiplier.steps`` to the COCO schedule scaled from
    ``reference_batch_size`` to ``total_batch_size`` images per iteration (yolact_d2.solver.scaled_schedule,
    the same rule as the yaml configs' SOLVER.REFERENCE_IMS_PER_BATCH). Call it in a config file after
    changing dataloader.train.total_batch_size, e.g.
    ``yolact_schedule(optimizer, train, lr_multiplier, dataloader.train.total_batch_size)``."""
    scaled = scaled_schedule(
        total_batch_size, reference_batch_size=reference_batch_size, base_lr=1e-3, max_iter=800000,
        steps=COCO_STEPS, warmup_iters=500,
    )
    cfg_optimizer.lr = scaled["lr"]
    cfg_train.max_iter = scaled["max_iter"]
    cfg_lr_multiplier.steps = list(scaled["steps"])
    cfg_lr_multiplier.warmup_iters = scaled["warmup_iters"]
    cfg_lr_multiplier.warmup_factor = scaled["warmup_factor"]  # the warm-up still starts at LR 1e-4
    return scaled
