"""Non-finite losses (docs/RELIABILITY.md, ``SOLVER.NONFINITE_LOSS``): as the original YOLACT, an
iteration whose loss is NaN or infinite skips its optimizer step and training goes on; it is logged with
every loss term and counted (``nonfinite_loss_skipped`` in metrics.json and in checkpoints). Training
stops with :class:`NonFiniteLossError` after ``MAX_CONSECUTIVE`` of them in a row, or when more than
``MAX_SKIPPED_FRACTION`` of the last ``WINDOW`` iterations were skipped. Detectron2 checks only the sum of
the losses, only on the main process, and stops at the first; here every term is checked on every
process, and with several processes they agree (one flag each, all-reduced) so that all skip the same
steps."""
import collections
import logging
import math

import torch
import torch.distributed as dist

from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from ..utils.detectron2_internals import LossesBeforeOptimizerStep

__all__ = ["NonFiniteLossError", "FiniteSimpleTrainer", "FiniteAMPTrainer", "nonfinite_loss_hints"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Too many NaN or infinite losses (raised before the optimizer step of the last one)."""


class _FiniteLossCheck(LossesBeforeOptimizerStep):
    """Mixin for Detectron2's SimpleTrainer / AMPTrainer. The check runs when the step hands over its
    losses (:meth:`handle_losses`), i.e. after ``backward`` and before the optimizer step, so the weights
    are never updated from a non-finite loss: the step is skipped (the gradients are dropped; with AMP the
    grad scaler's step and update are skipped too), or training stops."""

    hint_source = None  # weakref to the YolactTrainer, for the hints
    max_consecutive = 10
    max_skipped_fraction = 0.1
    window = 100

    def configure_nonfinite_loss(self, cfg) -> None:
        """The limits of ``SOLVER.NONFINITE_LOSS``."""
        node = cfg.SOLVER.NONFINITE_LOSS
        self.max_consecutive = int(node.MAX_CONSECUTIVE)
        self.max_skipped_fraction = float(node.MAX_SKIPPED_FRACTION)
        self.window = int(node.WINDOW)

    @property
    def nonfinite_skipped(self) -> int:
        return getattr(self, "_nonfinite_skipped", 0)

    def handle_losses(self, loss_dict, data_time, prefix="", iter=None) -> None:
        self._skip_step = False
        finite = _is_finite(loss_dict)  # one sync
        bad_ranks = ([] if finite else [0]) if comm.get_world_size() == 1 else _nonfinite_ranks(loss_dict, finite)
        if not bad_ranks:
            self._count_step(skipped=False)
            return super().handle_losses(loss_dict, data_time, prefix=prefix, iter=iter)  # Detectron2's metrics
        self._skip(loss_dict, bad_ranks, self.iter if iter is None else iter)

    def _count_step(self, skipped: bool) -> None:
        recent = getattr(self, "_recent_skips", None)
        if recent is None or recent.maxlen != self.window:
            recent = self._recent_skips = collections.deque(recent or (), maxlen=self.window)
        recent.append(skipped)
        self._nonfinite_in_a_row = getattr(self, "_nonfinite_in_a_row", 0) + 1 if skipped else 0
        if skipped:
            self._nonfinite_skipped = self.nonfinite_skipped + 1
        if self.nonfinite_skipped:
            get_event_storage().put_scalar("nonfinite_loss_skipped", self.nonfinite_skipped, smoothing_hint=False)

    def _skip(self, loss_dict, bad_ranks, cur_iter) -> None:
        values = {
            k: float(v.detach().float().sum().item()) if isinstance(v, torch.Tensor) else float(v)
            for k, v in loss_dict.items()
        }
        bad = [k for k, v in values.items() if not math.isfinite(v)] or ["their sum"]
        terms = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
        rank = comm.get_rank()
        where = (f"process rank {rank}: {terms} (non-finite: {', '.join(bad)})" if rank in bad_ranks
                 else f"process rank(s) {', '.join(map(str, bad_ranks))}; here (rank {rank}): {terms}")
        self._count_step(skipped=True)
        in_a_row, recent = self._nonfinite_in_a_row, sum(self._recent_skips)
        stop = None
        if in_a_row >= self.max_consecutive:
            stop = f"{in_a_row} in a row (SOLVER.NONFINITE_LOSS.MAX_CONSECUTIVE {self.max_consecutive})"
        elif recent > self.max_skipped_fraction * self.window:
            stop = (f"{recent} of the last {self.window} iterations (more than SOLVER.NONFINITE_LOSS."
                    f"MAX_SKIPPED_FRACTION {self.max_skipped_fraction:g} of SOLVER.NONFINITE_LOSS.WINDOW)")
        if stop is not None:
            outer = self.hint_source() if self.hint_source is not None else None
            hints = outer.nonfinite_loss_hints() if outer is not None else ""
            raise NonFiniteLossError(
                f"Non-finite loss at iteration {cur_iter} ({where}); {stop}, {self.nonfinite_skipped} in all. "
                f"The weights were not updated from it.\n{hints}"
            )
        self._skip_step = True
        self.optimizer.zero_grad(set_to_none=True)  # optimizer.step() then changes nothing
        logger.warning(
            f"Non-finite loss at iteration {cur_iter} ({where}): optimizer step skipped, training goes on "
            f"({in_a_row} in a row, {recent} of the last {self.window} iterations, {self.nonfinite_skipped} in all; "
            f"it stops at SOLVER.NONFINITE_LOSS.MAX_CONSECUTIVE {self.max_consecutive} in a row)"
        )

    def state_dict(self):
        ret = super().state_dict()
        ret["nonfinite_loss_skipped"] = self.nonfinite_skipped
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._nonfinite_skipped = int(state_dict.get("nonfinite_loss_skipped", 0))


def _is_finite(loss_dict) -> bool:
    """Every term and their sum finite (the sum: inf - inf, or an overflow, as the original's check)."""
    tensors = [v.detach().float().reshape(-1) for v in loss_dict.values() if isinstance(v, torch.Tensor)]
    others = [float(v) for v in loss_dict.values() if not isinstance(v, torch.Tensor)]
    if not all(math.isfinite(v) for v in others) or not math.isfinite(sum(others)):
        return False
    return not tensors or bool(torch.isfinite(torch.cat(tensors).sum()))


def _nonfinite_ranks(loss_dict, finite: bool):
    """The ranks whose loss is not finite, the same list on every process (one all-reduce)."""
    tensors = [v for v in loss_dict.values() if isinstance(v, torch.Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    if dist.get_backend() == "nccl" and device.type != "cuda":
        device = torch.device(torch.cuda.current_device())  # NCCL reduces GPU tensors only
    flags = torch.zeros(comm.get_world_size(), device=device)
    flags[comm.get_rank()] = 0.0 if finite else 1.0
    dist.all_reduce(flags)
    return [r for r, flag in enumerate(flags.tolist()) if flag]


class FiniteSimpleTrainer(_FiniteLossCheck, SimpleTrainer):
    pass


class _StepSkippingGradScaler:
    """The AMP grad scaler of :class:`FiniteAMPTrainer`: ``step`` and ``update`` do nothing in an
    iteration whose optimizer step is skipped (the scaler refuses a step without gradients)."""

    def __init__(self, scaler, trainer):
        self._scaler, self._trainer = scaler, trainer

    def step(self, optimizer, *args, **kwargs):
        if not getattr(self._trainer, "_skip_step", False):
            return self._scaler.step(optimizer, *args, **kwargs)
        return None

    def update(self, *args, **kwargs):
        if not getattr(self._trainer, "_skip_step", False):
            self._scaler.update(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._scaler, name)


class FiniteAMPTrainer(_FiniteLossCheck, AMPTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.grad_scaler = _StepSkippingGradScaler(self.grad_scaler, self)


def nonfinite_loss_hints(cfg, optimizer, checkpointer) -> str:
    """Hints appended to :class:`NonFiniteLossError`: the current values of the keys that usually
    cause it, and where to resume from."""
    lr = max(g["lr"] for g in optimizer.param_groups)
    per_device = max(cfg.SOLVER.IMS_PER_BATCH // max(comm.get_world_size(), 1), 1)
    reference = cfg.SOLVER.REFERENCE_IMS_PER_BATCH
    lines = [
        "Hints:",
        f"- learning rate vs batch size: the LR is {lr:.3g} now (SOLVER.BASE_LR "
        f"{cfg.SOLVER.BASE_LR:g}, SOLVER.WARMUP_ITERS {cfg.SOLVER.WARMUP_ITERS}) for "
        f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH}; YOLACT uses 1e-3 for 8 images. "
        + (f"(SOLVER.BASE_LR scaled to the batch from SOLVER.REFERENCE_IMS_PER_BATCH {reference}.) "
           if reference else "")
        + "Lower SOLVER.BASE_LR (scale it linearly with the batch), lengthen the warm-up"
        + ("" if cfg.SOLVER.CLIP_GRADIENTS.ENABLED else ", or enable SOLVER.CLIP_GRADIENTS")
        + ".",
    ]
    norm = cfg.MODEL.RESNETS.NORM
    threshold = cfg.SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE
    if norm == "BN" and per_device < 6 and not (threshold and per_device < threshold):
        lines.append(
            f"- BatchNorm with tiny batches: MODEL.RESNETS.NORM 'BN' is trained on {per_device} image(s) per process "
            f"(unstable below about 6; SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE {threshold}): "
            "SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE 6 freezes it as the original does, or use 'SyncBN' on several GPUs."
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
