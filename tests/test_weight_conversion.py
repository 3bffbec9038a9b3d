"""Conversion of original YOLACT checkpoints and torchvision ResNets (yolact_d2.checkpoint and
tools/convert_*.py), checked on synthetic checkpoints whose every tensor identifies its key."""
import argparse
import logging
import os
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from detectron2.modeling import build_model

from yolact_d2.converters import (
    UnsupportedCheckpointError,
    convert_torchvision_resnet_state_dict,
    convert_yolact_state_dict,
    count_parameters,
    inspect_yolact_state_dict,
)
from yolact_d2.runtime.converted_files import load_checkpoint_file
from yolact_d2.runtime.safe_load import UnsafeCheckpointError
from yolact_d2.utils.detectron2_internals import CheckpointerExtensionPoints

from conftest import captured, tiny_cfg, yolact_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YOLACT_TOOL = os.path.join(REPO, "tools", "convert_yolact_weights.py")
TORCHVISION_TOOL = os.path.join(REPO, "tools", "convert_torchvision_backbone.py")
R50_CONFIG = "COCO-InstanceSegmentation/yolact_R_50_FPN_550.yaml"
R101_CONFIG = "COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml"
R101_PLUS_CONFIG = "COCO-InstanceSegmentation/yolact_plus_R_101_FPN_550.yaml"
R50_PLUS_CONFIG = "COCO-InstanceSegmentation/yolact_plus_R_50_FPN_550.yaml"
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")

torch.set_num_threads(1)  # the machine is shared; nothing here needs more


# ----------------------------------------------------------------------------------------------
# synthetic original-format checkpoints (key names and shapes: docs/MODEL.md §12.3)
# ----------------------------------------------------------------------------------------------
def original_shapes(depth, width=64, fpn=256, num_classes=81, num_anchors=3, num_prototypes=32, plus=False,
                    dcn_interval=None):
    """Key -> shape of an original YOLACT state dict, in the original order, including the
    unused fpn.downsample_layers.2 of the released checkpoints. `plus` adds the YOLACT++ keys
    (DCN on every `dcn_interval`-th block of C3-C5 -- 3 for R-101, 1 for R-50 by default --
    and maskiou_net)."""
    if dcn_interval is None:
        dcn_interval = 3 if depth == 101 else 1
    shapes = {}

    def bn(prefix, c):
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[prefix + s] = (c,)
        shapes[prefix + "num_batches_tracked"] = ()

    shapes["backbone.conv1.weight"] = (width, 3, 7, 7)
    bn("backbone.bn1.", width)
    in_ch = width
    for s, n in enumerate(BLOCKS[depth]):
        p = width * 2**s
        for b in range(n):
            pre = f"backbone.layers.{s}.{b}."
            shapes[pre + "conv1.weight"] = (p, in_ch if b == 0 else 4 * p, 1, 1)
            bn(pre + "bn1.", p)
            shapes[pre + "conv2.weight"] = (p, p, 3, 3)
            if plus and s > 0 and b % dcn_interval == 0:
                shapes[pre + "conv2.bias"] = (p,)
                shapes[pre + "conv2.conv_offset_mask.weight"] = (27, p, 3, 3)
                shapes[pre + "conv2.conv_offset_mask.bias"] = (27,)
            bn(pre + "bn2.", p)
            shapes[pre + "conv3.weight"] = (4 * p, p, 1, 1)
            bn(pre + "bn3.", 4 * p)
            if b == 0:
                shapes[pre + "downsample.0.weight"] = (4 * p, in_ch, 1, 1)
                bn(pre + "downsample.1.", 4 * p)
        in_ch = 4 * p
    for i in (0, 2, 4, 8):
        shapes[f"proto_net.{i}.weight"], shapes[f"proto_net.{i}.bias"] = (fpn, fpn, 3, 3), (fpn,)
    shapes["proto_net.10.weight"], shapes["proto_net.10.bias"] = (num_prototypes, fpn, 1, 1), (num_prototypes,)
    if plus:
        chans = [1, 8, 16, 32, 64, 128]
        for j, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            shapes[f"maskiou_net.maskiou_net.{2 * j}.weight"] = (cout, cin, 3, 3)
            shapes[f"maskiou_net.maskiou_net.{2 * j}.bias"] = (cout,)
        shapes["maskiou_net.maskiou_net.10.weight"] = (num_classes - 1, 128, 1, 1)
        shapes["maskiou_net.maskiou_net.10.bias"] = (num_classes - 1,)
    for i, c in enumerate((32 * width, 16 * width, 8 * width)):  # C5, C4, C3
        shapes[f"fpn.lat_layers.{i}.weight"], shapes[f"fpn.lat_layers.{i}.bias"] = (fpn, c, 1, 1), (fpn,)
    for name in ("pred_layers.0", "pred_layers.1", "pred_layers.2", "downsample_layers.0",
                 "downsample_layers.1", "downsample_layers.2"):
        shapes[f"fpn.{name}.weight"], shapes[f"fpn.{name}.bias"] = (fpn, fpn, 3, 3), (fpn,)
    head = {"upfeature.0": fpn, "bbox_layer": 4 * num_anchors, "conf_layer": num_classes * num_anchors,
            "mask_layer": num_prototypes * num_anchors}
    for name, c in head.items():
        shapes[f"prediction_layers.0.{name}.weight"] = (c, fpn, 3, 3)
        shapes[f"prediction_layers.0.{name}.bias"] = (c,)
    shapes["semantic_seg_conv.weight"] = (num_classes - 1, fpn, 1, 1)
    shapes["semantic_seg_conv.bias"] = (num_classes - 1,)
    return shapes


def make_original(depth, **kwargs):
    """Tensor number i holds i*1000 + (0, 1, ..., 999, 0, 1, ...): every element tells which key
    it came from and where it was inside it."""
    sd = {}
    for i, (key, shape) in enumerate(original_shapes(depth, **kwargs).items()):
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(i, dtype=torch.long)
        else:
            n = 1
            for d in shape:
                n *= d
            sd[key] = (i * 1000 + torch.arange(n) % 1000).float().reshape(shape)
    return sd


def expected_name(original):
    """Our name for an original key, written independently of the converter (docs/MODEL.md §12.3)."""
    fixed = {
        "fpn.lat_layers.0": "backbone.lateral_convs.2",
        "fpn.lat_layers.1": "backbone.lateral_convs.1",
        "fpn.lat_layers.2": "backbone.lateral_convs.0",
        "fpn.pred_layers.0": "backbone.output_convs.2",
        "fpn.pred_layers.1": "backbone.output_convs.1",
        "fpn.pred_layers.2": "backbone.output_convs.0",
        "fpn.downsample_layers.0": "backbone.downsample_convs.0",
        "fpn.downsample_layers.1": "backbone.downsample_convs.1",
        "prediction_layers.0.upfeature.0": "head.conv",
        "prediction_layers.0.bbox_layer": "head.bbox_pred",
        "prediction_layers.0.conf_layer": "head.cls_score",
        "prediction_layers.0.mask_layer": "head.coeff_pred",
        "proto_net.0": "protonet.convs_before_upsample.0",
        "proto_net.2": "protonet.convs_before_upsample.1",
        "proto_net.4": "protonet.convs_before_upsample.2",
        "proto_net.8": "protonet.convs_after_upsample.0",
        "proto_net.10": "protonet.predictor",
        "semantic_seg_conv": "sem_seg_head.predictor",
    }
    module, _, param = original.rpartition(".")
    if module in fixed:
        return f"{fixed[module]}.{param}"
    if original.startswith("maskiou_net.maskiou_net."):
        return original.replace("maskiou_net.maskiou_net.", "maskiou_net.layers.")
    if original.startswith("backbone.conv1."):
        return original.replace("backbone.", "backbone.bottom_up.stem.")
    if original.startswith("backbone.bn1."):
        return original.replace("backbone.bn1.", "backbone.bottom_up.stem.conv1.norm.")
    _, _, stage, block, rest = original.split(".", 4)
    rest = rest.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
    for k in "123":
        rest = rest.replace(f"bn{k}.", f"conv{k}.norm.")
    return f"backbone.bottom_up.res{int(stage) + 2}.{block}.{rest}"


def source_index(t):
    return int(t.item()) if t.dim() == 0 else int(t.flatten()[0].item()) // 1000


class RecordingCheckpointer(CheckpointerExtensionPoints):
    """Detectron2's DetectionCheckpointer that keeps what loading the model found incompatible."""

    def load_model_state(self, checkpoint):
        self.incompatible = super().load_model_state(checkpoint)
        return self.incompatible


def run_tool(tool, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, tool, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def randomize_bn(module):
    """Non-trivial BN parameters and statistics, so that a BN mapped to the wrong place shows."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=g)
            m.bias.data = 0.1 * torch.randn(c, generator=g)
            m.running_mean = 0.1 * torch.randn(c, generator=g)
            m.running_var = 0.5 + torch.rand(c, generator=g)


def torchvision_c5(net, x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


# ----------------------------------------------------------------------------------------------
# fixtures (each real-size model is built once)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def r101_original():
    return make_original(101)


@pytest.fixture(scope="module")
def r101_converted(r101_original):
    return convert_yolact_state_dict(r101_original, filename="yolact_base_54_800000.pth")


@pytest.fixture(scope="module")
def r101_model():
    return build_model(yolact_cfg(R101_CONFIG))


@pytest.fixture(scope="module")
def r101_plus_original():
    return make_original(101, num_anchors=9, plus=True)


@pytest.fixture(scope="module")
def r101_plus_model():
    return build_model(yolact_cfg(R101_PLUS_CONFIG))


@pytest.fixture(scope="module")
def r50_model():
    return build_model(yolact_cfg(R50_CONFIG))


@pytest.fixture(scope="module")
def r50_finetune_model():
    """FrozenBN (as used for small per-device batches) and 3 classes: a fine-tuning setup."""
    return build_model(yolact_cfg(R50_CONFIG, ["MODEL.RESNETS.NORM", "FrozenBN", "MODEL.YOLACT.NUM_CLASSES", 3]))


@pytest.fixture(scope="module")
def r50_files(tmp_path_factory):
    """A synthetic original R-50 checkpoint and its conversion by the command-line tool."""
    d = tmp_path_factory.mktemp("r50")
    original = make_original(50)
    src, out = d / "yolact_resnet50_54_800000.pth", d / "converted.pth"
    torch.save(original, src)
    result = run_tool(YOLACT_TOOL, src, out)
    return original, src, out, result


@pytest.fixture(scope="module")
def small_original():
    return make_original(101, width=4, fpn=8, num_prototypes=4)


# ----------------------------------------------------------------------------------------------
# key mapping
# ----------------------------------------------------------------------------------------------
def test_synthetic_original_matches_spec(r101_original, r50_files):
    shapes = original_shapes(101)
    assert len(shapes) == 662  # 660 entries of yolact_base + the unused fpn.downsample_layers.2
    assert sum(1 for k in shapes if k.endswith("num_batches_tracked")) == 104
    # docs/MODEL.md §12.3: 50,157,071 parameters + the 590,080 of downsample_layers.2 in a released checkpoint
    assert count_parameters(r101_original) == 50_157_071 + 590_080
    assert count_parameters(r50_files[0]) == 31_164_943 + 590_080


def test_r101_mapping_is_exact(r101_original, r101_converted):
    new_sd, info = r101_converted
    dropped = {"fpn.downsample_layers.2.weight", "fpn.downsample_layers.2.bias"}
    assert set(info["dropped_keys"]) == dropped
    assert any("fpn.downsample_layers.2.weight" in n for n in info["notes"])
    expected = {expected_name(k): k for k in r101_original if k not in dropped}
    assert set(new_sd) == set(expected)
    keys = list(r101_original)
    for new_key, old_key in expected.items():
        # The very same data, not a permuted / reshaped copy.
        assert torch.equal(new_sd[new_key], r101_original[old_key]), new_key
        assert keys[source_index(new_sd[new_key])] == old_key
    # The reversed FPN lists and the head, spelled out.
    for ours, theirs in [
        ("backbone.lateral_convs.0.weight", "fpn.lat_layers.2.weight"),  # C3
        ("backbone.lateral_convs.2.weight", "fpn.lat_layers.0.weight"),  # C5
        ("backbone.output_convs.0.bias", "fpn.pred_layers.2.bias"),  # P3
        ("backbone.output_convs.2.bias", "fpn.pred_layers.0.bias"),  # P5
        ("backbone.downsample_convs.1.weight", "fpn.downsample_layers.1.weight"),
        ("head.cls_score.weight", "prediction_layers.0.conf_layer.weight"),
        ("head.cls_score.bias", "prediction_layers.0.conf_layer.bias"),
        ("protonet.convs_after_upsample.0.weight", "proto_net.8.weight"),
        ("protonet.predictor.weight", "proto_net.10.weight"),
        ("backbone.bottom_up.stem.conv1.norm.running_var", "backbone.bn1.running_var"),
        ("backbone.bottom_up.res4.22.conv3.norm.num_batches_tracked", "backbone.layers.2.22.bn3.num_batches_tracked"),
        ("backbone.bottom_up.res5.0.shortcut.norm.weight", "backbone.layers.3.0.downsample.1.weight"),
    ]:
        assert torch.equal(new_sd[ours], r101_original[theirs]), ours
    assert new_sd["backbone.lateral_convs.0.weight"].shape == (256, 512, 1, 1)
    # Parameter counts (docs/MODEL.md §12.3): 50,157,071 + BN running mean/var (105,344) + 104 counters.
    assert count_parameters(new_sd) == 50_157_071
    assert sum(v.numel() for v in new_sd.values()) == 50_157_071 + 105_344 + 104


def test_r101_info(r101_converted):
    info = r101_converted[1]
    assert info["variant"] == "YOLACT"
    assert (info["backbone"], info["depth"]) == ("R-101", 101)
    assert (info["num_classes"], info["num_anchors"], info["num_prototypes"]) == (80, 3, 32)
    assert info["config_file"].endswith("yolact_R_101_FPN_550.yaml")
    assert info["config_overrides"] == []
    assert (info["input_size"], info["input_size_source"]) == (550, "file name")


def test_r101_strict_load(r101_model, r101_converted):
    new_sd = r101_converted[0]
    model_sd = r101_model.state_dict()
    assert set(model_sd) == set(new_sd)
    assert {k: tuple(v.shape) for k, v in model_sd.items()} == {k: tuple(v.shape) for k, v in new_sd.items()}
    r101_model.load_state_dict(new_sd, strict=True)
    assert torch.equal(r101_model.backbone.lateral_convs[0].weight, new_sd["backbone.lateral_convs.0.weight"])


def test_input_size_from_file_name(small_original):
    for name, size, config in [
        ("yolact_im700_54_800000.pth", 700, "yolact_R_101_FPN_700.yaml"),
        ("weights/yolact_im400_53_700000.pth", 400, "yolact_R_101_FPN_400.yaml"),
        ("yolact_base_54_800000.pth", 550, "yolact_R_101_FPN_550.yaml"),
    ]:
        info = inspect_yolact_state_dict(small_original, filename=name)
        assert (info["input_size"], info["input_size_source"]) == (size, "file name")
        assert info["config_file"].endswith(config)
    info = inspect_yolact_state_dict(small_original, filename="my_checkpoint.pth")
    assert info["input_size"] is None and info["config_file"].endswith("yolact_R_101_FPN_550.yaml")
    assert any("cannot be detected from the weights" in n for n in info["notes"])
    # R-50 has only a 550 config: a 700 checkpoint gets the size and anchor overrides.
    info = inspect_yolact_state_dict(make_original(50, width=4, fpn=8), filename="yolact_resnet50_im700_1_2.pth")
    assert info["config_file"].endswith("yolact_R_50_FPN_550.yaml")
    assert info["config_overrides"][:2] == ["INPUT.IMAGE_SIZE", 700]
    assert "[[30], [61], [122], [244], [488]]" in info["config_overrides"]


def test_wrapped_checkpoints_and_custom_classes(small_original):
    plain, _ = convert_yolact_state_dict(small_original)
    for wrapped in ({"model": small_original}, {"state_dict": small_original, "epoch": 3}):
        new_sd, _ = convert_yolact_state_dict(wrapped)
        assert set(new_sd) == set(plain)
    _, info = convert_yolact_state_dict(make_original(50, width=4, fpn=8, num_classes=21))
    assert info["num_classes"] == 20
    assert info["config_overrides"] == ["MODEL.YOLACT.NUM_CLASSES", 20, "MODEL.FPN.OUT_CHANNELS", 8]


def test_legacy_keys_dropped_and_num_batches_tracked_option(small_original):
    sd = dict(small_original, **{"backbone.layer1.0.conv1.weight": torch.zeros(1)})
    new_sd, info = convert_yolact_state_dict(sd, drop_num_batches_tracked=True)
    assert "backbone.layer1.0.conv1.weight" in info["dropped_keys"]
    assert not any(k.endswith("num_batches_tracked") for k in new_sd)
    assert any("104 BN num_batches_tracked" in n for n in info["notes"])


def test_yolact_plus_is_detected():
    sd = make_original(101, width=4, fpn=8, num_anchors=9, plus=True)
    info = inspect_yolact_state_dict(sd, filename="yolact_plus_base_54_800000.pth")
    assert info["variant"] == "YOLACT++" and info["backbone"] == "R-101"
    assert (info["dcn_blocks"], info["has_maskiou_net"], info["num_anchors"]) == (11, True, 9)
    assert (info["deform_on_per_stage"], info["deform_interval"]) == ([False, True, True, True], 3)
    assert info["config_file"].endswith("yolact_plus_R_101_FPN_550.yaml")
    assert info["config_overrides"] == ["MODEL.FPN.OUT_CHANNELS", 8]
    info = inspect_yolact_state_dict(make_original(50, width=4, fpn=8, num_anchors=9, plus=True))
    assert (info["dcn_blocks"], info["deform_interval"]) == (13, 1)
    assert info["config_file"].endswith("yolact_plus_R_50_FPN_550.yaml")
    # another placement is expressed with the config keys
    info = inspect_yolact_state_dict(make_original(50, width=4, fpn=8, num_anchors=9, plus=True, dcn_interval=2))
    assert info["config_overrides"][:2] == ["MODEL.YOLACT.DEFORM_INTERVAL", 2]


def test_yolact_plus_unexpressible_dcn_placement_is_rejected():
    sd = make_original(50, width=4, fpn=8, num_anchors=9, plus=True)
    sd = {k: v for k, v in sd.items() if not k.startswith("backbone.layers.2.4.conv2.")}
    sd["backbone.layers.2.4.conv2.weight"] = torch.zeros(16, 16, 3, 3)  # res4.4 plain, res4.5 DCN
    with pytest.raises(UnsupportedCheckpointError, match="DEFORM_ON_PER_STAGE"):
        convert_yolact_state_dict(sd)


def test_yolact_plus_r101_round_trip(r101_plus_original, r101_plus_model):
    """Every tensor of a full-size YOLACT++ R-101 checkpoint lands where expected, and the result
    loads strictly into the model built from the YOLACT++ config."""
    new_sd, info = convert_yolact_state_dict(r101_plus_original, filename="yolact_plus_base_54_800000.pth")
    assert info["variant"] == "YOLACT++" and info["config_overrides"] == []
    assert info["config_file"].endswith("yolact_plus_R_101_FPN_550.yaml")
    dropped = {"fpn.downsample_layers.2.weight", "fpn.downsample_layers.2.bias"}
    assert set(info["dropped_keys"]) == dropped
    expected = {expected_name(k): k for k in r101_plus_original if k not in dropped}
    assert set(new_sd) == set(expected)
    keys = list(r101_plus_original)
    for new_key, old_key in expected.items():
        assert torch.equal(new_sd[new_key], r101_plus_original[old_key]), new_key
        assert keys[source_index(new_sd[new_key])] == old_key
    for ours, theirs in [
        ("backbone.bottom_up.res3.3.conv2.conv_offset_mask.weight",
         "backbone.layers.1.3.conv2.conv_offset_mask.weight"),
        ("backbone.bottom_up.res4.21.conv2.bias", "backbone.layers.2.21.conv2.bias"),
        ("backbone.bottom_up.res5.0.conv2.conv_offset_mask.bias", "backbone.layers.3.0.conv2.conv_offset_mask.bias"),
        ("backbone.bottom_up.res5.0.conv2.norm.running_var", "backbone.layers.3.0.bn2.running_var"),
        ("maskiou_net.layers.0.weight", "maskiou_net.maskiou_net.0.weight"),
        ("maskiou_net.layers.10.bias", "maskiou_net.maskiou_net.10.bias"),
        ("head.cls_score.weight", "prediction_layers.0.conf_layer.weight"),
    ]:
        assert torch.equal(new_sd[ours], r101_plus_original[theirs]), ours
    assert new_sd["head.cls_score.weight"].shape == (729, 256, 3, 3)
    assert count_parameters(new_sd) == 52_571_142  # docs/MODEL.md §12.1
    model_sd = r101_plus_model.state_dict()
    assert {k: tuple(v.shape) for k, v in model_sd.items()} == {k: tuple(v.shape) for k, v in new_sd.items()}
    r101_plus_model.load_state_dict(new_sd, strict=True)
    assert torch.equal(r101_plus_model.backbone.bottom_up.res4[3].conv2.conv_offset_mask.weight,
                       r101_plus_original["backbone.layers.2.3.conv2.conv_offset_mask.weight"])


def test_yolact_plus_incomplete_maskiou_net_is_rejected():
    sd = make_original(50, width=4, fpn=8, num_anchors=9, plus=True)
    del sd["maskiou_net.maskiou_net.4.bias"]
    with pytest.raises(ValueError, match="maskiou_net.layers.4.bias"):
        convert_yolact_state_dict(sd)
    sd = make_original(50, width=4, fpn=8, num_anchors=9, plus=True)
    sd["maskiou_net.maskiou_net.2.weight"] = torch.zeros(16, 8, 1, 1)
    with pytest.raises(ValueError, match=r"maskiou_net.maskiou_net.2.weight has shape \(16, 8, 1, 1\)"):
        convert_yolact_state_dict(sd)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torchvision.models.resnet18(weights=None).state_dict(), "convert it with yolact-convert backbone"),
        ({"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)}, "already uses Detectron2"),
        ({"foo": torch.zeros(1)}, r"no 'fpn.lat_layers.\*' / 'prediction_layers.0.\*' keys found"),
        ({"fpn.lat_layers.0.weight": [1, 2]}, "non-tensor values for 'fpn.lat_layers.0.weight'"),
        ([torch.zeros(1)], "expected a state dict"),
        ({}, "empty"),
    ],
)
def test_not_a_yolact_checkpoint(bad, message):
    with pytest.raises(ValueError, match=message):
        convert_yolact_state_dict(bad)


def test_unknown_incomplete_or_unshared_checkpoints(small_original):
    with pytest.raises(ValueError, match="unrecognised keys 'prediction_layers.0.score_layer.weight'"):
        convert_yolact_state_dict(dict(small_original, **{"prediction_layers.0.score_layer.weight": torch.zeros(1)}))
    with pytest.raises(ValueError, match="prediction_layers other than 0"):
        convert_yolact_state_dict(dict(small_original, **{"prediction_layers.1.bbox_layer.weight": torch.zeros(1)}))
    incomplete = {k: v for k, v in small_original.items() if k != "proto_net.8.bias"}
    with pytest.raises(ValueError, match="protonet.convs_after_upsample.0.bias"):
        convert_yolact_state_dict(incomplete)
    incomplete = {k: v for k, v in small_original.items() if k != "backbone.layers.1.2.bn2.running_var"}
    with pytest.raises(ValueError, match="res3.2.conv2.norm.running_var"):
        convert_yolact_state_dict(incomplete)


# ----------------------------------------------------------------------------------------------
# loading into models built from the configs (R-50 through the command-line tool)
# ----------------------------------------------------------------------------------------------
def test_cli_converts_r50(r50_files):
    _, src, out, result = r50_files
    assert result.returncode == 0, result.stderr
    assert "Detected: YOLACT R-50, 80 classes (+ background), 3 anchors per location, 32 prototypes" in result.stdout
    assert "Matching config: configs/COCO-InstanceSegmentation/yolact_R_50_FPN_550.yaml" in result.stdout
    assert "fpn.downsample_layers.2.weight" in result.stdout
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert saved["__author__"] == "yolact_d2 convert_yolact_weights"
    assert saved["matching_heuristics"] is False
    assert count_parameters(saved["model"]) == 31_164_943
    assert not [p for p in os.listdir(out.parent) if ".tmp" in p]  # no temporary file left



@pytest.fixture
def fvcore_log():
    """fvcore's warnings during the test (Detectron2's setup_logger defeats caplog)."""
    with captured("fvcore") as records:
        yield records



def test_r50_loads_with_detection_checkpointer(r50_model, r50_files, fvcore_log):
    _, _, out, _ = r50_files
    checkpointer = RecordingCheckpointer(r50_model)
    checkpointer.load(str(out))
    inc = checkpointer.incompatible
    assert (inc.missing_keys, inc.unexpected_keys, inc.incorrect_shapes) == ([], [], [])
    assert not [r for r in fvcore_log if r.levelno >= logging.WARNING]
    saved = torch.load(out, map_location="cpu", weights_only=True)["model"]
    model_sd = r50_model.state_dict()
    assert set(model_sd) == set(saved)
    assert all(torch.equal(model_sd[k], saved[k]) for k in saved)


def test_frozen_bn_and_fine_tuning_with_fewer_classes(r50_finetune_model, r50_files, tmp_path, fvcore_log):
    """81-class COCO weights into a FrozenBN model with 3 classes: the class layers keep their
    fresh init (fvcore skips them with a warning), everything else is loaded. FrozenBN has no
    num_batches_tracked: kept counters are reported as unexpected; --drop-num-batches-tracked
    makes the load clean."""
    original, _, out, _ = r50_files
    model = r50_finetune_model
    class_keys = ["head.cls_score.weight", "head.cls_score.bias", "sem_seg_head.predictor.weight",
                  "sem_seg_head.predictor.bias"]
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k in class_keys}

    checkpointer = RecordingCheckpointer(model)
    checkpointer.load(str(out))
    inc = checkpointer.incompatible
    assert inc.unexpected_keys and all(k.endswith(".norm.num_batches_tracked") for k in inc.unexpected_keys)
    assert len(inc.unexpected_keys) == 53  # every BN of R-50

    dropped = tmp_path / "dropped.pth"
    new_sd, _ = convert_yolact_state_dict(original, drop_num_batches_tracked=True)
    torch.save({"model": new_sd, "__author__": "test", "matching_heuristics": False}, dropped)
    checkpointer = RecordingCheckpointer(model)
    checkpointer.load(str(dropped))
    inc = checkpointer.incompatible
    assert inc.unexpected_keys == []
    assert sorted(inc.missing_keys) == sorted(class_keys)
    assert {k: (s_ckpt, s_model) for k, s_ckpt, s_model in inc.incorrect_shapes} == {
        "head.cls_score.weight": ((243, 256, 3, 3), (12, 256, 3, 3)),
        "head.cls_score.bias": ((243,), (12,)),
        "sem_seg_head.predictor.weight": ((80, 256, 1, 1), (3, 256, 1, 1)),
        "sem_seg_head.predictor.bias": ((80,), (3,)),
    }
    log = "\n".join(r.getMessage() for r in fvcore_log)
    for k in class_keys:
        assert f"Skip loading parameter '{k}' to the model due to incompatible shapes" in log
    model_sd = model.state_dict()
    for k, v in model_sd.items():
        if k in class_keys:
            assert torch.equal(v, fresh[k]), k
        else:
            assert torch.equal(v, new_sd[k]), k


def test_checkpoint_without_counters_loads_cleanly_into_bn_model(r50_model, r50_files, tmp_path):
    """BatchNorm fills in a missing num_batches_tracked (the saved dict has no version metadata),
    so the FrozenBN-friendly conversion also loads cleanly with NORM BN."""
    new_sd, _ = convert_yolact_state_dict(r50_files[0], drop_num_batches_tracked=True)
    path = tmp_path / "no_counters.pth"
    torch.save({"model": new_sd, "__author__": "test", "matching_heuristics": False}, path)
    checkpointer = RecordingCheckpointer(r50_model)
    checkpointer.load(str(path))
    inc = checkpointer.incompatible
    assert (inc.missing_keys, inc.unexpected_keys, inc.incorrect_shapes) == ([], [], [])


# ----------------------------------------------------------------------------------------------
# command-line errors
# ----------------------------------------------------------------------------------------------
def test_cli_rejects_torchvision_checkpoint(tmp_path):
    src = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), src)
    result = run_tool(YOLACT_TOOL, src, tmp_path / "out.pth")
    assert result.returncode == 1
    assert f"error: {src}: not an original YOLACT checkpoint" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.pth").exists()


def test_cli_missing_file(tmp_path):
    for tool in (YOLACT_TOOL, TORCHVISION_TOOL):
        result = run_tool(tool, tmp_path / "nope.pth", tmp_path / "out.pth")
        assert result.returncode == 1
        assert result.stderr.strip() == f"error: {tmp_path / 'nope.pth'}: no such file"


def test_cli_converts_yolact_plus_r50(tmp_path, fvcore_log):
    """A full-size synthetic yolact_plus_resnet50 checkpoint through the command-line tool, then
    DetectionCheckpointer into the model of the matching config: nothing missing or unexpected."""
    original = make_original(50, num_anchors=9, plus=True)
    src, out = tmp_path / "yolact_plus_resnet50_54_800000.pth", tmp_path / "out.pth"
    torch.save(original, src)
    result = run_tool(YOLACT_TOOL, src, out)
    assert result.returncode == 0, result.stderr
    assert "Detected: YOLACT++ R-50 (13 DCN blocks, maskiou_net)" in result.stdout
    assert "Matching config: configs/COCO-InstanceSegmentation/yolact_plus_R_50_FPN_550.yaml" in result.stdout
    saved = torch.load(out, map_location="cpu", weights_only=True)["model"]
    assert count_parameters(saved) == 33_766_460  # docs/MODEL.md §12.1
    model = build_model(yolact_cfg(R50_PLUS_CONFIG))
    checkpointer = RecordingCheckpointer(model)
    checkpointer.load(str(out))
    inc = checkpointer.incompatible
    assert (inc.missing_keys, inc.unexpected_keys, inc.incorrect_shapes) == ([], [], [])
    model_sd = model.state_dict()
    assert set(model_sd) == set(saved) and all(torch.equal(model_sd[k], saved[k]) for k in saved)
    assert torch.equal(model.maskiou_net.layers[10].weight, original["maskiou_net.maskiou_net.10.weight"])


def test_load_checkpoint_file(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("hello")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint file"):
        load_checkpoint_file(str(garbage))
    with pytest.raises(FileNotFoundError):
        load_checkpoint_file(str(tmp_path / "nope.pth"))
    # A checkpoint with non-tensor objects is refused unless the user opts in (--unsafe-load).
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": {"a": torch.ones(1)}, "args": argparse.Namespace(lr=0.1)}, pickled)
    with pytest.raises(UnsafeCheckpointError, match=r"pickled\.pth: .*\(argparse\.Namespace\).*--unsafe-load"):
        load_checkpoint_file(str(pickled))
    loaded = load_checkpoint_file(str(pickled), unsafe=True)
    assert torch.equal(loaded["model"]["a"], torch.ones(1)) and loaded["args"].lr == 0.1


# ----------------------------------------------------------------------------------------------
# torchvision backbones
# ----------------------------------------------------------------------------------------------
def test_torchvision_r50_backbone(r50_model, tmp_path):
    tv = torchvision.models.resnet50(weights=None)
    randomize_bn(tv)
    new_sd, depth = convert_torchvision_resnet_state_dict(tv.state_dict())
    assert depth == 50
    assert not any(k.startswith("fc.") or not k.startswith("backbone.bottom_up.") for k in new_sd)
    path = tmp_path / "r50_tv.pth"
    torch.save({"model": new_sd, "__author__": "test", "matching_heuristics": False}, path)
    checkpointer = RecordingCheckpointer(r50_model)
    checkpointer.load(str(path))
    inc = checkpointer.incompatible
    assert inc.unexpected_keys == [] and inc.incorrect_shapes == []
    non_backbone = {k for k in r50_model.state_dict() if not k.startswith("backbone.bottom_up.")}
    assert set(inc.missing_keys) == non_backbone
    bottom_up = r50_model.backbone.bottom_up
    assert torch.equal(bottom_up.res2[0].conv1.weight, tv.layer1[0].conv1.weight)
    # Same C5 as torchvision: the stride is in the 3x3 conv (STRIDE_IN_1X1 False), BN mapped right.
    x = torch.randn(1, 3, 64, 64)
    was_training = r50_model.training
    r50_model.eval()
    tv.eval()
    try:
        with torch.no_grad():
            ours, theirs = bottom_up(x)["res5"], torchvision_c5(tv, x)
    finally:
        r50_model.train(was_training)
    assert ours.shape == theirs.shape == (1, 2048, 2, 2)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_torchvision_r18_cli_and_features(tmp_path):
    tv = torchvision.models.resnet18(weights=None)
    randomize_bn(tv)
    # Old torchvision files (e.g. resnet50-19c8e357.pth) have no num_batches_tracked.
    old_style = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    src, out = tmp_path / "resnet18-f37072fd.pth", tmp_path / "r18.pth"
    torch.save(old_style, src)
    result = run_tool(TORCHVISION_TOOL, src, out)
    assert result.returncode == 0, result.stderr
    assert "Detected: torchvision ResNet-18" in result.stdout
    assert "fc.weight, fc.bias" in result.stdout

    model = build_model(tiny_cfg())  # R-18, STRIDE_IN_1X1 False
    checkpointer = RecordingCheckpointer(model)
    checkpointer.load(str(out))
    inc = checkpointer.incompatible
    assert inc.unexpected_keys == [] and inc.incorrect_shapes == []
    assert set(inc.missing_keys) == {k for k in model.state_dict() if not k.startswith("backbone.bottom_up.")}
    assert torch.equal(model.backbone.bottom_up.res3[0].shortcut.weight, tv.layer2[0].downsample[0].weight)
    model.eval()
    tv.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone.bottom_up(x)["res5"], torchvision_c5(tv, x), atol=1e-4, rtol=1e-4)


def test_torchvision_converter_rejects_other_networks(small_original):
    with pytest.raises(ValueError, match="convert it with yolact-convert yolact"):
        convert_torchvision_resnet_state_dict(small_original)
    with pytest.raises(ValueError, match="not a standard ResNet-50"):
        convert_torchvision_resnet_state_dict(torchvision.models.resnext50_32x4d(weights=None).state_dict())
