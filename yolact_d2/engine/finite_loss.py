"""Stopping on a non-finite loss before it reaches the weights (docs/RELIABILITY.md): Detectron2
checks only the sum of the losses, and only on the main process; here every term is checked on
every process and the error says which term, at which iteration, and what to change."""
import math

import torch

from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils import comm

__all__ = ["NonFiniteLossError", "FiniteSimpleTrainer", "FiniteAMPTrainer", "nonfinite_loss_hints"]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite (raised before the optimizer step of that iteration)."""


class _FiniteLossCheck:
    """Mixin for Detectron2's SimpleTrainer / AMPTrainer: checks every loss term of every
    iteration and raises :class:`NonFiniteLossError` with all the terms and the hints of the outer
    trainer. The check runs in ``_write_metrics``, i.e. after ``backward`` and before
    ``optimizer.step``, so the weights are never updated from a non-finite loss."""

    hint_source = None  # weakref to the YolactTrainer, for the hints

    def _write_metrics(self, loss_dict, data_time, prefix="", iter=None):
        tensors = [v.detach().float().reshape(-1) for v in loss_dict.values() if isinstance(v, torch.Tensor)]
        if tensors and bool(torch.isfinite(torch.cat(tensors)).all()) and len(tensors) == len(loss_dict):
            return super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)  # one sync
        cur_iter = self.iter if iter is None else iter
        values = {
            k: float(v.detach().float().sum().item()) if isinstance(v, torch.Tensor) else float(v)
            for k, v in loss_dict.items()
        }
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            terms = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
            outer = self.hint_source() if self.hint_source is not None else None
            hints = outer.nonfinite_loss_hints() if outer is not None else ""
            raise NonFiniteLossError(
                f"Non-finite loss at iteration {cur_iter} (process rank {comm.get_rank()}): "
                f"{terms} (non-finite: {', '.join(bad)}). The weights were not updated from it.\n"
                f"{hints}"
            )
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


class FiniteSimpleTrainer(_FiniteLossCheck, SimpleTrainer):
    pass


class FiniteAMPTrainer(_FiniteLossCheck, AMPTrainer):
    pass


def nonfinite_loss_hints(cfg, optimizer, checkpointer) -> str:
    """Hints appended to :class:`NonFiniteLossError`: the current values of the keys that usually
    cause it, and where to resume from."""
    lr = max(g["lr"] for g in optimizer.param_groups)
    per_device = max(cfg.SOLVER.IMS_PER_BATCH // max(comm.get_world_size(), 1), 1)
    lines = [
        "Hints:",
        f"- learning rate vs batch size: the LR is {lr:.3g} now (SOLVER.BASE_LR "
        f"{cfg.SOLVER.BASE_LR:g}, SOLVER.WARMUP_ITERS {cfg.SOLVER.WARMUP_ITERS}) for "
        f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH}; YOLACT uses 1e-3 for 8 images. "
        "Lower SOLVER.BASE_LR (scale it linearly with the batch), lengthen the warm-up"
        + ("" if cfg.SOLVER.CLIP_GRADIENTS.ENABLED else ", or enable SOLVER.CLIP_GRADIENTS")
        + ".",
    ]
    norm = cfg.MODEL.RESNETS.NORM
    bn_note = " (fewer than about 6: unstable)" if norm == "BN" and per_device < 6 else ""
    lines.append(
        f"- BatchNorm with tiny batches: MODEL.RESNETS.NORM is {norm!r} with {per_device} "
        f"image(s) per process{bn_note}; with fewer than about 6 images per process use "
        "'FrozenBN' (or 'SyncBN' on several GPUs)."
    )
    lines.append("- the data: look for degenerate boxes or masks in the images of this iteration.")
    if checkpointer.has_checkpoint():
        lines.append(
            f"The last complete checkpoint is {checkpointer.get_checkpoint_file()}: "
            "after changing the config, continue from it with --resume."
        )
    else:
        lines.append(
            "No checkpoint was written yet (SOLVER.CHECKPOINT_PERIOD "
            f"{cfg.SOLVER.CHECKPOINT_PERIOD}): training has to restart from the beginning."
        )
    return "\n".join(lines)
