from .batch_scaling import scale_schedule_to_batch
from .build import build_optimizer, make_optimizer, with_foreach_norm_clipping
from .lr_schedule import scaled_schedule, warmup_multistep_multiplier
from .lr_scheduler import YolactWarmupMultiStepLR, build_lr_scheduler

__all__ = [
    "build_optimizer", "make_optimizer", "with_foreach_norm_clipping", "build_lr_scheduler", "YolactWarmupMultiStepLR",
    "scale_schedule_to_batch", "scaled_schedule", "warmup_multistep_multiplier",
]
