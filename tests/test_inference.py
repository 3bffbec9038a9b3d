import pytest
import torch

from yolact_d2.modeling.inference import (
    cross_class_fast_nms,
    detect,
    detections_to_instances,
    fast_nms,
    standard_nms,
)
from yolact_d2.modeling.mask_ops import assemble_masks, crop_masks
from yolact_d2.utils.errors import ConfigError

# A (0.9) overlaps B (0.8) with IoU 0.6; B overlaps C (0.7) with IoU 0.6; A and C do not overlap much.
CHAIN = torch.tensor([[0.0, 0.0, 0.4, 0.1], [0.1, 0.0, 0.5, 0.1], [0.2, 0.0, 0.6, 0.1]])


def _iou(a, b):
    from yolact_d2.modeling.box_ops import box_iou

    return box_iou(a[None], b[None])[0, 0].item()


def test_chain_fixture():
    assert abs(_iou(CHAIN[0], CHAIN[1]) - 0.6) < 1e-5 and abs(_iou(CHAIN[1], CHAIN[2]) - 0.6) < 1e-5
    assert _iou(CHAIN[0], CHAIN[2]) < 0.5


def test_fast_nms_suppressed_box_still_suppresses():
    scores = torch.tensor([[0.9, 0.8, 0.7]])
    coeffs = torch.arange(3.0)[:, None]
    boxes, s, c, k = fast_nms(CHAIN, scores, coeffs, 0.5, 200, 100)
    assert s.tolist() == [0.8999999761581421] and c.tolist() == [0] and k.tolist() == [[0.0]]
    # greedy NMS keeps C, because its only strong overlap (B) was itself suppressed
    _, s2, _, k2 = standard_nms(CHAIN, scores, coeffs, 0.5, 200, 100, 0.05, (100, 100))
    assert k2.flatten().tolist() == [0.0, 2.0]


def test_fast_nms_is_per_class_and_has_no_second_threshold():
    boxes = CHAIN[:2]
    # both boxes high for different classes: no cross-class suppression
    scores = torch.tensor([[0.9, 0.001], [0.002, 0.8]])
    b, s, c, k = fast_nms(boxes, scores, torch.eye(2), 0.5, 200, 100)
    # all 4 (class, box) pairs survive: same-class pairs are [0.9 vs 0.001] -> the lower is suppressed
    assert c.tolist() == [0, 1] and torch.allclose(s, torch.tensor([0.9, 0.8]))
    # with non-overlapping boxes, the low-score entries stay (no threshold after NMS)
    far = torch.tensor([[0.0, 0.0, 0.1, 0.1], [0.5, 0.5, 0.6, 0.6]])
    b, s, c, k = fast_nms(far, scores, torch.eye(2), 0.5, 200, 100)
    assert torch.allclose(s, torch.tensor([0.9, 0.8, 0.002, 0.001]))
    assert c.tolist() == [0, 1, 1, 0]


def test_fast_nms_top_k_and_max_detections():
    boxes = torch.tensor([[i * 0.1, 0.0, i * 0.1 + 0.05, 0.05] for i in range(6)])
    scores = torch.tensor([[0.6, 0.5, 0.4, 0.3, 0.2, 0.1], [0.65, 0.55, 0.45, 0.35, 0.25, 0.15]])
    _, s, c, _ = fast_nms(boxes, scores, torch.zeros(6, 1), 0.5, 2, 100)
    assert torch.allclose(s, torch.tensor([0.65, 0.6, 0.55, 0.5]))
    _, s, c, _ = fast_nms(boxes, scores, torch.zeros(6, 1), 0.5, 200, 3)
    assert torch.allclose(s, torch.tensor([0.65, 0.6, 0.55])) and c.tolist() == [1, 0, 1]


def test_cross_class_nms():
    scores = torch.tensor([[0.9, 0.1, 0.7], [0.05, 0.8, 0.1]])
    b, s, c, k = cross_class_fast_nms(CHAIN, scores, torch.arange(3.0)[:, None], 0.5, 200, 100)
    assert c.tolist() == [0] and torch.allclose(s, torch.tensor([0.9]))


def test_detect_threshold_on_best_foreground_score():
    # one confident anchor -> one detection per class (the original's 80-from-1 behaviour)
    probs = torch.tensor([[0.05, 0.9, 0.03, 0.02], [0.95, 0.05, 0.0, 0.0]])
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]])
    out = detect(probs, boxes, torch.zeros(2, 4), score_threshold=0.05, nms_type="fast", iou_threshold=0.5,
                 top_k=200, max_detections=100, image_size=(100, 100))
    # anchor 1's best foreground score is exactly 0.05: dropped (strict >)
    assert out["classes"].tolist() == [0, 1, 2]
    assert torch.allclose(out["scores"], torch.tensor([0.9, 0.03, 0.02]))
    assert torch.equal(out["boxes"], boxes[[0, 0, 0]])
    empty = detect(probs[1:], boxes[1:], torch.zeros(1, 4), score_threshold=0.05, nms_type="fast",
                   iou_threshold=0.5, top_k=200, max_detections=100, image_size=(100, 100))
    assert empty["boxes"].shape == (0, 4) and empty["coefficients"].shape == (0, 4)


def test_detect_called_with_an_unknown_nms_type_is_an_error_not_standard_nms():
    """The model checks MODEL.YOLACT.NMS_TYPE once when it is built (not per image); a direct call of
    detect with another name is refused, not run as standard NMS."""
    probs = torch.tensor([[0.05, 0.9, 0.03, 0.02]])
    with pytest.raises(ConfigError, match=r"^MODEL.YOLACT.NMS_TYPE 'soft': not an NMS variant of YOLACT \(use "):
        detect(probs, torch.tensor([[0.1, 0.1, 0.5, 0.5]]), torch.zeros(1, 4), score_threshold=0.05,
               nms_type="soft", iou_threshold=0.5, top_k=200, max_detections=100, image_size=(100, 100))


def test_crop_masks_with_padding_hand_computed():
    masks = torch.ones(1, 10, 10)
    # x from 0.25*10 = 2.5 -> [1.5, 7.5+1=8.5): columns 2..8; rows 0.0 -> [0 (clamped), 4): rows 0..3
    out = crop_masks(masks, torch.tensor([[0.75, 0.0, 0.25, 0.3]]), padding=1)  # unordered x
    expected = torch.zeros(10, 10)
    expected[0:4, 2:9] = 1
    assert torch.equal(out[0], expected)


def test_assemble_masks_is_sigmoid_of_linear_combination():
    protos = torch.randn(3, 5, 6)
    coeffs = torch.randn(2, 3)
    expected = torch.sigmoid(torch.einsum("khw,nk->nhw", protos, coeffs))
    assert torch.allclose(assemble_masks(protos, coeffs), expected, atol=1e-6)


def _one_detection(box):
    return {
        "boxes": torch.tensor([box]),
        "scores": torch.tensor([0.9]),
        "classes": torch.tensor([2]),
        "coefficients": torch.tensor([[10.0]]),
    }


def test_instances_at_original_size_no_padding():
    protos = torch.ones(1, 8, 8)  # sigmoid(10) everywhere -> mask = padded box crop
    inst = detections_to_instances(_one_detection([0.25, 0.5, 0.75, 1.2]), protos, (32, 32), (32, 32), (48, 64))
    assert inst.image_size == (48, 64)
    # boxes: relative * (w, h), clamped, truncated
    assert inst.pred_boxes.tensor.tolist() == [[16.0, 24.0, 48.0, 48.0]]
    m = inst.pred_masks[0]
    assert m.dtype == torch.bool and m.shape == (48, 64)
    # crop at 8x8: columns [1, 7) and rows [3, 8) -> upsampled x8 columns / x6 rows
    cols = torch.nonzero(m.any(0)).flatten()
    rows = torch.nonzero(m.any(1)).flatten()
    assert abs(cols[0].item() - 8) <= 1 and abs(cols[-1].item() - 55) <= 1
    assert abs(rows[0].item() - 18) <= 1 and rows[-1].item() == 47
    sub = detections_to_instances(_one_detection([0.25, 0.5, 0.75, 1.2]), protos, (32, 32), (32, 32), (48, 64),
                                  truncate_boxes=False)
    assert sub.pred_boxes.tensor.tolist() == [[16.0, 24.0, 48.0, 48.0]]


def test_instances_with_padding_cut_the_image_region():
    # image 32x16 (h, w) padded to 32x32; the box covers the whole image region
    protos = torch.ones(1, 8, 8)
    inst = detections_to_instances(_one_detection([0.0, 0.0, 0.5, 1.0]), protos, (32, 16), (32, 32), (64, 32),
                                   truncate_boxes=False)
    assert inst.pred_boxes.tensor.tolist() == [[0.0, 0.0, 32.0, 64.0]]
    assert inst.pred_masks.shape == (1, 64, 32) and inst.pred_masks.all()


def test_empty_detections():
    det = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "classes": torch.zeros(0, dtype=torch.long),
           "coefficients": torch.zeros(0, 1)}
    inst = detections_to_instances(det, torch.ones(1, 8, 8), (32, 32), (32, 32), (20, 30))
    assert len(inst) == 0 and inst.pred_masks.shape == (0, 20, 30)
