"""YOLACT training losses, as the original computes them.

``loss_cls`` (OHEM 3:1 softmax cross-entropy), ``loss_box_reg`` (smooth-L1 x 1.5) and ``loss_mask``
(BCE of GT-box-cropped prototype masks, each divided by its GT box area in prototype pixels,
x 6.125) are divided by the number of positive anchors in the whole batch; ``loss_sem_seg``
(per-class BCE on P3) by the batch size and the P3 area. YOLACT++ adds ``loss_mask_iou``
(smooth-L1 of the mask re-scoring net's IoU prediction x 25, also divided by the positives).
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable

from .config_checks import COUNT, FRACTION, NON_NEGATIVE, POSITIVE, check_value_ranges
from .mask_ops import assemble_masks, crop_masks
from .matcher import match_anchors

__all__ = ["YolactLoss", "ohem_negatives", "downsample_masks", "binary_mask_iou"]

# The keys the losses read besides those the model checks (NUM_CLASSES, BBOX_VARIANCES): a negative
# weight or a threshold outside [0, 1] trains something else without an error.
_VALUE_RANGES = {
    "MODEL.YOLACT.POSITIVE_IOU_THRESHOLD": FRACTION,
    "MODEL.YOLACT.NEGATIVE_IOU_THRESHOLD": FRACTION,
    "MODEL.YOLACT.CROWD_IOA_THRESHOLD": FRACTION,
    "MODEL.YOLACT.OHEM_NEG_POS_RATIO": POSITIVE,
    "MODEL.YOLACT.LOSS_CLS_WEIGHT": NON_NEGATIVE,
    "MODEL.YOLACT.LOSS_BOX_WEIGHT": NON_NEGATIVE,
    "MODEL.YOLACT.LOSS_MASK_WEIGHT": NON_NEGATIVE,
    "MODEL.YOLACT.LOSS_SEM_SEG_WEIGHT": NON_NEGATIVE,
    "MODEL.YOLACT.LOSS_MASK_IOU_WEIGHT": NON_NEGATIVE,
    "MODEL.YOLACT.MASKS_TO_TRAIN": COUNT,
    "MODEL.YOLACT.MASK_IOU_MIN_AREA": NON_NEGATIVE,
}


def ohem_negatives(cls_logits: torch.Tensor, labels: torch.Tensor, neg_pos_ratio: float) -> torch.Tensor:
    """Online hard negative mining. For every image, the ``neg_pos_ratio * num_pos`` background
    anchors (at most ``P - 1``) with the highest background loss ``logsumexp(x) - x_0`` are
    selected. Positives and neutrals are never selected.

    Args:
        cls_logits: (B, P, K+1); labels: (B, P) with -1 neutral, 0 background, > 0 foreground.
    Returns:
        (B, P) bool mask of the selected negatives.
    """
    with torch.no_grad():
        positive, neutral = labels > 0, labels < 0
        mining_loss = torch.logsumexp(cls_logits, dim=-1) - cls_logits[..., 0]
        mining_loss = mining_loss.masked_fill(positive | neutral, 0)
        order = mining_loss.sort(dim=1, descending=True)[1]
        rank = order.sort(dim=1)[1]
        num_neg = (neg_pos_ratio * positive.sum(dim=1, keepdim=True)).clamp(max=labels.shape[1] - 1)
        return (rank < num_neg) & ~positive & ~neutral


def downsample_masks(masks: torch.Tensor, size) -> torch.Tensor:
    """Binary (N, H, W) masks -> bilinear (align_corners=False) resize to ``size`` -> ``> 0.5``
    (``mask_proto_binarize_downsampled_gt``)."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.float32)
    resized = F.interpolate(masks[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
    return (resized > 0.5).float()


def binary_mask_iou(masks: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
    """IoU of binary (0/1) masks ``(N, H, W)`` with binary GT masks ``(N, H, W)``, pairwise by index.

    The training target of YOLACT++'s mask re-scoring net, at prototype resolution. Only GT masks
    larger than ``MASK_IOU_MIN_AREA`` reach it, so the union is never empty there; an empty union
    (possible with ``MASK_IOU_MIN_AREA < 0``) gives 0 rather than NaN.
    """
    inter = (masks * gt_masks).sum(dim=(1, 2))
    union = masks.sum(dim=(1, 2)) + gt_masks.sum(dim=(1, 2)) - inter
    return inter / union.clamp(min=1)


def _binary_cross_entropy(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``F.binary_cross_entropy(reduction="none")`` (logs clamped at -100), except that a NaN
    probability propagates to a NaN loss, which the trainer reports, instead of raising inside
    the loss."""
    return -(target * prob.log().clamp(min=-100) + (1 - target) * (1 - prob).log().clamp(min=-100))


class YolactLoss(nn.Module):
    """Matches anchors to ground truth and computes the four YOLACT losses.

    Each target is a dict with relative point-form ``boxes`` (N, 4), ``classes`` (N,), binary
    ``masks`` (N, H, W) at the padded input resolution and ``crowd_boxes`` (M, 4).
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        positive_iou_threshold: float,
        negative_iou_threshold: float,
        crowd_ioa_threshold: float,
        bbox_variances: Sequence[float],
        neg_pos_ratio: float,
        masks_to_train: int,
        loss_weights: Dict[str, float],
        mask_iou_min_area: float = 25,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.positive_iou_threshold = positive_iou_threshold
        self.negative_iou_threshold = negative_iou_threshold
        self.crowd_ioa_threshold = crowd_ioa_threshold
        self.bbox_variances = tuple(bbox_variances)
        self.neg_pos_ratio = neg_pos_ratio
        self.masks_to_train = masks_to_train
        self.loss_weights = dict(loss_weights)
        self.mask_iou_min_area = mask_iou_min_area

    @classmethod
    def from_config(cls, cfg):
        check_value_ranges(cfg, _VALUE_RANGES)
        y = cfg.MODEL.YOLACT
        return {
            "num_classes": y.NUM_CLASSES,
            "positive_iou_threshold": y.POSITIVE_IOU_THRESHOLD,
            "negative_iou_threshold": y.NEGATIVE_IOU_THRESHOLD,
            "crowd_ioa_threshold": y.CROWD_IOA_THRESHOLD,
            "bbox_variances": y.BBOX_VARIANCES,
            "neg_pos_ratio": y.OHEM_NEG_POS_RATIO,
            "masks_to_train": y.MASKS_TO_TRAIN,
            "loss_weights": {
                "loss_cls": y.LOSS_CLS_WEIGHT,
                "loss_box_reg": y.LOSS_BOX_WEIGHT,
                "loss_mask": y.LOSS_MASK_WEIGHT,
                "loss_sem_seg": y.LOSS_SEM_SEG_WEIGHT,
                "loss_mask_iou": y.LOSS_MASK_IOU_WEIGHT,
            },
            "mask_iou_min_area": y.MASK_IOU_MIN_AREA,
        }

    def forward(
        self,
        cls_logits: torch.Tensor,
        box_deltas: torch.Tensor,
        coefficients: torch.Tensor,
        prototypes: torch.Tensor,
        sem_seg_logits: Optional[torch.Tensor],
        anchors: torch.Tensor,
        targets: List[Dict[str, torch.Tensor]],
        maskiou_net: Optional[nn.Module] = None,
    ) -> Dict[str, torch.Tensor]:
        """``maskiou_net``: the YOLACT++ mask re-scoring net; when given, ``loss_mask_iou`` is added."""
        matches = [
            match_anchors(
                t["boxes"],
                t["classes"],
                t["crowd_boxes"],
                anchors,
                self.positive_iou_threshold,
                self.negative_iou_threshold,
                self.crowd_ioa_threshold,
                self.bbox_variances,
            )
            for t in targets
        ]
        labels = torch.stack([m.labels for m in matches])
        positive = labels > 0
        # Normalised by the positives of the whole batch, as the original (not image by image); an all-empty
        # batch gives 0 losses.
        normalizer = positive.sum().clamp(min=1).float()

        box_targets = torch.stack([m.box_targets for m in matches])
        loss_box = F.smooth_l1_loss(box_deltas[positive], box_targets[positive], reduction="sum", beta=1.0)

        selected = positive | ohem_negatives(cls_logits, labels, self.neg_pos_ratio)
        loss_cls = F.cross_entropy(cls_logits[selected], labels[selected], reduction="sum")

        maskiou_samples = [] if maskiou_net is not None else None
        loss_mask = self.mask_loss(coefficients, prototypes, matches, targets, maskiou_samples)
        losses = {
            "loss_cls": loss_cls / normalizer,
            "loss_box_reg": loss_box / normalizer,
            "loss_mask": loss_mask / normalizer,
        }
        if maskiou_net is not None:
            losses["loss_mask_iou"] = self.mask_iou_loss(maskiou_net, maskiou_samples) / normalizer
        if sem_seg_logits is not None:
            losses["loss_sem_seg"] = self.sem_seg_loss(sem_seg_logits, targets)
        return {k: v * self.loss_weights[k] for k, v in losses.items()}

    def mask_loss(
        self, coefficients, prototypes, matches, targets, maskiou_samples: Optional[list] = None
    ) -> torch.Tensor:
        """Sum over images and positives of ``sum_pixels BCE / (GT box area in prototype pixels)``.

        If ``maskiou_samples`` is a list, the training samples of the mask re-scoring net are
        appended to it, one ``(soft_masks (n, H', W'), iou_targets (n,), classes (n,))`` per image:
        the GT-box-cropped soft masks of the positives whose GT mask has more than
        ``mask_iou_min_area`` prototype pixels (after the ``masks_to_train`` subsampling), the IoU
        of their ``> 0.5`` binarisation with the GT mask, and the GT class.
        """
        proto_h, proto_w = prototypes.shape[-2:]
        total = prototypes.new_zeros(())
        for i, (match, target) in enumerate(zip(matches, targets)):
            pos_idx = torch.nonzero(match.labels > 0).squeeze(1)
            num_pos = pos_idx.numel()
            if num_pos == 0:
                continue
            scale = 1.0
            if num_pos > self.masks_to_train:
                pos_idx = pos_idx[torch.randperm(num_pos, device=pos_idx.device)[: self.masks_to_train]]
                scale = num_pos / self.masks_to_train
            gt_idx = match.matched_idx[pos_idx]
            gt_boxes = target["boxes"][gt_idx]
            gt_masks = downsample_masks(target["masks"], (proto_h, proto_w))[gt_idx]
            pred = crop_masks(assemble_masks(prototypes[i], coefficients[i, pos_idx]), gt_boxes)
            bce = _binary_cross_entropy(pred.clamp(0, 1), gt_masks).sum(dim=(1, 2))
            box_w = (gt_boxes[:, 2] - gt_boxes[:, 0]) * proto_w
            box_h = (gt_boxes[:, 3] - gt_boxes[:, 1]) * proto_h
            total = total + (bce / box_w / box_h).sum() * scale
            if maskiou_samples is not None:
                # The soft masks keep their graph: as in the original, loss_mask_iou also trains
                # the prototypes and coefficients.
                keep = gt_masks.sum(dim=(1, 2)) > self.mask_iou_min_area
                with torch.no_grad():
                    iou = binary_mask_iou((pred[keep] > 0.5).to(pred.dtype), gt_masks[keep])
                maskiou_samples.append((pred[keep], iou, target["classes"][gt_idx][keep]))
        return total

    @staticmethod
    def mask_iou_loss(maskiou_net: nn.Module, samples) -> torch.Tensor:
        """``sum smooth_l1(maskiou_net(mask)[gt class], IoU target)`` over the samples collected by
        :meth:`mask_loss` (not yet weighted or normalised)."""
        masks = torch.cat([m for m, _, _ in samples]) if samples else None
        if masks is None or masks.shape[0] == 0:
            # No sample in the batch: a zero that still reaches every parameter of the net, so
            # that DistributedDataParallel sees the same parameters used in every iteration.
            return sum(p.sum() for p in maskiou_net.parameters()) * 0.0
        targets = torch.cat([t for _, t, _ in samples])
        classes = torch.cat([c for _, _, c in samples])
        predicted = maskiou_net(masks[:, None])
        predicted = predicted.gather(1, classes[:, None]).squeeze(1)
        return F.smooth_l1_loss(predicted, targets, reduction="sum", beta=1.0)

    def sem_seg_loss(self, sem_seg_logits: torch.Tensor, targets) -> torch.Tensor:
        """Per-class BCE-with-logits against the union of that class's GT masks, summed, divided
        by the logit map area and the batch size."""
        batch, num_classes, h, w = sem_seg_logits.shape
        total = sem_seg_logits.new_zeros(())
        for logits, target in zip(sem_seg_logits, targets):
            with torch.no_grad():
                masks = downsample_masks(target["masks"], (h, w)).reshape(-1, h * w)
                index = target["classes"][:, None].expand(-1, h * w)
                semantic = masks.new_zeros((num_classes, h * w)).scatter_reduce_(0, index, masks, "amax")
                semantic = semantic.reshape(num_classes, h, w)
            total = total + F.binary_cross_entropy_with_logits(logits, semantic, reduction="sum")
        return total / (h * w) / batch
