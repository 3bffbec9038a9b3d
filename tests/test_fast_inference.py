"""The post-processing of yolact_d2/modeling/inference.py and mask_ops.py (the fast one) against the
original's literal algorithm, the oracle in tests/reference_postprocess.py: same detections, same masks.

Masks may only differ at pixels whose interpolated value is within 1e-5 of the threshold (float
rounding); the tests count them. In every case measured here the count is 0: the fast path
evaluates the same bilinear weights in the same order as PyTorch's CPU kernel.
"""
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yolact_d2.modeling.inference import detect, fast_nms
from yolact_d2.modeling.mask_ops import assemble_masks, crop_keep, crop_masks, linear_resize_table, paste_masks_fast
from yolact_d2.runtime.config_loading import UnknownConfigKeyError, setup_cfg

from conftest import CONFIG_DIR, captured, tiny_cfg
from reference_postprocess import (
    reference_detect,
    reference_fast_nms,
    reference_paste_masks,
    use_reference_postprocess,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _near_threshold_only(fast, faithful, soft, canvas, output_size, threshold, tol=1e-5):
    """Assert that fast and faithful bool masks differ only where the faithful float value is
    within ``tol`` of the threshold; return the number of differing pixels."""
    diff = fast != faithful
    if diff.any():
        values = F.interpolate(soft[None], size=canvas, mode="bilinear", align_corners=False)[0]
        values = values[:, : output_size[0], : output_size[1]]
        assert (values[diff] - threshold).abs().max().item() <= tol
    return int(diff.sum())


def _random_soft_masks(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    protos = F.avg_pool2d(torch.relu(torch.randn(1, 8, h, w, generator=g)), 5, 1, 2)[0] * 4
    coeffs = torch.randn(n, 8, generator=g)
    centers = torch.rand(n, 2, generator=g) * 1.2 - 0.1  # some boxes leave the image
    sizes = torch.rand(n, 2, generator=g) ** 2 * 0.7
    boxes = torch.cat([centers - sizes / 2, centers + sizes / 2], 1)
    boxes[::7] = boxes[::7][:, [2, 3, 0, 1]]  # unordered corners
    boxes[3] = torch.tensor([0.5, 0.5, 0.5, 0.5])  # degenerate: only the padding remains
    boxes[5] = torch.tensor([1.2, 0.2, 1.5, 0.4])  # outside the image: empty crop
    return assemble_masks(protos, coeffs), boxes


@pytest.mark.parametrize(
    "proto_size, canvas, output_size",
    [
        ((138, 138), (480, 640), (480, 640)),  # 550 input, 480x640 image
        ((24, 24), (100, 130), (100, 130)),
        ((48, 32), (700, 500), (600, 401)),  # padded input: keep the top-left part
        ((40, 40), (30, 25), (30, 25)),  # downsampling
        ((20, 20), (20, 20), (20, 20)),  # same size
        ((20, 30), (1, 57), (1, 57)),
    ],
)
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.0])
def test_paste_masks_fast_equals_faithful(proto_size, canvas, output_size, threshold):
    soft, boxes = _random_soft_masks(37, *proto_size)
    cropped = crop_masks(soft, boxes)
    keep_rows, keep_cols = crop_keep(boxes, *proto_size)
    faithful = reference_paste_masks(cropped, canvas, output_size, threshold)
    fast = paste_masks_fast(cropped, keep_rows, keep_cols, canvas, output_size, threshold)
    assert fast.dtype == torch.bool and fast.shape == faithful.shape == (37, *output_size)
    assert faithful.any()
    assert _near_threshold_only(fast, faithful, cropped, canvas, output_size, threshold) == 0


def test_paste_masks_fast_edge_cases():
    soft, boxes = _random_soft_masks(6, 16, 16)
    keep = crop_keep(boxes, 16, 16)
    cropped = crop_masks(soft, boxes)
    # no detections, empty output
    empty = paste_masks_fast(cropped[:0], keep[0][:0], keep[1][:0], (40, 40), (40, 40), 0.5)
    assert empty.shape == (0, 40, 40) and empty.dtype == torch.bool
    assert paste_masks_fast(cropped, *keep, (40, 40), (0, 40), 0.5).shape == (6, 0, 40)
    # a negative threshold makes everything outside the crop foreground: the whole canvas is upsampled
    neg = paste_masks_fast(cropped, *keep, (40, 40), (40, 40), -0.1)
    assert neg.all() and torch.equal(neg, reference_paste_masks(cropped, (40, 40), (40, 40), -0.1))
    # everything cropped away
    none_kept = torch.zeros_like(keep[0]), torch.zeros_like(keep[1])
    assert not paste_masks_fast(cropped * 0, *none_kept, (40, 40), (40, 40), 0.5).any()


def test_linear_resize_table_matches_interpolate():
    # one-hot rows: interpolating the identity reveals the indices and weights the kernel uses
    for in_size, out_size in [(138, 640), (138, 480), (69, 50), (7, 7), (3, 1000)]:
        i0, i1, l0, l1 = linear_resize_table(in_size, out_size, out_size)
        eye = torch.eye(in_size)[None, :, None, :]  # (1, in, 1, in): channel c is the one-hot c
        # bilinear (the mode the masks use), width only
        weights = F.interpolate(eye, size=(1, out_size), mode="bilinear", align_corners=False)[0, :, 0]
        ours = torch.zeros(in_size, out_size)
        ours[i0, torch.arange(out_size)] += l0
        ours[i1, torch.arange(out_size)] += l1
        assert torch.equal(ours, weights)


# ------------------------------------------------------------------------------------------------
# NMS: topk candidates vs the original's full sort
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nms_type", ["fast", "cross_class"])
@pytest.mark.parametrize("score_threshold", [0.0, 0.05, 0.3])
def test_detect_topk_equals_sort(nms_type, score_threshold):
    g = torch.Generator().manual_seed(1)
    num_anchors, num_classes = 3000, 20
    probs = torch.softmax(torch.randn(num_anchors, num_classes + 1, generator=g) * 2, 1)
    centers = torch.rand(num_anchors, 2, generator=g)
    sizes = torch.rand(num_anchors, 2, generator=g) * 0.3 + 0.01
    boxes = torch.cat([centers - sizes / 2, centers + sizes / 2], 1)
    coeffs = torch.randn(num_anchors, 8, generator=g)
    kwargs = dict(score_threshold=score_threshold, nms_type=nms_type, iou_threshold=0.5, top_k=200,
                  max_detections=100, image_size=(550, 550))
    fast = detect(probs, boxes, coeffs, **kwargs)
    ref = reference_detect(probs, boxes, coeffs, **kwargs)
    assert len(ref["scores"]) > 0
    for key in ref:
        assert torch.equal(fast[key], ref[key]), key


@pytest.mark.parametrize("case", ["few_survive", "top_k_binds", "few_anchors"])
def test_fast_nms_fallback_and_top_k(case):
    """The best-candidates-first path must fall back or respect top_k exactly like the original."""
    from yolact_d2.modeling.inference import _fast_nms_best_first

    g = torch.Generator().manual_seed(2)
    num_anchors, num_classes = 500, 5
    scores = torch.rand(num_classes, num_anchors, generator=g)
    boxes = torch.rand(num_anchors, 2, generator=g).repeat(1, 2) + torch.tensor([0, 0, 0.05, 0.05])
    coeffs = torch.randn(num_anchors, 3, generator=g)
    top_k, max_det = 200, 100
    if case == "few_survive":  # all boxes identical: one survivor per class -> fallback
        boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5]]).repeat(num_anchors, 1)
        assert _fast_nms_best_first(boxes, scores, coeffs, 0.5, top_k, max_det) is None
    elif case == "top_k_binds":  # a small top_k: each class's 5th best and below are cut
        scores[2] += 0.02
        top_k, max_det = 4, 8  # the 32 best scores hold about 6 per class
        assert _fast_nms_best_first(boxes, scores, coeffs, 0.5, top_k, max_det) is not None
    else:
        scores, boxes, coeffs = scores[:, :50], boxes[:50], coeffs[:50]
        max_det = 70  # 4 x 70 > 5 x 50 scores: nothing to gain, full version
        assert _fast_nms_best_first(boxes, scores, coeffs, 0.5, top_k, max_det) is None
    fast = fast_nms(boxes, scores, coeffs, 0.5, top_k, max_det)
    ref = reference_fast_nms(boxes, scores, coeffs, 0.5, top_k, max_det)
    assert len(ref[0]) > 0
    for a, b in zip(fast, ref):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# The whole model: fast vs faithful on conditioned random weights and real-looking images
# ------------------------------------------------------------------------------------------------
def _synthetic_images(n, seed=0):
    from yolact_d2.data.datasets.synthetic import render_synthetic_sample

    return [render_synthetic_sample(seed, "val", i, image_size=(120, 200))["image"] for i in range(n)]


def _inputs(images, size, keep_aspect=False):
    out = []
    for img in images:
        h, w = img.shape[:2]
        if keep_aspect:
            s = size / max(h, w)
            nh, nw = round(h * s), round(w * s)
        else:
            nh, nw = size, size
        rgb = cv2.resize(img[:, :, ::-1], (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        out.append({"image": torch.as_tensor(rgb.transpose(2, 0, 1).copy()), "height": h, "width": w})
    return out


@pytest.fixture(scope="module")
def conditioned_model():
    from detectron2.modeling import build_model

    from yolact_d2.testing import condition_random_model

    torch.manual_seed(0)
    model = build_model(tiny_cfg(num_classes=6, image_size=160)).eval()
    calib = _inputs(_synthetic_images(2, seed=5), 160)
    condition_random_model(model, [model.preprocess_image([x]).tensor for x in calib])
    return model


def _run(model, inputs, fast, score_threshold):
    use_reference_postprocess(model, enabled=not fast)
    assert ("postprocess_batch" in vars(model)) == (not fast)  # the oracle replaces this instance's method
    model.score_threshold = score_threshold
    try:
        with torch.inference_mode():
            return [r["instances"] for r in model(inputs)]
    finally:
        use_reference_postprocess(model, enabled=False)
        model.score_threshold = 0.05


@pytest.mark.parametrize("score_threshold", [0.0, 0.05, 0.9])
@pytest.mark.parametrize("keep_aspect", [False, True])
def test_model_fast_equals_faithful(conditioned_model, score_threshold, keep_aspect):
    inputs = _inputs(_synthetic_images(3), 160, keep_aspect=keep_aspect)  # keep_aspect: a padded batch
    fast = _run(conditioned_model, inputs, True, score_threshold)
    ref = _run(conditioned_model, inputs, False, score_threshold)
    total_diff, total_fg = 0, 0
    for a, b in zip(fast, ref):
        assert len(a) == len(b)
        if score_threshold == 0.0:
            assert len(b) == 100  # every anchor passes: the maximum number of detections
        assert torch.equal(a.scores, b.scores)
        assert torch.equal(a.pred_classes, b.pred_classes)
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        assert a.pred_masks.dtype == b.pred_masks.dtype == torch.bool
        total_diff += int((a.pred_masks != b.pred_masks).sum())
        total_fg += int(b.pred_masks.sum())
    if score_threshold < 0.9:
        assert total_fg > 1000  # masks with real content
    assert total_diff == 0, f"{total_diff} of {total_fg} foreground pixels differ"


def test_removed_fast_postprocess_key_still_loads_with_a_warning(tmp_path):
    """MODEL.YOLACT.FAST_POSTPROCESS_TEST is gone (the fast post-processing, with the oracle's results, is
    the only one): a config that still sets it, such as the config.yaml a run of an earlier version wrote
    into its OUTPUT_DIR, loads with a warning naming the key, from a file and from the command line."""
    old = tmp_path / "config.yaml"
    base = os.path.join(CONFIG_DIR, "Base-YOLACT.yaml")
    old.write_text(f'_BASE_: "{base}"\nMODEL:\n  YOLACT:\n    FAST_POSTPROCESS_TEST: false\n    NUM_CLASSES: 3\n')
    with captured("yacs") as records:
        cfg = setup_cfg(str(old), ["MODEL.YOLACT.FAST_POSTPROCESS_TEST", "True"])
    assert cfg.MODEL.YOLACT.NUM_CLASSES == 3 and "FAST_POSTPROCESS_TEST" not in cfg.MODEL.YOLACT
    warning = "Deprecated config key (ignoring): MODEL.YOLACT.FAST_POSTPROCESS_TEST"  # yacs's, one line
    assert [r.getMessage() for r in records] == [warning] * 2
    with pytest.raises(UnknownConfigKeyError, match="MODEL.YOLACT.FAST_POSTPROCESS_TST"):  # a typo is still an error
        setup_cfg(str(old), ["MODEL.YOLACT.FAST_POSTPROCESS_TST", "True"])


# ------------------------------------------------------------------------------------------------
# Inference-only forward rewrites (BN folding, channels-last): same function up to rounding
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_fuse_conv_bn_and_channels_last_keep_the_outputs(norm):
    import copy

    from detectron2.modeling import build_model

    from yolact_d2.modeling.optimize import fuse_conv_bn, optimize_for_inference
    from yolact_d2.testing import condition_random_model

    torch.manual_seed(0)
    model = build_model(tiny_cfg(num_classes=6, image_size=128, opts=["MODEL.RESNETS.NORM", norm])).eval()
    x = model.preprocess_image(_inputs(_synthetic_images(1), 128)).tensor
    condition_random_model(model, [x])
    if norm == "FrozenBN":  # give the frozen statistics non-trivial values
        from detectron2.layers import FrozenBatchNorm2d

        g = torch.Generator().manual_seed(0)
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    norms = sum(getattr(m, "norm", None) is not None for m in model.modules())
    fused = copy.deepcopy(model)
    assert fuse_conv_bn(fused) == norms == 20  # ResNet-18: stem + 16 block convs + 3 shortcuts
    assert not any(getattr(m, "norm", None) is not None for m in fused.modules())
    both = optimize_for_inference(copy.deepcopy(model))
    with torch.inference_mode():
        expected = model.inference_tensors(x)
        for variant in (fused, both):
            for got, want in zip(variant.inference_tensors(x), expected):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
