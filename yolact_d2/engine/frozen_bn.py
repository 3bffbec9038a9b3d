"""BatchNorm at small batches (``SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE``, the original's recipe): below that
many images per process, every BatchNorm layer is frozen as the original's ``freeze_bn`` does: eval
mode for good (running statistics used and never updated) and weight and bias without gradients (no
update, no weight decay). The layers stay BatchNorm layers with the same state-dict keys, so checkpoints
load and resume either way."""
import logging

from torch import nn

__all__ = ["EvalModeBatchNorm2d", "freeze_bn_for_small_batches", "frozen_bn_layers"]

logger = logging.getLogger(__name__)


class EvalModeBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that stays in eval mode when its model is put in training mode."""

    def train(self, mode: bool = True):
        return super().train(False)


def freeze_bn_for_small_batches(cfg, model: nn.Module, world_size: int) -> int:
    """Freeze every plain ``nn.BatchNorm2d`` of ``model`` (Detectron2's "BN") when
    ``SOLVER.IMS_PER_BATCH / world_size`` is below ``SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE``; SyncBN,
    FrozenBN and GN layers are left as they are. Returns the number of layers frozen; logs the decision."""
    threshold = cfg.SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE
    per_device = cfg.SOLVER.IMS_PER_BATCH // max(world_size, 1)
    plain = [m for m in model.modules() if type(m) is nn.BatchNorm2d]
    synced = sum(isinstance(m, (nn.SyncBatchNorm, nn.BatchNorm2d)) and type(m) is not nn.BatchNorm2d
                 for m in model.modules())
    if not threshold or per_device >= threshold or not plain:
        if plain and per_device < 6:
            logger.info(f"BatchNorm trained with {per_device} image(s) per process "
                        f"(SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE {threshold})")
        return 0
    for m in plain:
        m.__class__ = EvalModeBatchNorm2d
        m.eval()
        for p in (m.weight, m.bias):
            if p is not None:
                p.requires_grad_(False)
    note = f"; {synced} synchronised BatchNorm layer(s) still trained" if synced else ""
    logger.info(
        f"BatchNorm frozen (running statistics and affine, as the original below 6 per GPU): {len(plain)} layer(s), "
        f"{per_device} image(s) per process < SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE {threshold}{note}. "
        "SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE 0 keeps them trained."
    )
    return len(plain)


def frozen_bn_layers(model: nn.Module):
    """The layers frozen by :func:`freeze_bn_for_small_batches` (for tests and logs)."""
    return [m for m in model.modules() if isinstance(m, EvalModeBatchNorm2d)]

