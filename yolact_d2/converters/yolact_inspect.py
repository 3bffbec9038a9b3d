"""Which original YOLACT model a checkpoint holds (backbone, YOLACT or YOLACT++, DCN placement,
classes, anchors, input size) and the yolact_d2 config that matches it."""
import os
import re
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple

import torch

from .resnet_keys import RESNET_DEPTHS
from .state_dicts import short_list, unwrap_state_dict

CONFIG_DIR = "configs/COCO-InstanceSegmentation"

# The anchor scales of the 550 model; the original scales them to other input sizes as int(s / 550 * size),
# truncation included, and the overrides printed for such a size must give the same anchors.
_BASE_ANCHOR_SCALES = (24, 48, 96, 192, 384)
_RELEASED_SIZES = {400: "yolact_R_101_FPN_400.yaml", 550: "yolact_R_101_FPN_550.yaml", 700: "yolact_R_101_FPN_700.yaml"}
# YOLACT++: DCN placement of the released configs (deform on per stage res2..res5, interval); a checkpoint
# whose deformable blocks differ gets overrides, so that the model built has a place for every weight.
_PLUS_DCN = {50: ([False, True, True, True], 1), 101: ([False, True, True, True], 3)}


class UnsupportedCheckpointError(ValueError):
    """A recognised checkpoint of a variant this project cannot load (DarkNet-53, or YOLACT++ with
    a DCN placement that the config keys cannot express)."""

    def __init__(self, message: str, info: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.info = info or {}


def _input_size_from_filename(filename: Optional[str]) -> Optional[int]:
    if not filename:
        return None
    name = os.path.basename(filename).lower()
    m = re.search(r"(?:^|[_\-.])im(\d{3,4})(?=[_\-.]|$)", name)
    if m:
        return int(m.group(1))
    if re.match(r"yolact_(plus_)?(base|resnet50|darknet53)_\d+_\d+", name):
        return 550  # the released 550 models: yolact_base / yolact_resnet50 / yolact_darknet53 / ++
    return None


def _dcn_placement(dcn_blocks, blocks_per_stage) -> Optional[Tuple[List[bool], int]]:
    """``(deform_on_per_stage, interval)`` that reproduces the set of DCN ``(stage, block)`` pairs
    (stage 0 = res2) with the rule "block i of a deform stage iff i % interval == 0", or None."""
    on = [any(s == stage for s, _ in dcn_blocks) for stage in range(len(blocks_per_stage))]
    for interval in range(1, max(blocks_per_stage) + 1):
        placed = {(s, i) for s, n in enumerate(blocks_per_stage) if on[s] for i in range(0, n, interval)}
        if placed == set(dcn_blocks):
            return on, interval
    return None


def _suggest_config(info: Dict[str, Any]) -> None:
    """Fill ``config_file`` and ``config_overrides`` of ``info``."""
    if info["variant"] == "YOLACT++":
        _suggest_plus_config(info)
        return
    depth = info["depth"]
    size = info["input_size"] or 550
    overrides: List[Any] = []
    if depth == 101 and size in _RELEASED_SIZES:
        config = _RELEASED_SIZES[size]
    else:
        config = "yolact_R_50_FPN_550.yaml" if depth == 50 else "yolact_R_101_FPN_550.yaml"
        if depth not in (50, 101):
            overrides += ["MODEL.RESNETS.DEPTH", depth]
        if size != 550:
            scales = [[int(s / 550 * size)] for s in _BASE_ANCHOR_SCALES]
            overrides += ["INPUT.IMAGE_SIZE", size, "MODEL.YOLACT.ANCHOR_SCALES", str(scales)]
    _common_overrides(info, overrides)
    info["config_file"] = f"{CONFIG_DIR}/{config}"
    info["config_overrides"] = overrides


def _common_overrides(info: Dict[str, Any], overrides: List[Any]) -> None:
    if info["num_classes"] != 80:
        overrides += ["MODEL.YOLACT.NUM_CLASSES", info["num_classes"]]
    if info["num_prototypes"] != 32:
        overrides += ["MODEL.YOLACT.NUM_PROTOTYPES", info["num_prototypes"]]
    if info["fpn_channels"] != 256:
        overrides += ["MODEL.FPN.OUT_CHANNELS", info["fpn_channels"]]
    if not info["has_semantic_seg"]:
        overrides += ["MODEL.YOLACT.SEM_SEG_ON", False]


def _suggest_plus_config(info: Dict[str, Any]) -> None:
    """YOLACT++: the yolact_plus config of the depth, with overrides where the weights differ."""
    depth = info["depth"]
    size = info["input_size"] or 550
    base = 50 if depth == 50 else 101
    config = f"yolact_plus_R_{base}_FPN_550.yaml"
    overrides: List[Any] = []
    if depth != base:
        overrides += ["MODEL.RESNETS.DEPTH", depth]
    if size != 550:
        overrides += ["INPUT.IMAGE_SIZE", size]
        info["notes"].append(
            f"input size {size}: set MODEL.YOLACT.ANCHOR_SCALES to the anchor scales of the original "
            "config (the YOLACT++ configs are for 550)"
        )
    deform_on, interval = info["deform_on_per_stage"], info["deform_interval"]
    config_on, config_interval = _PLUS_DCN[base]
    if deform_on != config_on:
        overrides += ["MODEL.RESNETS.DEFORM_ON_PER_STAGE", str(deform_on)]
    if any(deform_on) and interval != config_interval:
        overrides += ["MODEL.YOLACT.DEFORM_INTERVAL", interval]
    if not info["has_maskiou_net"]:
        overrides += ["MODEL.YOLACT.MASK_IOU_ON", False]
    _common_overrides(info, overrides)
    if info["num_anchors"] != 9:
        info["notes"].append(
            f"{info['num_anchors']} anchors per location (the YOLACT++ configs have 9): set "
            "MODEL.YOLACT.ANCHOR_SCALES / ANCHOR_ASPECT_RATIOS / SQUARE_ANCHORS to match the original config"
        )
    info["config_file"] = f"{CONFIG_DIR}/{config}"
    info["config_overrides"] = overrides


def _require(sd: Mapping, key: str) -> torch.Tensor:
    if key not in sd:
        raise ValueError(f"not a complete YOLACT checkpoint: missing {key!r}")
    return sd[key]


def _inspect_backbone(sd: Mapping, info: Dict[str, Any], dcn_blocks: List[str]) -> None:
    """Fill ``backbone``, ``depth`` and the DCN placement of ``info``."""
    if any(k.startswith("backbone._preconv.") for k in sd):
        info["backbone"], info["depth"] = "DarkNet-53", None
    else:
        stage2 = {int(m.group(1)) for m in (re.match(r"backbone\.layers\.2\.(\d+)\.", k) for k in sd) if m}
        depth = {6: 50, 23: 101, 36: 152}.get(len(stage2))
        if depth is None:
            raise ValueError(
                f"not a supported YOLACT checkpoint: {len(stage2)} blocks in 'backbone.layers.2' "
                "(expected 6 for ResNet-50 or 23 for ResNet-101)"
            )
        info["backbone"], info["depth"] = f"R-{depth}", depth
        info["deform_on_per_stage"], info["deform_interval"] = [False] * 4, 1
        if dcn_blocks:
            pairs = set()
            for name in dcn_blocks:
                m = re.fullmatch(r"backbone\.layers\.(\d+)\.(\d+)", name)
                if m is None:
                    raise ValueError(f"unexpected deformable conv at {name!r}")
                pairs.add((int(m.group(1)), int(m.group(2))))
            blocks = next(c for (c, bottleneck), d in RESNET_DEPTHS.items() if d == depth and bottleneck)
            placement = _dcn_placement(pairs, blocks)
            if placement is None:
                raise UnsupportedCheckpointError(
                    f"the DCN blocks of this YOLACT++ checkpoint ({short_list(dcn_blocks)}) are not "
                    "'every n-th block of whole stages' (MODEL.RESNETS.DEFORM_ON_PER_STAGE + "
                    "MODEL.YOLACT.DEFORM_INTERVAL)",
                    info,
                )
            info["deform_on_per_stage"], info["deform_interval"] = placement


def _inspect_head(sd: Mapping, info: Dict[str, Any]) -> None:
    """Fill the anchors, classes, prototypes and FPN width of ``info`` from the head and protonet."""
    bbox = _require(sd, "prediction_layers.0.bbox_layer.weight")
    conf = _require(sd, "prediction_layers.0.conf_layer.weight")
    coeff = _require(sd, "prediction_layers.0.mask_layer.weight")
    if bbox.dim() != 4 or bbox.shape[0] == 0 or bbox.shape[0] % 4:
        raise ValueError(f"unexpected shape {tuple(bbox.shape)} of 'prediction_layers.0.bbox_layer.weight'")
    num_anchors = bbox.shape[0] // 4
    if conf.shape[0] % num_anchors or coeff.shape[0] % num_anchors:
        raise ValueError(
            f"conf_layer ({conf.shape[0]}) / mask_layer ({coeff.shape[0]}) channels are not a multiple "
            f"of the {num_anchors} anchors per location given by bbox_layer"
        )
    info["num_anchors"] = num_anchors
    info["num_classes"] = conf.shape[0] // num_anchors - 1  # foreground classes (conf has + background)
    info["num_prototypes"] = coeff.shape[0] // num_anchors
    info["fpn_channels"] = bbox.shape[1]
    proto_out = sd.get("proto_net.10.weight")
    if proto_out is not None and proto_out.shape[0] != info["num_prototypes"]:
        raise ValueError(
            f"inconsistent checkpoint: proto_net.10 makes {proto_out.shape[0]} prototypes but "
            f"mask_layer predicts {info['num_prototypes']} coefficients per anchor"
        )
    sem = sd.get("semantic_seg_conv.weight")
    info["has_semantic_seg"] = sem is not None
    if sem is not None and sem.shape[0] != info["num_classes"]:
        raise ValueError(
            f"inconsistent checkpoint: semantic_seg_conv has {sem.shape[0]} classes, conf_layer "
            f"{info['num_classes']} (+ background)"
        )


def inspect_yolact_state_dict(state_dict: Mapping, filename: Optional[str] = None) -> Dict[str, Any]:
    """Detect which original YOLACT model a state dict belongs to, without converting it.

    Works for DarkNet-53 checkpoints too (which :func:`convert_yolact_state_dict` refuses). See
    :func:`convert_yolact_state_dict` for the returned fields; for YOLACT++ also
    ``deform_on_per_stage`` / ``deform_interval`` (the DCN placement as config values).

    Raises:
        ValueError: if it is not an original YOLACT checkpoint.
    """
    sd = unwrap_state_dict(state_dict)
    if not any(k.startswith("fpn.lat_layers.") for k in sd) or not any(
        k.startswith("prediction_layers.0.") for k in sd
    ):
        hint = ""
        if "conv1.weight" in sd and any(k.startswith("layer1.") for k in sd):
            hint = "; it looks like a torchvision ImageNet ResNet: convert it with yolact-convert backbone"
        elif any(k.startswith("backbone.bottom_up.") for k in sd):
            hint = "; it already uses Detectron2/yolact_d2 names: load it directly with MODEL.WEIGHTS"
        raise ValueError(
            "not an original YOLACT checkpoint: no 'fpn.lat_layers.*' / 'prediction_layers.0.*' keys found" + hint
        )

    info: Dict[str, Any] = {"notes": []}
    dcn_blocks = sorted({k.split(".conv2.")[0] for k in sd if ".conv_offset_mask." in k})
    has_maskiou = any(k.startswith("maskiou_net.") for k in sd)
    info["variant"] = "YOLACT++" if (dcn_blocks or has_maskiou) else "YOLACT"
    info["dcn_blocks"] = len(dcn_blocks)
    info["has_maskiou_net"] = has_maskiou

    _inspect_backbone(sd, info, dcn_blocks)
    _inspect_head(sd, info)

    info["input_size"] = _input_size_from_filename(filename)
    if info["input_size"] is None:
        info["input_size_source"] = "assumed"
        info["notes"].append(
            "the input size cannot be detected from the weights (the 400/550/700 models have "
            "identical shapes); assumed 550: use the _400/_700 config for a checkpoint trained at "
            "that size (e.g. yolact_im700_54_800000.pth)"
        )
    else:
        info["input_size_source"] = "file name"
    if info["depth"] is not None:
        _suggest_config(info)
    else:
        info["config_file"], info["config_overrides"] = None, []
    maskiou_out = sd.get("maskiou_net.maskiou_net.10.weight")
    if maskiou_out is not None and maskiou_out.shape[0] != info["num_classes"]:
        raise ValueError(
            f"inconsistent checkpoint: maskiou_net predicts {maskiou_out.shape[0]} classes, conf_layer "
            f"{info['num_classes']} (+ background)"
        )
    if info["variant"] == "YOLACT" and info["num_anchors"] != 3:
        info["notes"].append(
            f"{info['num_anchors']} anchors per location (the YOLACT configs have 3): set "
            "MODEL.YOLACT.ANCHOR_SCALES / ANCHOR_ASPECT_RATIOS to match the original config"
        )
    return info


def format_yolact_info(info: Mapping[str, Any], short: bool = False) -> str:
    """A human-readable description of what :func:`inspect_yolact_state_dict` detected."""
    parts = [info["variant"], info["backbone"]]
    if info["variant"] == "YOLACT++":
        extras = []
        if info.get("dcn_blocks"):
            extras.append(f"{info['dcn_blocks']} DCN blocks")
        if info.get("has_maskiou_net"):
            extras.append("maskiou_net")
        parts.append(f"({', '.join(extras)})")
    text = (
        " ".join(parts)
        + f", {info['num_classes']} classes (+ background), {info['num_anchors']} anchors per location,"
        + f" {info['num_prototypes']} prototypes"
    )
    if short:
        return text
    size = info["input_size"]
    lines = [f"Detected: {text}"]
    if size is None:
        lines.append("Input size: cannot be detected from the weights (400/550/700 have the same shapes); assuming 550")
    else:
        lines.append(f"Input size: {size} (from the file name)")
    if info.get("config_file"):
        config = info["config_file"]
        if info.get("config_overrides"):
            config += " " + " ".join(str(o) for o in info["config_overrides"])
        lines.append(f"Matching config: {config}")
    return "\n".join(lines)
