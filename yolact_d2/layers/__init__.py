"""Layers that yolact_d2 adds to Detectron2's: a deformable convolution (DCNv2) that needs no
compiled extension."""
from .deform_conv import DeformConvExportError, ModulatedDeformConv2d, check_onnx_exportable

__all__ = ["DeformConvExportError", "ModulatedDeformConv2d", "check_onnx_exportable"]
