"""The inference precision: ``MODEL.YOLACT.PRECISION_TEST`` (``fp32``, ``bf16``, ``auto``) and,
for ``auto``, which precision this machine runs fastest.

* ``fp32``: float32 everywhere.
* ``bf16``: the network (backbone, FPN, head, protonet) runs in bfloat16, its weights converted once
  after BN folding (:func:`yolact_d2.modeling.optimize.cast_network`); box decoding, softmax, Fast NMS
  and mask assembly stay float32. Fast on CPUs with AMX or AVX512-BF16 and on CUDA GPUs; on other
  CPUs PyTorch emulates bf16 and it is slower than float32 (a one-line warning says so).
* ``auto`` (CPU): ``bf16`` with AMX (faster than int8 there: 180 against 205 ms for R-101-550 in issue
  32's trial on a Xeon with AMX); else ``int8`` when an int8 ONNX file is at hand and the CPU has VNNI
  (3.3x float32 on AMD Zen 4, docs/BENCHMARKS.md); else ``bf16`` with AVX512-BF16; else ``fp32``. On
  CUDA ``auto`` is ``fp32`` (bf16 on GPUs was not measured here: ask for it with ``bf16``).

:func:`choose_precision` decides and says why; the CPU's features come from
:func:`yolact_d2.utils.cpu_features.cpu_features` (replaced in tests).
"""
import logging
from typing import NamedTuple, Optional

import torch

from .utils import cpu_features as _cpu
from .utils.errors import ConfigError

__all__ = ["PRECISIONS", "PrecisionChoice", "choose_precision", "torch_dtype"]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "auto")
KEY = "MODEL.YOLACT.PRECISION_TEST"


class PrecisionChoice(NamedTuple):
    precision: str  # "fp32", "bf16" or "int8" (int8: run the int8 ONNX file)
    reason: str


def torch_dtype(precision: str) -> torch.dtype:
    """The dtype the network runs in for a chosen PyTorch precision."""
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]


def choose_precision(requested: str, device, int8_available: bool = False,
                     features: Optional[_cpu.CpuFeatures] = None) -> PrecisionChoice:
    """The precision to run for ``requested`` (a :data:`PRECISIONS` value) on ``device``;
    ``int8_available``: an int8 ONNX file is at hand (only ``auto`` may pick it)."""
    requested = str(requested).lower()
    if requested not in PRECISIONS:
        raise ConfigError(KEY, f"unknown precision {requested!r}", f"use one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if requested == "fp32":
        return PrecisionChoice("fp32", "requested")
    if device.type != "cpu":
        if requested == "bf16":
            return PrecisionChoice("bf16", f"requested, on {device.type}")
        return PrecisionChoice("fp32", f"auto on {device.type}: float32 (bf16 there is not measured; ask for bf16)")
    cpu = features if features is not None else _cpu.cpu_features()
    if requested == "bf16":
        if cpu.native_bf16:
            return PrecisionChoice("bf16", f"requested; this CPU has {cpu.describe()}")
        return PrecisionChoice(
            "bf16", "requested, but this CPU has no native bf16 (no AMX or AVX512-BF16): PyTorch emulates it, "
            "slower than fp32")
    if cpu.amx_bf16:
        return PrecisionChoice("bf16", f"auto: this CPU has AMX-BF16 ({cpu.describe()})")
    if int8_available and cpu.vnni:
        return PrecisionChoice("int8", f"auto: an int8 ONNX file and VNNI ({cpu.describe()})")
    if cpu.avx512_bf16:
        return PrecisionChoice("bf16", f"auto: this CPU has AVX512-BF16 ({cpu.describe()})")
    why = "no AMX or AVX512-BF16, " + ("an int8 ONNX file but no VNNI" if int8_available else "no int8 ONNX file")
    return PrecisionChoice("fp32", f"auto: float32 ({why})")


def log_choice(choice: PrecisionChoice, requested: str) -> None:
    """One line saying what runs and why; a warning when bf16 will be slow."""
    slow = choice.precision == "bf16" and "no native bf16" in choice.reason
    (logger.warning if slow else logger.info)(
        "%s %s: running the network in %s (%s)", KEY, requested, choice.precision, choice.reason)
