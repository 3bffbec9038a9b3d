"""Parameter counts, config loading, training step and inference of the assembled model."""
import glob
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks

from yolact_d2.runtime.config_loading import setup_cfg

from conftest import CONFIG_DIR, tiny_cfg, yolact_cfg


def _count(module):
    """Parameters, counting FrozenBN's frozen affine weight and bias like BatchNorm's."""
    from detectron2.layers import FrozenBatchNorm2d

    n = sum(p.numel() for p in module.parameters())
    n += sum(m.weight.numel() + m.bias.numel() for m in module.modules() if isinstance(m, FrozenBatchNorm2d))
    return n


@pytest.mark.parametrize(
    "config,total,backbone",
    [
        ("COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml", 50_157_071, 42_500_160),
        ("COCO-InstanceSegmentation/yolact_R_50_FPN_550.yaml", 31_164_943, 23_508_032),
    ],
)
def test_parameter_counts_match_the_original(config, total, backbone):
    model = build_model(yolact_cfg(config))
    assert sum(p.numel() for p in model.parameters()) == total
    assert _count(model.backbone.bottom_up) == backbone
    # per-component figures of docs/MODEL.md §12.1
    assert [_count(c) for c in model.backbone.lateral_convs] == [131_328, 262_400, 524_544]  # C3, C4, C5
    assert [_count(c) for c in model.backbone.output_convs] == [590_080] * 3
    assert [_count(c) for c in model.backbone.downsample_convs] == [590_080] * 2
    head = model.head
    assert [_count(head.conv), _count(head.bbox_pred), _count(head.cls_score), _count(head.coeff_pred)] == [
        590_080, 27_660, 560_115, 221_280]
    assert [_count(c) for c in model.protonet.convs_before_upsample] == [590_080] * 3
    assert _count(model.protonet.convs_after_upsample[0]) == 590_080 and _count(model.protonet.predictor) == 8_224
    assert _count(model.sem_seg_head) == 20_560


def test_frozen_bn_count_is_unchanged():
    cfg = yolact_cfg("COCO-InstanceSegmentation/yolact_R_50_FPN_550.yaml", ["MODEL.RESNETS.NORM", "FrozenBN"])
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == 31_164_943 - 53_120  # BN affine now buffers
    assert _count(model) == 31_164_943


def test_feature_and_prototype_sizes_at_550():
    model = build_model(yolact_cfg("COCO-InstanceSegmentation/yolact_R_50_FPN_550.yaml")).eval()
    with torch.no_grad():
        logits, deltas, coeffs, protos, anchors, p3 = model.predict_raw(torch.zeros(1, 3, 550, 550))
    assert p3.shape == (1, 256, 69, 69)
    assert protos.shape == (1, 32, 138, 138) and protos.min() >= 0  # ReLU prototypes
    assert logits.shape == (1, 19248, 81) and deltas.shape == (1, 19248, 4) and coeffs.shape == (1, 19248, 32)
    assert coeffs.abs().max() <= 1  # tanh
    assert anchors.shape == (19248, 4)
    feats = model.backbone(torch.zeros(1, 3, 550, 550))
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)]


def test_narrow_resnet18_builds_with_hand_counted_parameters():
    """R-18 at half width (stem and res2 32 channels), which Detectron2's own builder refuses.
    Hand count: stem 7*7*3*32 + BN; per basic block two 3x3 convs + BN, a 1x1 shortcut + BN where
    the width doubles: 4,768 + 37,120 + 131,712 + 525,568 + 2,099,712 = 2,798,880 (1/4 of R-18)."""
    cfg = tiny_cfg(opts=["MODEL.RESNETS.RES2_OUT_CHANNELS", 32, "MODEL.RESNETS.STEM_OUT_CHANNELS", 32])
    model = build_model(cfg).eval()
    bottom_up = model.backbone.bottom_up
    assert sum(p.numel() for p in bottom_up.parameters()) == 2_798_880
    assert {k: v.channels for k, v in bottom_up.output_shape().items()} == {"res3": 64, "res4": 128, "res5": 256}
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 128, 128))
    assert tuple(feats["p3"].shape) == (1, cfg.MODEL.FPN.OUT_CHANNELS, 16, 16)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True)))
def test_every_config_loads_and_builds(path):
    cfg = yolact_cfg(os.path.relpath(path, CONFIG_DIR))
    if cfg.MODEL.RESNETS.DEPTH >= 50:  # keep the suite fast: build the heads on a small trunk
        cfg.MODEL.RESNETS.DEPTH = 50
    model = build_model(cfg)
    assert model.head.num_classes == cfg.MODEL.YOLACT.NUM_CLASSES


def test_unknown_key_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    base = os.path.join(CONFIG_DIR, "Base-YOLACT.yaml")
    bad.write_text('_BASE_: "%s"\nMODEL:\n  YOLACT:\n    NUM_CLASSE: 3\n' % base)
    cfg = setup_cfg(freeze=False)
    with pytest.raises(KeyError, match="NUM_CLASSE"):
        cfg.merge_from_file(str(bad))


# A hard-coded CUDA device in any spelling: x.cuda(), x.to("cuda"), torch.device("cuda"),
# device="cuda", "cuda:0" (comparisons such as device.type == "cuda" are fine).
_HARD_CODED_CUDA = re.compile(r"""\.cuda\(|\.to\(\s*['"]cuda|device\(\s*['"]cuda|device\s*=\s*['"]cuda|['"]cuda:\d""")


def test_no_cuda_calls_in_package():
    for bad in ['x.cuda()', 'x.to("cuda")', "x.to( 'cuda:1')", 'torch.device("cuda")', 'f(device="cuda")', '"cuda:0"']:
        assert _HARD_CODED_CUDA.search(bad), bad  # the check itself can fail
    assert not _HARD_CODED_CUDA.search('device.type == "cuda"')
    root = os.path.dirname(CONFIG_DIR)
    paths = glob.glob(os.path.join(root, "yolact_d2", "**", "*.py"), recursive=True)
    # LazyConfig files are configs: train.device "cuda" is their default, as MODEL.DEVICE is the yaml configs'
    paths = [p for p in paths if os.sep + os.path.join("model_zoo", "configs") + os.sep not in p]
    assert os.path.join(root, "yolact_d2", "modeling", "meta_arch.py") in paths and len(paths) > 20
    paths.append(os.path.join(root, "train_net.py"))
    for path in paths:
        text = open(path).read()  # train_net.py must exist too: open() fails otherwise
        found = _HARD_CODED_CUDA.search(text)
        assert found is None and "'cuda'" not in text, f"{path}: {found.group(0) if found else repr('cuda')}"


def test_importing_the_package_leaves_warning_filters_alone():
    code = "import warnings; f = list(warnings.filters); import yolact_d2; assert warnings.filters == f, 'changed'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _instances(h, w, boxes, classes, crowd=None, polygons=False):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    if polygons:
        inst.gt_masks = PolygonMasks([[np.array([b[0], b[1], b[2], b[1], b[2], b[3], b[0], b[3]], dtype=np.float64)]
                                      for b in boxes])
    else:
        masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
        for k, b in enumerate(boxes):
            masks[k, int(b[1]):int(b[3]), int(b[0]):int(b[2])] = True
        inst.gt_masks = BitMasks(masks)
    if crowd is not None:
        inst.gt_is_crowd = torch.tensor(crowd, dtype=torch.bool)
    return inst


def test_training_step_edge_cases_finite_losses_and_all_gradients():
    model = build_model(tiny_cfg())
    model.train()
    batch = [
        {"image": torch.rand(3, 128, 128) * 255,
         "instances": _instances(128, 128, [[10, 10, 80, 90], [50, 60, 120, 125]], [0, 2], [False, False])},
        {"image": torch.rand(3, 128, 128) * 255, "instances": _instances(128, 128, [], [], [])},  # no instance
        {"image": torch.rand(3, 128, 128) * 255,
         "instances": _instances(128, 128, [[0, 0, 100, 100]], [1], [True])},  # only a crowd
        {"image": torch.rand(3, 128, 128) * 255,  # a box of zero width, polygon masks, no crowd field
         "instances": _instances(128, 128, [[30, 30, 30, 90], [20, 20, 120, 70]], [1, 1], polygons=True)},
    ]
    losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_sem_seg"}
    for k, v in losses.items():
        assert torch.isfinite(v) and v > 0, k
    sum(losses.values()).backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, p in params if p.grad is None or not torch.isfinite(p.grad).all()] == []
    # every parameter is reached; all but the coarsest levels' convs (no anchor of P6/P7 is
    # selected on 128-px images) get a non-zero gradient
    zero = [n for n, p in params if not p.grad.abs().sum() > 0]
    assert all(n.startswith("backbone.downsample_convs") for n in zero), zero


def test_training_with_non_square_padded_batch():
    model = build_model(tiny_cfg())
    model.train()
    batch = [
        {"image": torch.rand(3, 96, 128) * 255, "instances": _instances(96, 128, [[10, 10, 60, 50]], [0])},
        {"image": torch.rand(3, 128, 80) * 255, "instances": _instances(128, 80, [[5, 40, 70, 120]], [1])},
    ]
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("nms_type", ["fast", "cross_class", "standard"])
def test_inference_non_square_sizes(nms_type):
    model = build_model(tiny_cfg(opts=["MODEL.YOLACT.NMS_TYPE", nms_type])).eval()
    inputs = [
        {"image": torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8), "height": 300, "width": 500},
        {"image": torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8), "height": 240, "width": 320},
        {"image": torch.randint(0, 255, (3, 128, 72), dtype=torch.uint8)},
    ]
    with torch.no_grad():
        outputs = model(inputs)
    expected_sizes = [(300, 500), (240, 320), (128, 72)]
    for out, (h, w) in zip(outputs, expected_sizes):
        inst = out["instances"]
        assert inst.image_size == (h, w)
        n = len(inst)
        assert 0 < n <= 100
        assert inst.pred_boxes.tensor.shape == (n, 4) and inst.pred_boxes.tensor.dtype == torch.float32
        assert inst.pred_masks.shape == (n, h, w) and inst.pred_masks.dtype == torch.bool
        assert inst.pred_classes.dtype == torch.int64 and inst.pred_classes.max() < 3
        assert torch.all(inst.scores[:-1] >= inst.scores[1:])
        b = inst.pred_boxes.tensor
        assert b[:, 0].min() >= 0 and b[:, 2].max() <= w and b[:, 1].min() >= 0 and b[:, 3].max() <= h


def test_bad_nms_type_is_rejected():
    with pytest.raises(ValueError, match="NMS_TYPE"):
        build_model(tiny_cfg(opts=["MODEL.YOLACT.NMS_TYPE", "soft"]))


def test_group_norm_option_places_gn_and_drops_redundant_biases():
    """MODEL.FPN.NORM / MODEL.YOLACT.NORM "GN": GroupNorm after the FPN lateral/output convs and the
    hidden convs of the head and protonet, those convs without bias; prediction convs unchanged.
    The default ("") keeps the original's parameter layout exactly (counted above)."""
    plain = build_model(tiny_cfg())
    model = build_model(tiny_cfg(opts=["MODEL.FPN.NORM", "GN", "MODEL.YOLACT.NORM", "GN"]))
    gn = {n for n, m in model.named_modules() if isinstance(m, torch.nn.GroupNorm)}
    assert gn == {
        *(f"backbone.lateral_convs.{i}.norm" for i in range(3)),
        *(f"backbone.output_convs.{i}.norm" for i in range(3)),
        "head.conv.norm",
        *(f"protonet.convs_before_upsample.{i}.norm" for i in range(3)),
        "protonet.convs_after_upsample.0.norm",
    }
    assert all(m.num_groups == 32 and m.num_channels == 64 for n, m in model.named_modules() if n in gn)
    keys, plain_keys = set(model.state_dict()), set(plain.state_dict())
    assert plain_keys - keys == {n[: -len("norm")] + "bias" for n in gn}
    assert keys - plain_keys == {f"{n}.{p}" for n in gn for p in ("weight", "bias")}
    # GN output is zero-mean per group at init: the ReLU'd FPN outputs keep about half their units
    model.eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(2, 3, 128, 128))
    for name in ("p3", "p4", "p5"):
        assert 0.35 < (feats[name] > 0).float().mean() < 0.65, name
    model.train()
    batch = [{"image": torch.rand(3, 128, 128) * 255, "instances": _instances(128, 128, [[10, 10, 80, 90]], [0])}]
    assert all(torch.isfinite(v) for v in model(batch).values())
