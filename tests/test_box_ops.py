import math

import torch

from yolact_d2.modeling.box_ops import box_ioa, box_iou, center_size, decode, encode, point_form

V = (0.1, 0.2)


def test_encode_hand_computed():
    anchor = torch.tensor([[0.5, 0.5, 0.2, 0.4]])  # cx, cy, w, h
    gt = torch.tensor([[0.42, 0.34, 0.66, 0.74]])  # centre (0.54, 0.54), size (0.24, 0.40)
    t = encode(gt, anchor, V)[0]
    expected = [(0.54 - 0.5) / (0.1 * 0.2), (0.54 - 0.5) / (0.1 * 0.4), math.log(0.24 / 0.2) / 0.2, 0.0]
    assert torch.allclose(t, torch.tensor(expected), atol=1e-5)


def test_decode_inverts_encode_and_is_unclamped():
    torch.manual_seed(1)
    anchors = torch.rand(50, 4) * 0.5 + 0.1
    gt = point_form(torch.rand(50, 4) * 0.5 + 0.1)
    assert torch.allclose(decode(encode(gt, anchors, V), anchors, V), gt, atol=1e-5)
    # no clamp on dw: exp(100 * 0.2) is used as is (Detectron2 would clamp at log(1000/16))
    big = decode(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), torch.tensor([[0.5, 0.5, 0.1, 0.1]]), V)
    assert torch.allclose(big[0, 2] - big[0, 0], torch.tensor(0.1 * math.exp(20.0)), rtol=1e-5)
    # and no clipping to [0, 1]
    assert big[0, 0] < -1e6


def test_point_form_center_size_roundtrip():
    b = torch.tensor([[0.1, 0.2, 0.5, 0.9]])
    assert torch.allclose(center_size(b), torch.tensor([[0.3, 0.55, 0.4, 0.7]]))
    assert torch.allclose(point_form(center_size(b)), b)


def test_iou_and_ioa_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1 / 7, 1 / 4, 0.0]]))
    assert torch.allclose(box_ioa(a, b), torch.tensor([[1 / 4, 1 / 4, 0.0]]))
    assert torch.allclose(box_ioa(b, a), torch.tensor([[1 / 4], [1.0], [0.0]]))
    # batched over a leading (class) dimension
    batched = box_iou(b[None].expand(2, -1, -1), b[None].expand(2, -1, -1))
    assert batched.shape == (2, 3, 3) and torch.allclose(batched[1].diagonal(), torch.ones(3))
