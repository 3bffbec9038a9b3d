from .build import build_optimizer, with_foreach_norm_clipping

__all__ = ["build_optimizer", "with_foreach_norm_clipping"]
