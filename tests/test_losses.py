import math

import pytest
import torch
import torch.nn.functional as F

from yolact_d2.modeling.losses import YolactLoss, downsample_masks, ohem_negatives
from yolact_d2.modeling.matcher import MatchResult

from conftest import yolact_cfg


def test_ohem_selects_hardest_background_3_per_positive():
    # two classes: background loss of anchor i is log(1 + exp(v_i))
    v = torch.tensor([[9.0, 1.0, 5.0, 2.0, 8.0, 4.0, 3.0, -1.0]])
    logits = torch.stack([torch.zeros_like(v), v], dim=-1)
    labels = torch.tensor([[1, 0, 0, 0, -1, 0, 0, 0]])  # anchor 0 positive, anchor 4 neutral
    neg = ohem_negatives(logits, labels, 3)
    # hardest background: anchors 2 (5.0), 5 (4.0), 6 (3.0); positive/neutral never chosen
    assert torch.nonzero(neg[0]).squeeze(1).tolist() == [2, 5, 6]


def test_ohem_caps_at_num_anchors_minus_one_and_per_image():
    logits = torch.randn(2, 5, 3)
    labels = torch.tensor([[1, 2, 0, 0, 0], [0, 0, 0, 0, 0]])
    neg = ohem_negatives(logits, labels, 3)
    assert neg[0].sum() == 3  # min(3*2, 5-1) = 4 ranks, one of which is a positive
    assert neg[1].sum() == 0  # no positive -> no negative


def _criterion(**kw):
    cfg = yolact_cfg("Base-YOLACT.yaml", ["MODEL.YOLACT.NUM_CLASSES", 2])
    return YolactLoss(cfg, **kw)


def test_class_and_box_losses_hand_computed():
    crit = _criterion()
    anchors = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1]])
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 1.0, 1.0]]),
        "classes": torch.tensor([1]),
        "masks": torch.ones(1, 8, 8),
        "crowd_boxes": torch.zeros(0, 4),
    }
    logits = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    deltas = torch.tensor([[[0.5, 0.0, 0.0, 2.0], [0.0] * 4, [0.0] * 4]])
    coeffs = torch.zeros(1, 3, 4)
    protos = torch.zeros(1, 4, 4, 4)
    losses = crit(logits, deltas, coeffs, protos, None, anchors, [target])
    # anchor 0 is the only positive (label 2); both background anchors are mined (3:1, cap P-1 = 2)
    ce = -F.log_softmax(logits[0], -1)
    assert torch.allclose(losses["loss_cls"], (ce[0, 2] + ce[1, 0] + ce[2, 0]) * 1.0)
    # target deltas are 0 for a perfect anchor: smooth-L1(0.5) + smooth-L1(2) = 0.125 + 1.5, x1.5
    assert torch.allclose(losses["loss_box_reg"], torch.tensor((0.125 + 1.5) * 1.5))
    assert "loss_sem_seg" not in losses


def test_mask_loss_normalised_by_box_area_in_prototype_pixels():
    crit = _criterion()
    p = 0.8
    protos = torch.ones(1, 1, 4, 4)
    coeffs = torch.full((1, 2, 1), math.log(p / (1 - p)))  # sigmoid(P C^T) = 0.8 everywhere
    gt_mask = torch.zeros(1, 8, 8)
    gt_mask[0, 2:6, 2:6] = 1  # downsampled to 4x4: the central 2x2
    target = {"boxes": torch.tensor([[0.25, 0.25, 0.75, 0.75]]), "masks": gt_mask}
    match = MatchResult(torch.tensor([1, 0]), torch.tensor([0, 0]), torch.zeros(2, 4))
    loss = crit.mask_loss(coeffs, protos, [match], [target])
    # crop with 1 px padding keeps all 16 pixels: 4 of them foreground
    bce_sum = 4 * -math.log(p) + 12 * -math.log(1 - p)
    assert loss.item() == pytest.approx(bce_sum / (2 * 2), rel=1e-5)
    # the x6.125 weight and the positive normaliser are applied in forward()
    assert crit.loss_weights["loss_mask"] == 6.125


def test_mask_loss_subsampling_rescales():
    crit = _criterion(masks_to_train=1)
    protos = torch.ones(1, 1, 4, 4)
    coeffs = torch.zeros(1, 3, 1)  # p = 0.5 everywhere -> every positive has the same loss
    target = {"boxes": torch.tensor([[0.0, 0.0, 1.0, 1.0]]), "masks": torch.ones(1, 4, 4)}
    match = MatchResult(torch.tensor([1, 1, 1]), torch.zeros(3, dtype=torch.long), torch.zeros(3, 4))
    loss = crit.mask_loss(coeffs, protos, [match], [target])
    one = 16 * math.log(2) / 16
    assert loss.item() == pytest.approx(3 * one, rel=1e-5)  # 1 trained, scaled by 3/1


def test_sem_seg_loss_targets_union_per_class():
    crit = _criterion()
    masks = torch.zeros(3, 4, 4)
    masks[0, :2] = 1
    masks[1, 2:] = 1
    masks[2, :, :2] = 1
    target = {"classes": torch.tensor([0, 0, 1]), "masks": masks}
    logits = torch.zeros(1, 2, 4, 4)
    loss = crit.sem_seg_loss(logits, [target])
    assert loss.item() == pytest.approx(math.log(2) * 2, rel=1e-6)  # BCE(0 logit) = log 2 per pixel
    logits[0, 0] = 10.0  # class 0 covers everything -> its loss vanishes
    logits[0, 1, :, :2] = 10.0
    logits[0, 1, :, 2:] = -10.0
    assert crit.sem_seg_loss(logits, [target]).item() < 1e-3


def test_downsample_masks_binarises():
    m = torch.zeros(1, 8, 8)
    m[0, :, :4] = 1
    d = downsample_masks(m, (4, 4))
    assert d.tolist() == [[[1, 1, 0, 0]] * 4]
    assert downsample_masks(torch.zeros(0, 8, 8), (4, 4)).shape == (0, 4, 4)
