import torch

from yolact_d2.modeling.box_ops import center_size, encode
from yolact_d2.modeling.matcher import match_anchors

V = (0.1, 0.2)


def _match(gt, classes, anchors_xyxy, crowd=None, crowd_threshold=0.7):
    gt = torch.tensor(gt, dtype=torch.float32).reshape(-1, 4)
    crowd = torch.tensor(crowd if crowd else [], dtype=torch.float32).reshape(-1, 4)
    anchors = center_size(torch.tensor(anchors_xyxy, dtype=torch.float32))
    return match_anchors(gt, torch.tensor(classes), crowd, anchors, 0.5, 0.4, crowd_threshold, V), gt, anchors


def test_thresholds_and_neutral_band():
    gt = [[0, 0, 1, 1]]
    anchors = [
        [0, 0, 1, 1],  # IoU 1.0 -> positive
        [0, 0, 1, 0.45],  # 0.45 -> neutral
        [0, 0, 1, 0.3],  # 0.3 -> background
        [0, 0, 1, 0.5],  # 0.5 -> positive (>= 0.5)
        [0, 0, 1, 0.42],  # 0.42 -> neutral
    ]
    m, g, a = _match(gt, [4], anchors)
    assert m.labels.tolist() == [5, -1, 0, 5, -1]
    assert m.matched_idx[0] == 0
    assert torch.allclose(m.box_targets[0], encode(g[[0]], a[[0]], V)[0])


def test_forced_match_gives_every_gt_an_anchor():
    # the only anchor near gt 1 has IoU 1/7 < 0.4, but is forced positive
    m, _, _ = _match([[0, 0, 1, 1], [5, 5, 6, 6]], [0, 2], [[0, 0, 1, 1], [5.5, 5.5, 6.5, 6.5], [20, 20, 21, 21]])
    assert m.labels.tolist() == [1, 3, 0]
    assert m.matched_idx[:2].tolist() == [0, 1]


def test_forced_match_is_greedy_highest_first():
    # gt0 and gt1 both prefer anchor 0; gt0 (IoU 1.0) takes it, gt1 falls back to anchor 1 (IoU 1/3)
    gts = [[10, 10, 11, 11], [10, 10, 11, 10.9]]
    anchors = [[10, 10, 11, 11], [10, 10, 11, 10.3]]
    m, _, _ = _match(gts, [0, 1], anchors)
    assert m.labels.tolist() == [1, 2]
    assert m.matched_idx.tolist() == [0, 1]
    # without the forced round anchor 1 (IoU 0.3 with gt0, 0.33 with gt1) would be background
    overlap_gt1 = (0.3 * 1) / (1 * 0.9)
    assert overlap_gt1 < 0.4


def test_crowd_makes_covered_background_neutral_only():
    crowd = [[20, 20, 30, 30]]
    anchors = [
        [0, 0, 1, 1],  # positive, far from the crowd
        [21, 21, 22, 22],  # background fully inside the crowd -> neutral
        [29, 29, 31, 31],  # background, 1/4 inside -> stays background
        [24, 24, 26, 26.5],  # would be background; 100% inside -> neutral
    ]
    m, _, _ = _match([[0, 0, 1, 1]], [1], anchors, crowd)
    assert m.labels.tolist() == [2, -1, 0, -1]
    # a positive inside a crowd region stays positive
    m, _, _ = _match([[21, 21, 22, 22]], [0], [[21, 21, 22, 22], [23, 23, 24, 24]], crowd)
    assert m.labels.tolist() == [1, -1]
    # threshold 1 disables the crowd rule
    m, _, _ = _match([[0, 0, 1, 1]], [1], anchors, crowd, crowd_threshold=1.0)
    assert m.labels.tolist() == [2, 0, 0, 0]


def test_no_ground_truth_is_all_background():
    m, _, _ = _match([], [], [[0, 0, 1, 1], [21, 21, 22, 22]], [[20, 20, 30, 30]])
    assert m.labels.tolist() == [0, -1]
