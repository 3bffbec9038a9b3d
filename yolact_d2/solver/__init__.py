from .build import build_optimizer, make_optimizer, with_foreach_norm_clipping
from .lr_schedule import scaled_schedule, warmup_multistep_multiplier

__all__ = [
    "build_optimizer",
    "make_optimizer",
    "with_foreach_norm_clipping",
    "scaled_schedule",
    "warmup_multistep_multiplier",
]
