"""The key-mapping table from the original YOLACT's parameter names to this project's, as data: one
rule per original name pattern, tried in order (docs/MODEL.md lists the surprises of those names).

==========================================  ===========================================
``backbone.conv1`` / ``backbone.bn1``       ``backbone.bottom_up.stem.conv1`` / ``.norm``
``backbone.layers.{s}.{b}.conv{k}``         ``backbone.bottom_up.res{s+2}.{b}.conv{k}``
``backbone.layers.{s}.{b}.bn{k}``           ``backbone.bottom_up.res{s+2}.{b}.conv{k}.norm``
``backbone.layers.{s}.0.downsample.0/1``    ``backbone.bottom_up.res{s+2}.0.shortcut`` / ``.norm``
``fpn.lat_layers.{0,1,2}`` (C5, C4, C3)     ``backbone.lateral_convs.{2,1,0}`` (C3 first)
``fpn.pred_layers.{0,1,2}`` (P5, P4, P3)    ``backbone.output_convs.{2,1,0}`` (P3 first)
``fpn.downsample_layers.{0,1}``             ``backbone.downsample_convs.{0,1}``
``fpn.downsample_layers.{2,...}``           dropped (unused; the original loader drops it too)
``prediction_layers.0.upfeature.0``         ``head.conv``
``prediction_layers.0.bbox_layer``          ``head.bbox_pred``
``prediction_layers.0.conf_layer``          ``head.cls_score`` (same a*(K+1)+c layout, c=0 bg)
``prediction_layers.0.mask_layer``          ``head.coeff_pred``
``proto_net.{0,2,4}`` / ``.8`` / ``.10``    ``protonet.convs_before_upsample.{0,1,2}`` /
                                            ``protonet.convs_after_upsample.0`` / ``protonet.predictor``
``semantic_seg_conv``                       ``sem_seg_head.predictor``
``backbone.layer*`` (not ``layers``)        dropped (legacy keys; the original loader drops them)
YOLACT++ only:
``backbone.layers.{s}.{b}.conv2.bias``      ``backbone.bottom_up.res{s+2}.{b}.conv2.bias`` (DCN)
``...conv2.conv_offset_mask``               ``backbone.bottom_up.res{s+2}.{b}.conv2.conv_offset_mask``
``maskiou_net.maskiou_net.{0,2,...,10}``    ``maskiou_net.layers.{0,2,...,10}``
==========================================  ===========================================
"""
import re
from typing import Callable, Dict, List, Mapping, Pattern, Tuple, Union

import torch

from .resnet_keys import rename_resnet_layer, rename_resnet_stem
from .state_dicts import short_list

YOLACT_HEAD = {
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
OPTIONAL_MODULES = ("semantic_seg_conv",)
# The YOLACT++ mask re-scoring net's convs (five 3x3 stride-2 convs, then a 1x1 to the classes; the odd
# indices are its ReLUs): original index -> (out, in, kernel); the last one has num_classes outputs.
MASKIOU_CONVS = {0: (8, 1, 3), 2: (16, 8, 3), 4: (32, 16, 3), 6: (64, 32, 3), 8: (128, 64, 3), 10: (None, 128, 1)}
NUM_FPN_DOWNSAMPLE = 2  # P6, P7; the released checkpoints carry a third, unused one

DROP = object()  # a rule's result for keys the model does not use (the original loader drops them too)
RenameResult = Union[str, None, object]  # our key, None (not a valid key), or DROP


def _downsample(m: "re.Match", num_lat: int) -> RenameResult:
    i, suffix = int(m.group(1)), m.group(2)
    if i >= NUM_FPN_DOWNSAMPLE:
        return DROP  # the released checkpoints carry a third P-level conv that the network never runs
    return f"backbone.downsample_convs.{i}.{suffix}"


def _fpn_level(m: "re.Match", num_lat: int) -> RenameResult:
    # the original lists C5 first, Detectron2's FPN C3 first
    kind, i, suffix = m.group(1), int(m.group(2)), m.group(3)
    if i >= num_lat:
        return None
    ours = "lateral_convs" if kind == "lat_layers" else "output_convs"
    return f"backbone.{ours}.{num_lat - 1 - i}.{suffix}"


def _maskiou(m: "re.Match", num_lat: int) -> RenameResult:
    return f"maskiou_net.layers.{m.group(1)}.{m.group(2)}" if int(m.group(1)) in MASKIOU_CONVS else None


def _head_rule(ours: str) -> Callable[["re.Match", int], RenameResult]:
    return lambda m, num_lat: f"{ours}.{m.group(1)}"


# (pattern matched against the whole original key, rule(match, number of FPN laterals)); the first
# matching pattern decides, a key no pattern matches is unknown.
YOLACT_RULES: List[Tuple[Pattern, Callable[["re.Match", int], RenameResult]]] = [
    (
        re.compile(r"backbone\.layers\.(\d+)\.(\d+)\.(conv\d(?:\.conv_offset_mask)?|bn\d|downsample\.[01])\.(\w+)"),
        lambda m, num_lat: rename_resnet_layer(int(m.group(1)), m.group(2), m.group(3), m.group(4)),
    ),
    (re.compile(r"backbone\.layer(?!s\.).*", re.DOTALL), lambda m, num_lat: DROP),  # legacy names
    (re.compile(r"backbone\.(conv1|bn1)\.(\w+)"), lambda m, num_lat: rename_resnet_stem(m.group(1), m.group(2))),
    (re.compile(r"fpn\.downsample_layers\.(\d+)\.(weight|bias)"), _downsample),
    (re.compile(r"fpn\.(lat_layers|pred_layers)\.(\d+)\.(weight|bias)"), _fpn_level),
    (re.compile(r"maskiou_net\.maskiou_net\.(\d+)\.(weight|bias)"), _maskiou),
] + [(re.compile(re.escape(theirs) + r"\.(weight|bias)"), _head_rule(ours)) for theirs, ours in YOLACT_HEAD.items()]


def rename_yolact_key(key: str, num_lat: int) -> RenameResult:
    """Our name for an original key, :data:`DROP`, or None if the key is unknown."""
    for pattern, rule in YOLACT_RULES:
        m = pattern.fullmatch(key)
        if m:
            return rule(m, num_lat)
    return None


def check_yolact_keys(new_sd: Mapping[str, torch.Tensor], info: Dict, num_lat: int) -> None:
    """Completeness and shapes of the renamed non-backbone part (the ResNet part is checked by
    :func:`~yolact_d2.converters.resnet_keys.resnet_structure`)."""
    expected = [f"backbone.{m}.{i}" for m in ("lateral_convs", "output_convs") for i in range(num_lat)]
    expected += [f"backbone.downsample_convs.{i}" for i in range(NUM_FPN_DOWNSAMPLE)]
    expected += [v for k, v in YOLACT_HEAD.items() if k not in OPTIONAL_MODULES]
    if info["has_maskiou_net"]:
        expected += [f"maskiou_net.layers.{i}" for i in MASKIOU_CONVS]
    missing = [f"{m}.{s}" for m in expected for s in ("weight", "bias") if f"{m}.{s}" not in new_sd]
    if missing:
        raise ValueError(f"not a complete YOLACT checkpoint: no source for {short_list(missing)}")
    if info["has_maskiou_net"]:
        for i, (out_ch, in_ch, k) in MASKIOU_CONVS.items():
            shape = (info["num_classes"] if out_ch is None else out_ch, in_ch, k, k)
            got = tuple(new_sd[f"maskiou_net.layers.{i}.weight"].shape)
            if got != shape or tuple(new_sd[f"maskiou_net.layers.{i}.bias"].shape) != shape[:1]:
                raise ValueError(
                    f"unsupported YOLACT++ checkpoint: maskiou_net.maskiou_net.{i}.weight has shape {got}, "
                    f"expected {shape} (the FastMaskIoUNet of yolact_plus_base / yolact_plus_resnet50)"
                )


def check_fpn_inputs(new_sd: Mapping[str, torch.Tensor], num_lat: int) -> None:
    """The FPN laterals must take the channels of the stages they read."""
    stage_channels = [new_sd[f"backbone.bottom_up.res{s}.0.conv3.weight"].shape[0] for s in (3, 4, 5)]
    lateral_in = [new_sd[f"backbone.lateral_convs.{i}.weight"].shape[1] for i in range(num_lat)]
    if lateral_in != stage_channels[-num_lat:]:
        raise ValueError(
            f"inconsistent YOLACT checkpoint: FPN laterals take {lateral_in[::-1]} channels "
            f"(fpn.lat_layers.0..{num_lat - 1}) but C5..C3 have {stage_channels[::-1][:num_lat]}"
        )


__all__ = ["DROP", "YOLACT_RULES", "YOLACT_HEAD", "MASKIOU_CONVS", "rename_yolact_key", "check_yolact_keys"]
