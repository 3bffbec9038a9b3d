"""What this CPU computes natively, for choosing an inference precision (yolact_d2/precision.py).

Why a module of its own: the choice must be testable on any machine, so tests replace
:func:`cpu_features` (``monkeypatch``) instead of needing a CPU of each kind.

* bf16: AMX (``amx_bf16``: Intel Xeon since Sapphire Rapids) or AVX512-BF16 (``avx512_bf16``: Intel
  Cooper Lake and later, AMD Zen 4 and later) run bf16 convolutions in oneDNN natively; without them
  PyTorch emulates bf16 with float32 instructions plus conversions, slower than float32.
* int8: VNNI (``avx512_vnni`` or ``avx_vnni``) does the u8 x s8 multiply-add of ONNX Runtime's int8
  convolutions in one instruction; without it int8 is no faster than float32 (docs/BENCHMARKS.md, "int8").

Read from PyTorch's own probe (``torch.cpu.get_capabilities()``, cpuinfo), else from the flags of
``/proc/cpuinfo`` (Linux), else nothing is assumed.
"""
import functools
from dataclasses import dataclass
from typing import FrozenSet

__all__ = ["CpuFeatures", "cpu_features"]


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set extensions that matter for the precision choice."""

    amx_bf16: bool = False
    avx512_bf16: bool = False
    vnni: bool = False  # avx512_vnni or avx_vnni
    source: str = "none"  # where the flags were read: "torch", "/proc/cpuinfo" or "none"

    @property
    def native_bf16(self) -> bool:
        return self.amx_bf16 or self.avx512_bf16

    def describe(self) -> str:
        names = [n for n, on in (("AMX-BF16", self.amx_bf16), ("AVX512-BF16", self.avx512_bf16),
                                 ("VNNI", self.vnni)) if on]
        return ", ".join(names) or "no AMX, AVX512-BF16 or VNNI"


def _from_flags(flags: FrozenSet[str], source: str) -> CpuFeatures:
    return CpuFeatures(
        amx_bf16="amx_bf16" in flags, avx512_bf16="avx512_bf16" in flags,
        vnni=bool({"avx512_vnni", "avx_vnni"} & flags), source=source,
    )


def _proc_cpuinfo_flags(path: str = "/proc/cpuinfo") -> FrozenSet[str]:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This CPU's :class:`CpuFeatures` (probed once)."""
    import torch

    get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if get is not None:
        try:
            caps = get()
            return _from_flags(frozenset(k for k, v in caps.items() if v is True), "torch")
        except Exception:  # noqa: BLE001 (a probe must not break inference; fall back to the flags)
            pass
    flags = _proc_cpuinfo_flags()
    return _from_flags(flags, "/proc/cpuinfo") if flags else CpuFeatures()
