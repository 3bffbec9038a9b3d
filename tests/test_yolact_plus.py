"""YOLACT++ (docs/MODEL.md §1.2, §2.6, §2.7, §3.3, §6.5, §9.7, §12.1): deformable ResNet,
9 rectangular anchors per location, mask re-scoring and its COCO evaluation."""
import contextlib
import io
import json
import math
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.modeling import build_model
from detectron2.modeling.backbone.resnet import BottleneckBlock
from detectron2.structures import BitMasks, Boxes, Instances

from yolact_d2.evaluation import YolactCOCOEvaluator
from yolact_d2.layers import DeformConvExportError, ModulatedDeformConv2d, check_onnx_exportable
from yolact_d2.modeling.anchor_generator import YolactAnchorGenerator
from yolact_d2.modeling.backbone.resnet_dcn import DCNv2BottleneckBlock, deformable_blocks
from yolact_d2.modeling.losses import YolactLoss, binary_mask_iou
from yolact_d2.modeling.maskiou import FastMaskIoUNet
from yolact_d2.modeling.matcher import MatchResult

from conftest import yolact_cfg

R101_PLUS = "COCO-InstanceSegmentation/yolact_plus_R_101_FPN_550.yaml"
R50_PLUS = "COCO-InstanceSegmentation/yolact_plus_R_50_FPN_550.yaml"

torch.set_num_threads(1)  # the machine is shared


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _dcn_blocks(model):
    return [
        name[len("backbone.bottom_up."):-len(".conv2")]
        for name, m in model.named_modules()
        if isinstance(m, ModulatedDeformConv2d)
    ]


@pytest.fixture(scope="module")
def r101_plus():
    return build_model(yolact_cfg(R101_PLUS))


@pytest.fixture(scope="module")
def r50_plus():
    return build_model(yolact_cfg(R50_PLUS))


@pytest.fixture(scope="module")
def small_plus():
    """The R-50 YOLACT++ at 256 px with a 64-channel FPN: the smallest input whose 64x64
    prototypes the mask re-scoring net accepts."""
    cfg = yolact_cfg(R50_PLUS, ["MODEL.YOLACT.NUM_CLASSES", 3, "INPUT.IMAGE_SIZE", 256, "MODEL.FPN.OUT_CHANNELS", 64])
    return build_model(cfg)


# ----------------------------------------------------------------------------------------------
# parameter counts and DCN placement (docs/MODEL.md §2.6, §12.1)
# ----------------------------------------------------------------------------------------------
def test_parameter_counts_r101(r101_plus):
    m = r101_plus
    assert _count(m) == 52_571_142
    assert _count(m.backbone.bottom_up) == 43_187_561
    counts = [_count(m.head.bbox_pred), _count(m.head.cls_score), _count(m.head.coeff_pred)]
    assert counts == [82_980, 1_680_345, 663_840]
    assert _count(m.maskiou_net) == 108_560


def test_parameter_counts_r50(r50_plus):
    assert _count(r50_plus) == 33_766_460
    assert _count(r50_plus.backbone.bottom_up) == 23_508_032 + 874_847  # R-50 + 13 DCN blocks
    assert _count(r50_plus.maskiou_net) == 108_560


def test_dcn_placement_r101(r101_plus):
    expected = ["res3.0", "res3.3"] + [f"res4.{i}" for i in range(0, 23, 3)] + ["res5.0"]
    assert _dcn_blocks(r101_plus) == expected  # layers.1.{0,3}, layers.2.{0,3,...,21}, layers.3.0
    assert len(expected) == 11


def test_dcn_placement_r50(r50_plus):
    expected = [f"res{s}.{i}" for s, n in ((3, 4), (4, 6), (5, 3)) for i in range(n)]
    assert _dcn_blocks(r50_plus) == expected and len(expected) == 13


@pytest.mark.parametrize("blocks,dcn_layers,interval", [(3, 0, 3), (4, 4, 3), (23, 23, 3), (3, 3, 3), (6, 6, 1)])
def test_placement_rule_matches_the_original_formula(blocks, dcn_layers, interval):
    original = [(i + dcn_layers >= blocks) and (i % interval == 0) for i in range(blocks)]
    assert deformable_blocks(blocks, dcn_layers > 0, interval) == original


def test_dcn_block_structure(r101_plus):
    res3 = r101_plus.backbone.bottom_up.res3
    dcn, plain = res3[0], res3[1]
    assert isinstance(dcn, DCNv2BottleneckBlock) and type(plain) is BottleneckBlock
    # torchvision-style: the stride is on the 3x3 (deformable) conv and on its offset predictor
    assert dcn.conv1.stride == (1, 1) and dcn.conv2.stride == (2, 2)
    assert dcn.conv2.conv_offset_mask.stride == (2, 2) and dcn.conv2.conv_offset_mask.padding == (1, 1)
    assert isinstance(dcn.conv2.norm, nn.BatchNorm2d)
    assert plain.conv2.bias is None
    # zero init of the DCN bias and of the offset / mask predictor
    assert not dcn.conv2.bias.any() and not dcn.conv2.conv_offset_mask.weight.any()
    assert not dcn.conv2.conv_offset_mask.bias.any()
    prefix = "backbone.bottom_up.res4.3.conv2."
    shapes = {k: tuple(v.shape) for k, v in r101_plus.state_dict().items() if k.startswith(prefix)}
    assert shapes == {
        "backbone.bottom_up.res4.3.conv2.weight": (256, 256, 3, 3),
        "backbone.bottom_up.res4.3.conv2.bias": (256,),
        "backbone.bottom_up.res4.3.conv2.conv_offset_mask.weight": (27, 256, 3, 3),
        "backbone.bottom_up.res4.3.conv2.conv_offset_mask.bias": (27,),
        "backbone.bottom_up.res4.3.conv2.norm.weight": (256,),
        "backbone.bottom_up.res4.3.conv2.norm.bias": (256,),
        "backbone.bottom_up.res4.3.conv2.norm.running_mean": (256,),
        "backbone.bottom_up.res4.3.conv2.norm.running_var": (256,),
        "backbone.bottom_up.res4.3.conv2.norm.num_batches_tracked": (),
    }
    # the non-DCN names are Detectron2's
    assert "backbone.bottom_up.res4.4.conv2.weight" in r101_plus.state_dict()
    assert "backbone.bottom_up.res4.4.conv2.bias" not in r101_plus.state_dict()


def test_frozen_bn_and_freeze_at_work_with_dcn():
    cfg = yolact_cfg(R50_PLUS, ["MODEL.RESNETS.NORM", "FrozenBN", "MODEL.BACKBONE.FREEZE_AT", 3])
    cfg.MODEL.RESNETS.DEPTH = 50
    bottom_up = build_model(cfg).backbone.bottom_up
    assert not any(p.requires_grad for p in bottom_up.res3.parameters())  # frozen incl. the DCN
    assert all(p.requires_grad for p in bottom_up.res4[0].conv2.parameters())


def test_dcn_v1_is_rejected():
    with pytest.raises(ValueError, match="DEFORM_MODULATED"):
        build_model(yolact_cfg(R50_PLUS, ["MODEL.RESNETS.DEFORM_MODULATED", False]))


# ----------------------------------------------------------------------------------------------
# DCN numerics
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stride", [1, 2])
def test_dcn_zero_init_is_half_conv_plus_bias(stride):
    dcn = ModulatedDeformConv2d(4, 6, 3, stride=stride, padding=1)
    with torch.no_grad():
        dcn.bias.copy_(torch.randn(6))
    x = torch.randn(2, 4, 9, 11)
    expected = 0.5 * F.conv2d(x, dcn.weight, stride=stride, padding=1) + dcn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(dcn(x), expected, rtol=1e-5, atol=1e-5)


def _offset_bias(dcn, dy, dx, mask_logit=0.0, taps=None):
    """Constant offsets (dy, dx) for the given kernel taps (all by default), via the bias of
    conv_offset_mask: channel 2k = dy, 2k + 1 = dx of tap k; channels 18..26 the mask logits."""
    bias = torch.zeros(27)
    for k in range(9) if taps is None else taps:
        bias[2 * k], bias[2 * k + 1] = dy, dx
    bias[18:] = mask_logit
    with torch.no_grad():
        dcn.conv_offset_mask.bias.copy_(bias)


def test_dcn_offset_layout_dy_dx_interleaved():
    dcn = ModulatedDeformConv2d(3, 5, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 10, 12)
    # dx = +1: every tap reads one pixel to the right = conv of the image shifted left by one
    _offset_bias(dcn, 0.0, 1.0)
    shifted = F.pad(x[..., 1:], (0, 1))
    expected = 0.5 * F.conv2d(shifted, dcn.weight, padding=1)
    torch.testing.assert_close(dcn(x)[..., 1:-1, 1:-2], expected[..., 1:-1, 1:-2], rtol=1e-5, atol=1e-5)
    # dy = +1: one pixel down
    _offset_bias(dcn, 1.0, 0.0)
    shifted = F.pad(x[..., 1:, :], (0, 0, 0, 1))
    expected = 0.5 * F.conv2d(shifted, dcn.weight, padding=1)
    torch.testing.assert_close(dcn(x)[..., 1:-2, 1:-1], expected[..., 1:-2, 1:-1], rtol=1e-5, atol=1e-5)


def test_dcn_taps_are_row_major_and_mask_is_sigmoid():
    dcn = ModulatedDeformConv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        dcn.weight.zero_()
        dcn.weight[0, 0, 0, 2] = 1.0  # tap k = 2: top-right, reads x[y - 1, x + 1]
    x = torch.randn(1, 1, 8, 8)
    _offset_bias(dcn, 0.0, 1.0, mask_logit=2.0, taps=[2])  # only tap 2 moves one more to the right
    out = dcn(x)
    expected = torch.sigmoid(torch.tensor(2.0)) * x[0, 0, 0:6, 2:8]  # x[y - 1, x + 2] for y 1..6, x 0..5
    torch.testing.assert_close(out[0, 0, 1:7, 0:6], expected, rtol=1e-5, atol=1e-6)
    assert out[0, 0, 0].abs().max() == 0  # row -1 is outside: zero


def test_dcn_fractional_offsets_are_bilinear_with_zeros_outside():
    """DCNv2's im2col (external/DCNv2 of the original): a sample at (h, w) is the bilinear mix of
    its four neighbours, neighbours outside the map read 0. Hand-computed for the centre tap moved
    by (dy, dx) = (-0.5, +0.25): row 0 mixes with the zero row -1, column 4 with the zero column 5."""
    dcn = ModulatedDeformConv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        dcn.weight.zero_()
        dcn.weight[0, 0, 1, 1] = 1.0  # centre tap k = 4 only
    _offset_bias(dcn, -0.5, 0.25, mask_logit=0.0, taps=[4])  # mask sigmoid(0) = 0.5 on every tap
    x = torch.arange(1.0, 21.0).view(1, 1, 4, 5)

    def at(r, c):
        return float(x[0, 0, r, c]) if 0 <= r < 4 and 0 <= c < 5 else 0.0

    expected = torch.tensor([
        [0.5 * (0.5 * (0.75 * at(y - 1, c) + 0.25 * at(y - 1, c + 1)) + 0.5 * (0.75 * at(y, c) + 0.25 * at(y, c + 1)))
         for c in range(5)]
        for y in range(4)
    ])
    assert expected[0, 4] == 0.5 * 0.5 * 0.75 * 5.0  # corner: three of four neighbours outside
    torch.testing.assert_close(dcn(x)[0, 0], expected, rtol=1e-6, atol=1e-6)


def test_dcn_gradients_reach_offsets():
    dcn = ModulatedDeformConv2d(2, 2, 3, padding=1)
    dcn(torch.randn(1, 2, 6, 6)).square().sum().backward()
    assert dcn.conv_offset_mask.weight.grad.abs().sum() > 0 and dcn.weight.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dcn_on_cuda_matches_cpu():
    dcn = ModulatedDeformConv2d(3, 4, 3, stride=2, padding=1)
    nn.init.normal_(dcn.conv_offset_mask.weight, std=0.5)
    x = torch.randn(2, 3, 9, 9)
    gpu = torch.device("cuda", 0)
    torch.testing.assert_close(dcn.to(gpu)(x.to(gpu)).cpu(), dcn.cpu()(x), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# ONNX export (docs/YOLACT_PLUS.md)
# ----------------------------------------------------------------------------------------------
def test_export_checks():
    net = nn.Sequential(ModulatedDeformConv2d(3, 4, 3, padding=1))
    check_onnx_exportable(net, opset_version=19)
    check_onnx_exportable(net)  # the exporter's default opset
    with pytest.raises(DeformConvExportError, match="opset_version>=19"):
        check_onnx_exportable(net, opset_version=18)
    with pytest.raises(DeformConvExportError, match="dynamo=True"):
        check_onnx_exportable(net, opset_version=19, dynamo=False)
    check_onnx_exportable(nn.Conv2d(3, 4, 3), opset_version=11, dynamo=False)  # no DCN: anything goes


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated
def test_torchscript_onnx_export_raises_clear_error(tmp_path):
    net = nn.Sequential(ModulatedDeformConv2d(3, 4, 3, padding=1)).eval()
    with pytest.raises(DeformConvExportError, match="dynamo=True"), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(tmp_path / "m.onnx"), dynamo=False, opset_version=19)


def test_dynamo_onnx_export_runs_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    net = nn.Sequential(ModulatedDeformConv2d(3, 4, 3, stride=2, padding=1)).eval()
    nn.init.normal_(net[0].conv_offset_mask.weight, std=1.0)  # offsets of several pixels
    x = torch.randn(2, 3, 9, 11)
    path = str(tmp_path / "dcn.onnx")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(net, (x,), path, dynamo=True, opset_version=19)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), net(x).detach(), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# anchors (docs/MODEL.md §3.3)
# ----------------------------------------------------------------------------------------------
def _original_priors(conv_sizes, scales, ratios=(1, 0.5, 2), max_size=550):
    """docs/MODEL.md §3.3 in plain Python floats, as the original computes them."""
    priors = []
    for (conv_h, conv_w), level_scales in zip(conv_sizes, scales):
        for j in range(conv_h):
            for i in range(conv_w):
                x, y = (i + 0.5) / conv_w, (j + 0.5) / conv_h
                for scale in level_scales:
                    for ar in ratios:
                        ar = math.sqrt(ar)
                        priors += [x, y, scale * ar / max_size, scale / ar / max_size]
    return torch.tensor(priors, dtype=torch.float32).view(-1, 4)


def test_anchors_at_550_are_the_originals_bit_for_bit():
    gen = YolactAnchorGenerator(yolact_cfg(R101_PLUS))
    assert gen.num_anchors == 9
    sizes = [(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)]
    anchors = gen(sizes, (550, 550))
    assert anchors.shape == (57_744, 4)
    original_scales = [[s * 2 ** (j / 3) for j in range(3)] for s in (24, 48, 96, 192, 384)]
    assert gen.scales == original_scales  # the config's literals are the exact Python floats
    assert torch.equal(anchors, _original_priors(sizes, original_scales))
    # P3 location 0 in pixels, scale-major then aspect ratio (docs/MODEL.md §3.3)
    px = anchors[:9, 2:] * 550
    expected = [(24, 24), (16.97, 33.94), (33.94, 16.97), (30.24, 30.24), (21.38, 42.76), (42.76, 21.38),
                (38.10, 38.10), (26.94, 53.88), (53.88, 26.94)]
    torch.testing.assert_close(px, torch.tensor(expected), atol=0.01, rtol=0)


def test_plus_model_predicts_9_anchors_per_location(small_plus):
    assert small_plus.head.bbox_pred.out_channels == 36 and small_plus.head.cls_score.out_channels == 9 * 4


# ----------------------------------------------------------------------------------------------
# mask re-scoring net (docs/MODEL.md §2.7) and its training targets (§6.5)
# ----------------------------------------------------------------------------------------------
def test_fast_mask_iou_net_shapes():
    net = FastMaskIoUNet(num_classes=80)
    sizes = []
    convs = [m for m in net.layers if isinstance(m, nn.Conv2d)]
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for m in convs]
    out = net(torch.rand(5, 1, 138, 138))
    for h in hooks:
        h.remove()
    assert sizes == [68, 33, 16, 7, 3, 3]
    assert out.shape == (5, 80) and out.min() >= 0
    assert [type(m).__name__ for m in net.layers] == ["Conv2d", "ReLU"] * 6  # ReLU after the last conv too
    assert [m.padding for m in net.layers if isinstance(m, nn.Conv2d)] == [(0, 0)] * 6
    with pytest.raises(ValueError, match="at least 63x63"):
        net(torch.rand(1, 1, 62, 62))


def test_binary_mask_iou():
    a = torch.zeros(2, 4, 4)
    b = torch.zeros(2, 4, 4)
    a[0, :2, :2] = 1  # 4 pixels
    b[0, :2, :] = 1  # 8 pixels, 4 shared -> 4 / 8
    a[1, 0, 0] = 1  # disjoint -> 0
    b[1, 3, 3] = 1
    assert binary_mask_iou(a, b).tolist() == [0.5, 0.0]
    assert binary_mask_iou(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)).tolist() == [0.0]  # no NaN


def test_mask_iou_training_samples():
    """Three positives on 16x16 prototypes: a GT of 64 px predicted at p = 0.8 inside its (padded)
    box, a GT of 16 px (<= 25, skipped) and a GT of 36 px predicted at p = 0.3 (empty mask)."""
    cfg = yolact_cfg("Base-YOLACT.yaml", ["MODEL.YOLACT.NUM_CLASSES", 3])
    crit = YolactLoss(cfg)
    assert crit.mask_iou_min_area == 25 and crit.loss_weights["loss_mask_iou"] == 25.0
    masks = torch.zeros(3, 16, 16)
    masks[0, 4:12, 4:12] = 1  # 64 px, box [4, 12) -> crop keeps [3, 13): 100 px
    masks[1, 0:4, 0:4] = 1  # 16 px
    masks[2, 8:14, 8:14] = 1  # 36 px
    target = {
        "boxes": torch.tensor([[4, 4, 12, 12], [0, 0, 4, 4], [8, 8, 14, 14]]) / 16.0,
        "classes": torch.tensor([2, 0, 1]),
        "masks": masks,
    }
    protos = torch.ones(1, 1, 16, 16)

    def logit(p):
        return math.log(p / (1 - p))

    coeffs = torch.tensor([[[logit(0.8)], [logit(0.8)], [logit(0.3)]]], requires_grad=True)
    match = MatchResult(torch.tensor([3, 1, 2]), torch.tensor([0, 1, 2]), torch.zeros(3, 4))
    samples = []
    crit.mask_loss(coeffs, protos, [match], [target], samples)
    (soft, iou, classes), = samples
    assert soft.shape == (2, 16, 16) and soft.requires_grad  # not detached (as the original)
    assert classes.tolist() == [2, 1]
    torch.testing.assert_close(iou, torch.tensor([64 / 100, 0.0]))
    # the inputs are the GT-box-cropped soft masks
    assert soft[0, 3:13, 3:13].sub(0.8).abs().max() < 1e-6 and soft[0].sum().item() == pytest.approx(80.0, rel=1e-5)

    # the loss: smooth-L1 (beta 1) of the prediction at the GT class, summed
    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([[0.1, 0.2, 0.3]]).expand(x.shape[0], 3)

    loss = YolactLoss.mask_iou_loss(Constant(), samples)
    # predictions 0.3 (class 2) vs 0.64 and 0.2 (class 1) vs 0: both |d| < 1 -> d^2 / 2
    assert loss.item() == pytest.approx(0.5 * 0.34**2 + 0.5 * 0.2**2, rel=1e-5)


def test_mask_iou_loss_without_samples_is_zero_but_connected():
    net = FastMaskIoUNet(num_classes=3)
    loss = YolactLoss.mask_iou_loss(net, [(torch.zeros(0, 64, 64), torch.zeros(0), torch.zeros(0, dtype=torch.long))])
    assert loss.item() == 0
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


# ----------------------------------------------------------------------------------------------
# training and inference of the assembled model
# ----------------------------------------------------------------------------------------------
def _instances(h, w, boxes, classes):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for k, b in enumerate(boxes):
        masks[k, int(b[1]):int(b[3]), int(b[0]):int(b[2])] = True
    inst.gt_masks = BitMasks(masks)
    return inst


def test_training_step(small_plus):
    model = small_plus
    model.train()
    batch = [
        {"image": torch.rand(3, 256, 256) * 255,
         "instances": _instances(256, 256, [[20, 30, 160, 200], [120, 100, 250, 240]], [0, 2])},
        {"image": torch.rand(3, 256, 256) * 255, "instances": _instances(256, 256, [[40, 40, 200, 180]], [1])},
    ]
    losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_sem_seg", "loss_mask_iou"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_mask_iou"] > 0
    model.zero_grad()
    losses["loss_mask_iou"].backward(retain_graph=True)
    # loss_mask_iou trains the re-scoring net and, through the soft masks, the coefficients
    assert model.maskiou_net.layers[0].weight.grad.abs().sum() > 0
    assert model.head.coeff_pred.weight.grad.abs().sum() > 0
    model.zero_grad()
    sum(losses.values()).backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, p in params if p.grad is None or not torch.isfinite(p.grad).all()] == []
    # the zero-initialised offset / mask predictors of the DCN blocks get a gradient
    offsets = [p for n, p in params if "conv_offset_mask" in n]
    assert len(offsets) == 26 and all(p.grad.abs().sum() > 0 for p in offsets)
    model.zero_grad()


def test_inference_mask_scores(small_plus):
    model = small_plus
    model.eval()

    class Recorder(nn.Module):
        """Stands in for the re-scoring net: predicts (c + 1) / 10 for class c."""

        def forward(self, x):
            self.inputs = x
            return (torch.arange(3.0) + 1).div(10).expand(x.shape[0], 3)

    real = model.maskiou_net
    inputs = [{"image": torch.randint(0, 255, (3, 256, 256), dtype=torch.uint8), "height": 300, "width": 400}]
    try:
        model.maskiou_net = Recorder()
        with torch.no_grad():
            inst = model(inputs)[0]["instances"]
        recorded = model.maskiou_net.inputs
    finally:
        model.maskiou_net = real
    n = len(inst)
    assert n > 0
    torch.testing.assert_close(inst.mask_scores, inst.scores * (inst.pred_classes + 1).float() / 10)
    # the re-scoring net sees the cropped soft masks at prototype resolution (64x64 for 256 px)
    assert recorded.shape == (n, 1, 64, 64) and recorded.min() >= 0 and recorded.max() <= 1
    assert (recorded == 0).any()  # cropped

    with torch.no_grad():
        inst = model(inputs)[0]["instances"]
    assert inst.mask_scores.shape == inst.scores.shape and (inst.mask_scores >= 0).all()


def test_v1_model_has_no_mask_scores():
    cfg = yolact_cfg("Base-YOLACT.yaml", ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                                          "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.YOLACT.NUM_CLASSES", 2])
    model = build_model(cfg).eval()
    assert model.maskiou_net is None
    with torch.no_grad():
        inst = model([{"image": torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8)}])[0]["instances"]
    assert not inst.has("mask_scores")


# ----------------------------------------------------------------------------------------------
# COCO evaluation: box AP with the class score, mask AP with the mask score (docs/MODEL.md §9.7)
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def one_object_dataset(tmp_path):
    """One 40x40 image with one object (category id 7): a 10x10 square at (10, 10)."""
    gt = np.zeros((40, 40), dtype=np.uint8)
    gt[10:20, 10:20] = 1
    rle = mask_util.encode(np.asfortranarray(gt))
    rle["counts"] = rle["counts"].decode("ascii")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 40}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 10, 10], "area": 100,
                         "iscrowd": 0, "segmentation": rle}],
        "categories": [{"id": 7, "name": "square"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    name = f"_yolact_plus_eval_{os.getpid()}"
    register_coco_instances(name, {}, str(path), str(tmp_path))
    DatasetCatalog.get(name)  # fills the category id mapping of the metadata
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _predictions():
    """A: right box, wrong mask; B: wrong box, right mask. By class score A ranks first, by mask
    score B does."""
    inst = Instances((40, 40))
    inst.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 20.0, 20.0], [25.0, 25.0, 35.0, 35.0]]))
    inst.scores = torch.tensor([0.9, 0.8])
    inst.mask_scores = torch.tensor([0.1, 0.7])
    inst.pred_classes = torch.tensor([0, 0])
    masks = torch.zeros(2, 40, 40, dtype=torch.bool)
    masks[0, 30:40, 0:10] = True
    masks[1, 10:20, 10:20] = True
    inst.pred_masks = masks
    return inst


def _evaluate(evaluator, instances):
    evaluator.reset()
    evaluator.process([{"image_id": 1, "height": 40, "width": 40}], [{"instances": instances}])
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluator.evaluate()


def test_coco_evaluator_uses_mask_scores_for_segm_only(one_object_dataset, tmp_path):
    from detectron2.evaluation import COCOEvaluator

    from yolact_d2.engine import YolactTrainer

    cfg = yolact_cfg(R50_PLUS, ["MODEL.YOLACT.NUM_CLASSES", 1])
    out = tmp_path / "inference"
    evaluator = YolactTrainer.build_evaluator(cfg, one_object_dataset, str(out))
    assert isinstance(evaluator, YolactCOCOEvaluator)
    results = _evaluate(evaluator, _predictions())
    # box: A (TP) first -> AP 100; mask: B (TP) first by its mask score -> AP 100
    assert results["bbox"]["AP"] == pytest.approx(100.0) and results["segm"]["AP"] == pytest.approx(100.0)
    saved = json.loads((out / "coco_instances_results.json").read_text())
    assert [(r["category_id"], round(r["score"], 3), round(r["mask_score"], 3)) for r in saved] == [
        (7, 0.9, 0.1), (7, 0.8, 0.7)]

    # Detectron2's evaluator ranks the masks by the class score: A's wrong mask first -> AP 50
    plain = COCOEvaluator(one_object_dataset, tasks=("bbox", "segm"), distributed=False, output_dir=None)
    results = _evaluate(plain, _predictions())
    assert results["bbox"]["AP"] == pytest.approx(100.0) and results["segm"]["AP"] == pytest.approx(50.0, abs=0.5)

    # without mask_scores (YOLACT v1) it is Detectron2's evaluator
    v1 = _predictions()
    v1.remove("mask_scores")
    results = _evaluate(YolactCOCOEvaluator(one_object_dataset, tasks=("bbox", "segm"), distributed=False), v1)
    assert results["segm"]["AP"] == pytest.approx(50.0, abs=0.5)
