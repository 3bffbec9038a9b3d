"""Modulated deformable convolution (DCNv2) on top of ``torchvision.ops.deform_conv2d``.

YOLACT++ replaces the 3x3 conv of some ResNet bottlenecks with DCNv2 (every ``DEFORM_INTERVAL``-th
block of res3..res5), so that those layers sample where the object is rather than on a fixed grid. The
original uses a compiled CUDA extension; Detectron2's ``ModulatedDeformConv`` needs Detectron2's
compiled extension too. This module needs neither: torchvision's operator runs on CPU and CUDA,
and its ONNX export maps to the standard ``DeformConv`` operator (opset >= 19).

Parameters are laid out as in the original DCNv2 ``DCN`` module, so that converted YOLACT++
checkpoints load by name:

* ``weight`` ``[out, in / groups, kh, kw]`` and ``bias`` ``[out]`` (zero at init);
* ``conv_offset_mask``: a regular conv ``in -> 3 * G * kh * kw`` (``G`` deformable groups) with the
  same stride / padding / dilation as the deformable conv, zero at init. Its output is read as three
  equal chunks ``o1, o2, m``: the offsets are ``cat(o1, o2)`` and the modulation mask is
  ``sigmoid(m)``. Offset channel ``2k`` is the vertical (dy) and ``2k + 1`` the horizontal (dx)
  displacement of kernel tap ``k`` (row-major over the kernel, per deformable group), the layout
  of both DCNv2 and torchvision. Samples outside the input read zero.

With zero offset weights the module is ``0.5 * conv(x) + bias`` (``sigmoid(0) = 0.5``).

An optional ``norm`` (applied after the convolution) follows Detectron2's ``Conv2d`` wrapper, so a
bottleneck's ``conv2`` can be this module with the block's BN as ``conv2.norm``.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = ["ModulatedDeformConv2d", "DeformConvExportError", "check_onnx_exportable", "ONNX_DEFORM_CONV_MIN_OPSET"]

# ONNX's DeformConv operator exists from opset 19 on.
ONNX_DEFORM_CONV_MIN_OPSET = 19


class DeformConvExportError(RuntimeError):
    """Raised when a model with deformable convolutions is exported in a way that cannot work."""


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 with its own offset / mask predictor (see the module docstring)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size=3,
        stride=1,
        padding=1,
        dilation=1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
        norm: Optional[nn.Module] = None,
        activation=None,
    ):
        """
        Args:
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as for
                ``nn.Conv2d``; they apply both to the deformable conv and to ``conv_offset_mask``.
            deformable_groups: channel groups that get their own offsets and mask (1 in YOLACT++).
            bias: give the deformable conv a bias (DCNv2 has one, initialised to zero).
            norm: optional normalisation applied to the output (e.g. the bottleneck's BN).
            activation: optional callable applied last.
        """
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})"
            )
        if in_channels % deformable_groups:
            raise ValueError(
                f"in_channels ({in_channels}) must be divisible by deformable_groups ({deformable_groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups

        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset_mask = nn.Conv2d(
            in_channels,
            3 * deformable_groups * taps,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=True,
        )
        self.norm = norm
        self.activation = activation
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Weight as a plain conv (Kaiming-uniform, PyTorch's Conv2d default); bias and the offset /
        # mask predictor start at zero, i.e. regular sampling with a constant 0.5 modulation.
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def offsets_and_mask(self, x: torch.Tensor):
        """``(offset (B, 2*G*kh*kw, H', W'), mask (B, G*kh*kw, H', W'))`` predicted from ``x``."""
        taps = self.deformable_groups * self.kernel_size[0] * self.kernel_size[1]
        # chunks o1 | o2 | m; offset = cat(o1, o2) is simply the first two chunks
        offset, mask_logits = self.conv_offset_mask(x).split([2 * taps, taps], dim=1)
        return offset, torch.sigmoid(mask_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _in_torchscript_onnx_export():
            # That exporter has no ONNX symbolic for torchvision::deform_conv2d.
            raise DeformConvExportError(_EXPORT_HINT)
        offset, mask = self.offsets_and_mask(x)
        x = deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
        )


_EXPORT_HINT = (
    "this model has deformable convolutions (YOLACT++ DCNv2, torchvision.ops.deform_conv2d), which "
    "export to ONNX only with the dynamo-based exporter and opset >= "
    f"{ONNX_DEFORM_CONV_MIN_OPSET} (ONNX DeformConv): use torch.onnx.export(..., dynamo=True, "
    f"opset_version>={ONNX_DEFORM_CONV_MIN_OPSET}). The TorchScript exporter (dynamo=False) has no "
    "symbolic for torchvision::deform_conv2d. See docs/YOLACT_PLUS.md."
)


def _in_torchscript_onnx_export() -> bool:
    """True inside ``torch.onnx.export(..., dynamo=False)``; the dynamo-based exporter also sets
    ``is_in_onnx_export`` but traces with ``torch.export``."""
    if not torch.onnx.is_in_onnx_export():
        return False
    tracing = getattr(torch.compiler, "is_exporting", None) or getattr(torch.compiler, "is_compiling", None)
    return not (tracing is not None and tracing())


def check_onnx_exportable(model: nn.Module, opset_version: Optional[int] = None, dynamo: bool = True) -> None:
    """Raise :class:`DeformConvExportError` if ``torch.onnx.export(model, ..., opset_version=...,
    dynamo=...)`` cannot give a valid ONNX model because of deformable convolutions.

    With ``dynamo=True`` and ``opset_version`` below 19 the exporter would *silently* write a
    ``DeformConv`` node into a model of an opset that does not have it (ONNX Runtime then refuses
    to load it); ``dynamo=False`` fails inside the exporter. ``opset_version=None`` means the
    exporter's default, which is >= 19 in the supported torch versions. Models without deformable
    convolutions always pass.
    """
    if not any(isinstance(m, ModulatedDeformConv2d) for m in model.modules()):
        return
    if not dynamo or (opset_version is not None and opset_version < ONNX_DEFORM_CONV_MIN_OPSET):
        raise DeformConvExportError(
            f"cannot export with dynamo={dynamo}, opset_version={opset_version}: " + _EXPORT_HINT
        )
