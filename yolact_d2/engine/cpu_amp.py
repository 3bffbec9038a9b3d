"""``SOLVER.AMP.ENABLED`` on the CPU: bf16 autocast around the model's forward (and the losses it
returns), with no grad scaler.

Why: Detectron2's ``AMPTrainer`` is CUDA-only (float16 autocast and a CUDA grad scaler). On CPUs with
AMX or AVX512-BF16, oneDNN runs bf16 convolutions natively; bf16 has float32's exponent range, so
gradients do not underflow and need no scaling. The weights, the optimizer state and the backward's
accumulation stay float32 (autocast casts per op). On CUDA the step is Detectron2's ``AMPTrainer``, unchanged.

The autocast covers exactly ``model(data)``: it is entered by a forward pre-hook and left by a forward
hook on the model, so whatever the trainer's step does around the forward (the finite-loss check,
``after_backward``, the optimizer step) is untouched.
"""
import contextlib

import torch

from ..runtime.finite_loss import FiniteAMPTrainer, FiniteSimpleTrainer

__all__ = ["cpu_autocast_forward", "FiniteCpuBf16Trainer", "training_step_class"]


@contextlib.contextmanager
def cpu_autocast_forward(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16):
    """Inside the block, every ``model(...)`` call runs under ``torch.autocast("cpu", dtype)``."""
    active = []

    def enter(module, args):
        ctx = torch.autocast("cpu", dtype=dtype)
        ctx.__enter__()
        active.append(ctx)

    def leave(module, args, output):
        active.pop().__exit__(None, None, None)

    handles = [model.register_forward_pre_hook(enter), model.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        while active:  # a forward that raised never reached the exit hook
            active.pop().__exit__(None, None, None)


class FiniteCpuBf16Trainer(FiniteSimpleTrainer):
    """The float32 step with its forward under CPU bf16 autocast (no grad scaler)."""

    def run_step(self):
        with cpu_autocast_forward(self.model):
            return super().run_step()


def training_step_class(cfg):
    """The trainer-step class for ``cfg``: float32, CUDA AMP (Detectron2's AMPTrainer) or CPU bf16 autocast."""
    if not cfg.SOLVER.AMP.ENABLED:
        return FiniteSimpleTrainer
    if torch.device(cfg.MODEL.DEVICE).type == "cuda":
        return FiniteAMPTrainer
    return FiniteCpuBf16Trainer
