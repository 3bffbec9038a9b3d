"""Inference-only rewrites of a trained ``Yolact`` that keep its function (up to float rounding).

* :func:`fuse_conv_bn`: fold every BatchNorm / FrozenBatchNorm that follows a convolution
  (Detectron2's ``Conv2d(..., norm=...)``, our ``ModulatedDeformConv2d(..., norm=...)``) into the
  convolution's weight and bias, removing one elementwise pass over every backbone activation.
  BN in eval mode is the affine map ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so
  ``conv' = conv * s`` and ``bias' = (bias - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``.
  The outputs change only by float rounding (~1e-6 relative).
* channels-last memory format (``optimize_for_inference(channels_last=True)``): oneDNN's
  convolutions are faster on NHWC on CPU, and the head's (B, A*C, H, W) -> (B, H*W*A, C)
  flattening becomes a view.

* :func:`cast_network` (``optimize_for_inference(dtype=torch.bfloat16)``, ``MODEL.YOLACT.PRECISION_TEST``):
  the backbone, FPN, head and protonet weights converted once to a low-precision dtype, the input cast
  to it at the backbone and the head's and protonet's outputs cast back to float32, so box decoding,
  softmax, Fast NMS and mask assembly run in float32. Converting once is what makes it pay:
  ``torch.autocast`` around the predictor casts the weights again at every call (issue 32: 0.78x).

Measured on 1 thread, R-101 at 550 (noisy shared machine, A/B interleaved): backbone+head
3119 ms -> fused 2974 -> channels-last 2506 -> both 2347 ms.
"""
import torch
from torch import nn

from detectron2.layers import FrozenBatchNorm2d

from ..layers.deform_conv import ModulatedDeformConv2d

__all__ = ["fuse_conv_bn", "cast_network", "NETWORK_PARTS", "optimize_for_inference"]


def _norm_scale_shift(norm: nn.Module):
    if isinstance(norm, FrozenBatchNorm2d) or (isinstance(norm, nn.modules.batchnorm._BatchNorm) and not norm.training):
        if norm.running_mean is None:
            return None
        weight = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
        bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
        scale = weight * torch.rsqrt(norm.running_var + norm.eps)
        return scale, bias - norm.running_mean * scale
    return None


@torch.no_grad()
def fuse_conv_bn(model: nn.Module) -> int:
    """Fold eval-mode BN / FrozenBN held as ``.norm`` of a convolution into it (in place).
    Returns the number of fused layers. The model must stay in eval mode afterwards (the BN
    layers are gone, training would be different)."""
    fused = 0
    for module in model.modules():
        norm = getattr(module, "norm", None)
        weight = getattr(module, "weight", None)
        if norm is None or not isinstance(weight, torch.Tensor) or weight.dim() != 4:
            continue
        affine = _norm_scale_shift(norm)
        if affine is None:
            continue
        scale, shift = affine
        module.weight.mul_(scale.reshape(-1, 1, 1, 1))
        old_bias = module.bias if module.bias is not None else torch.zeros_like(shift)
        new_bias = old_bias * scale + shift
        if module.bias is None:
            module.bias = nn.Parameter(new_bias)
        else:
            module.bias.copy_(new_bias)
        module.norm = None
        fused += 1
    return fused


# The parts of a Yolact that run in the low-precision dtype: everything from the image to the raw
# head outputs and prototypes. The YOLACT++ mask re-scoring net runs after NMS on float32 masks.
NETWORK_PARTS = ("backbone", "head", "protonet")


def _to_float32(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


@torch.no_grad()
def cast_network(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Run :data:`NETWORK_PARTS` of ``model`` (a ``Yolact`` in eval mode) in ``dtype`` (in place):
    their weights are converted once, the backbone casts its input to ``dtype`` and the head and
    protonet give float32 outputs (forward hooks), so the rest of the model is unchanged. A no-op for
    float32. Raises ``ValueError`` for a model with deformable convolutions (torchvision's CPU kernel
    has no bf16)."""
    if dtype == torch.float32:
        return model
    if any(isinstance(m, ModulatedDeformConv2d) for m in model.backbone.modules()):
        raise ValueError(f"a {dtype} network is not supported for deformable convolutions (YOLACT++): "
                         "torchvision's deform_conv2d has no kernel for it on CPU")
    for name in NETWORK_PARTS:
        getattr(model, name).to(dtype)
    model.backbone.register_forward_pre_hook(lambda module, args: tuple(a.to(dtype) for a in args))
    for name in NETWORK_PARTS[1:]:
        getattr(model, name).register_forward_hook(lambda module, args, output: _to_float32(output))
    return model


def optimize_for_inference(
    model: nn.Module, fuse_bn: bool = True, channels_last: bool = True, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """Put ``model`` in eval mode and apply the chosen rewrites in place (see the module
    docstring). Used by :class:`yolact_d2.YolactPredictor` per ``MODEL.YOLACT.FUSE_BN_TEST``,
    ``MODEL.YOLACT.CHANNELS_LAST_TEST`` and ``MODEL.YOLACT.PRECISION_TEST``; never on a model that
    will be trained. The dtype cast comes last: BN is folded in float32."""
    model.eval()
    if fuse_bn:
        fuse_conv_bn(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return cast_network(model, dtype)
