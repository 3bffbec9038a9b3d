"""Randomly initialised YOLACT models that behave like trained ones at inference, for benchmarks
and export/parity tests (no checkpoint needed).

A freshly initialised network is a poor stand-in for a trained one: with trained-mode BN statistics
at their defaults (mean 0, variance 1) the activations of a deep ResNet grow by orders of magnitude,
so every softmax is one-hot and box deltas overflow; with FrozenBN / small logits no anchor passes
the score threshold. :func:`condition_random_model` fixes both without changing the architecture:

1. BatchNorm running statistics are re-estimated on the given images (as a trained model's would
   be), so activations have realistic magnitudes;
2. the class, box and mask-coefficient layers of the head and the protonet's last conv are scaled
   so their outputs have a chosen spread on those images: many anchors then pass the 0.05 score
   threshold (post-processing has real work, as with the "conditioned" weights of
   docs/PARITY.md), boxes vary around the anchors and masks have structure.
"""
from typing import Iterable

import torch
from torch import nn

from .predictor import YolactPredictor
from .runtime.command_line_keys import mark_set_on_command_line

__all__ = ["condition_random_model", "save_conditioned_random_weights"]


@torch.no_grad()
def condition_random_model(
    model: nn.Module,
    images: Iterable[torch.Tensor],
    class_logit_std: float = 1.5,
    box_delta_std: float = 0.5,
    mask_logit_std: float = 4.0,
) -> nn.Module:
    """Condition a randomly initialised ``Yolact`` in place (see the module docstring).

    Args:
        images: normalised (B, 3, H, W) batches (``model.preprocess_image(...).tensor``).
        class_logit_std, box_delta_std: target standard deviation of the class logits / box deltas.
        mask_logit_std: target standard deviation of ``prototypes @ coefficients`` (mask logits).
    Returns:
        the model, in eval mode.
    """
    images = list(images)
    was_training = model.training
    model.eval()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
        m.train()
    for x in images:
        model.extract_features(x)
    for m in norms:
        m.eval()

    head = model.head
    for x in images[:1]:
        features = model.extract_features(x)
        logits, deltas, coeffs, protos, _ = model.head_outputs(features, tuple(x.shape[-2:]))
        # class logits: scale weights and bias together
        scale = class_logit_std / logits.std().clamp(min=1e-6)
        head.cls_score.weight.mul_(scale)
        head.cls_score.bias.mul_(scale)
        scale = box_delta_std / deltas.std().clamp(min=1e-6)
        head.bbox_pred.weight.mul_(scale)
        head.bbox_pred.bias.mul_(scale)
        # coefficients are tanh'd: bring the pre-tanh values to a spread of ~1 first
        pre_tanh = torch.atanh(coeffs.clamp(-0.999999, 0.999999))
        scale = 1.0 / pre_tanh.std().clamp(min=1e-6)
        head.coeff_pred.weight.mul_(scale)
        head.coeff_pred.bias.mul_(scale)
        coeffs = model.head_outputs(features, tuple(x.shape[-2:]))[2]
        mask_logits = torch.einsum("bpk,bkhw->bphw", coeffs[:, :: max(1, coeffs.shape[1] // 500)], protos)
        scale = mask_logit_std / mask_logits.std().clamp(min=1e-6)
        model.protonet.predictor.weight.mul_(scale)
        model.protonet.predictor.bias.mul_(scale)
    model.train(was_training)
    return model


def save_conditioned_random_weights(cfg, images_bgr, path: str) -> str:
    """Build ``cfg``'s model with random weights, condition it on the BGR images (resized as
    :class:`~yolact_d2.YolactPredictor` does) and save its state dict to ``path`` (a checkpoint
    for ``MODEL.WEIGHTS``). Returns ``path``."""
    cfg = cfg.clone()
    cfg.MODEL.WEIGHTS = "random"  # untrained on purpose: conditioned below
    mark_set_on_command_line(cfg, "MODEL.WEIGHTS")
    cfg.MODEL.YOLACT.FUSE_BN_TEST = False  # keep the BN layers: they are re-estimated here
    cfg.MODEL.YOLACT.CHANNELS_LAST_TEST = False
    predictor = YolactPredictor(cfg, precision="fp32")  # conditioned and saved in float32
    model = predictor.model
    condition_random_model(model, [model.preprocess_image([predictor.preprocess(im)]).tensor for im in images_bgr])
    torch.save({"model": model.state_dict()}, path)
    return path
