"""Rename the weights of the original YOLACT and of torchvision ImageNet ResNets to this project's
parameter names (docs/MODEL.md §12.3).

Only ``torch`` is imported here, so the command-line tools can use this module without importing
Detectron2.

Original YOLACT -> yolact_d2:

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

YOLACT++ checkpoints get the ``yolact_plus_*`` configs; the DCN placement found in the weights is
checked against (or expressed as) ``MODEL.RESNETS.DEFORM_ON_PER_STAGE`` + ``MODEL.YOLACT.DEFORM_INTERVAL``.

torchvision ResNet -> yolact_d2: ``conv1``/``bn1`` -> ``backbone.bottom_up.stem.conv1``(``.norm``),
``layer{s}.{b}.`` -> ``backbone.bottom_up.res{s+1}.{b}.`` with the same conv/bn/downsample renames;
``fc.*`` is dropped.
"""
import os
import re
import tempfile
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ..utils.errors import UserError

__all__ = [
    "UnsupportedCheckpointError",
    "unwrap_state_dict",
    "inspect_yolact_state_dict",
    "convert_yolact_state_dict",
    "convert_torchvision_resnet_state_dict",
    "format_yolact_info",
    "count_parameters",
    "load_checkpoint_file",
    "save_converted_checkpoint",
]

CONFIG_DIR = "configs/COCO-InstanceSegmentation"

# (blocks per stage, bottleneck?) -> depth
_RESNET_DEPTHS = {
    ((2, 2, 2, 2), False): 18,
    ((3, 4, 6, 3), False): 34,
    ((3, 4, 6, 3), True): 50,
    ((3, 4, 23, 3), True): 101,
    ((3, 8, 36, 3), True): 152,
}
_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_BN_REQUIRED = ("weight", "bias", "running_mean", "running_var")
_BN_RUNNING = ("running_mean", "running_var", "num_batches_tracked")

# The anchor scales of the 550 model; other input sizes use int(s / 550 * size) (docs/MODEL.md §3.4).
_BASE_ANCHOR_SCALES = (24, 48, 96, 192, 384)
_RELEASED_SIZES = {400: "yolact_R_101_FPN_400.yaml", 550: "yolact_R_101_FPN_550.yaml", 700: "yolact_R_101_FPN_700.yaml"}

_YOLACT_HEAD = {
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
_OPTIONAL_MODULES = ("semantic_seg_conv",)
# YOLACT++ (docs/MODEL.md §2.6): DCN placement of the released configs (deform on per stage res2..res5, interval)
# and the mask re-scoring net's convs (docs/MODEL.md §2.7): original index -> (out, in, kernel); the last one
# has num_classes outputs.
_PLUS_DCN = {50: ([False, True, True, True], 1), 101: ([False, True, True, True], 3)}
_MASKIOU_CONVS = {0: (8, 1, 3), 2: (16, 8, 3), 4: (32, 16, 3), 6: (64, 32, 3), 8: (128, 64, 3), 10: (None, 128, 1)}
_DCN_OFFSET_CHANNELS = 27  # 3 x 3x3 taps (dy, dx, mask), one deformable group
_NUM_FPN_DOWNSAMPLE = 2  # P6, P7; the released checkpoints carry a third, unused one


class UnsupportedCheckpointError(ValueError):
    """A recognised checkpoint of a variant this project cannot load (DarkNet-53, or YOLACT++ with
    a DCN placement that the config keys cannot express)."""

    def __init__(self, message: str, info: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.info = info or {}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _short_list(keys, limit: int = 6) -> str:
    keys = sorted(keys)
    text = ", ".join(repr(k) for k in keys[:limit])
    if len(keys) > limit:
        text += f", ... ({len(keys)} in total)"
    return text


def unwrap_state_dict(obj: Any) -> Dict[str, torch.Tensor]:
    """Return the flat ``{name: tensor}`` dict inside ``obj``.

    Accepts a plain state dict or one wrapped as ``{"model": ...}`` / ``{"state_dict": ...}``
    (also nested), and strips a ``module.`` prefix (DataParallel) if every key has it.

    Raises:
        ValueError: if ``obj`` is not a dict, is empty, or holds non-tensor values.
    """
    for _ in range(3):
        if isinstance(obj, Mapping):
            for wrapper in ("model", "state_dict"):
                if isinstance(obj.get(wrapper), Mapping):
                    obj = obj[wrapper]
                    break
            else:
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict (a dict of tensors), got a {type(obj).__name__}")
    if len(obj) == 0:
        raise ValueError("the state dict is empty")
    non_str = [k for k in obj if not isinstance(k, str)]
    if non_str:
        raise ValueError(f"state dict keys must be strings, got {non_str[:3]!r}")
    bad = {k: type(v).__name__ for k, v in obj.items() if not isinstance(v, torch.Tensor)}
    if bad:
        shown = ", ".join(f"{k!r} ({t})" for k, t in sorted(bad.items())[:4])
        more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
        raise ValueError(f"not a state dict of tensors: non-tensor values for {shown}{more}")
    state_dict = dict(obj)
    if all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def count_parameters(state_dict: Mapping) -> int:
    """Number of learnable values: everything except BN running statistics."""
    return sum(
        v.numel() for k, v in state_dict.items() if k.rsplit(".", 1)[-1] not in _BN_RUNNING
    )


# --------------------------------------------------------------------------------------------
# ResNet part (shared by both converters)
# --------------------------------------------------------------------------------------------
def _rename_resnet_layer(stage: int, block: str, module: str, suffix: str) -> Optional[str]:
    """``stage`` is 0-based (res2 = 0). ``module`` is ``conv{k}``, ``bn{k}`` or
    ``downsample.{0,1}``, or for YOLACT++'s DCN ``conv2`` also ``conv2.conv_offset_mask`` and a
    ``bias``. Returns the Detectron2 name or None if the suffix is not valid."""
    prefix = f"backbone.bottom_up.res{stage + 2}.{block}."
    if module.startswith("conv"):
        # a conv bias exists only in DCN blocks; _resnet_structure checks where it may appear
        return prefix + f"{module}.{suffix}" if suffix in ("weight", "bias") else None
    if module.startswith("bn"):
        return prefix + f"conv{module[2:]}.norm.{suffix}" if suffix in _BN_SUFFIXES else None
    if module == "downsample.0":
        return prefix + "shortcut.weight" if suffix == "weight" else None
    if module == "downsample.1":
        return prefix + f"shortcut.norm.{suffix}" if suffix in _BN_SUFFIXES else None
    return None


def _rename_resnet_stem(module: str, suffix: str) -> Optional[str]:
    if module == "conv1":
        return "backbone.bottom_up.stem.conv1.weight" if suffix == "weight" else None
    if module == "bn1":
        return f"backbone.bottom_up.stem.conv1.norm.{suffix}" if suffix in _BN_SUFFIXES else None
    return None


def _resnet_structure(
    renamed: Mapping[str, torch.Tensor], source_name: str, allow_dcn: bool = False
) -> Tuple[int, Tuple[int, ...], bool]:
    """Detect the depth from already renamed backbone keys and check that nothing is missing
    and that the channel widths are those of a standard ResNet. With ``allow_dcn``, bottlenecks
    whose ``conv2`` has a ``conv_offset_mask`` are YOLACT++ DCN blocks (plus a ``conv2.bias``)."""
    blocks: Dict[int, set] = {}
    for key in renamed:
        m = re.match(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m.group(1)) - 2, set()).add(int(m.group(2)))
    if sorted(blocks) != [0, 1, 2, 3]:
        raise ValueError(f"{source_name}: expected 4 ResNet stages, found stages {sorted(blocks)}")
    counts = []
    for stage in range(4):
        if blocks[stage] != set(range(len(blocks[stage]))):
            raise ValueError(
                f"{source_name}: the blocks of stage {stage} are not numbered 0..n-1: {sorted(blocks[stage])}"
            )
        counts.append(len(blocks[stage]))
    counts = tuple(counts)
    bottleneck = "backbone.bottom_up.res2.0.conv3.weight" in renamed
    depth = _RESNET_DEPTHS.get((counts, bottleneck))
    if depth is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise ValueError(
            f"{source_name}: unsupported ResNet with {list(counts)} {kind} blocks per stage "
            f"(supported: R-18/34/50/101/152)"
        )

    # Everything a Detectron2 ResNet of this depth needs (num_batches_tracked is optional), with
    # the widths of a standard ResNet whose stem has `width` channels (64 for the real ones).
    stem = renamed.get("backbone.bottom_up.stem.conv1.weight")
    width = stem.shape[0] if stem is not None and stem.dim() == 4 else 64
    expected: Dict[str, Tuple[int, ...]] = {"backbone.bottom_up.stem.conv1.weight": (width, 3, 7, 7)}
    expected.update({f"backbone.bottom_up.stem.conv1.norm.{s}": (width,) for s in _BN_REQUIRED})
    in_ch = width
    for stage, n in enumerate(counts):
        planes = width * 2**stage
        out_ch = planes * 4 if bottleneck else planes
        for b in range(n):
            block_in = in_ch if b == 0 else out_ch
            prefix = f"backbone.bottom_up.res{stage + 2}.{b}."
            if bottleneck:
                convs = {1: (planes, block_in, 1, 1), 2: (planes, planes, 3, 3), 3: (out_ch, planes, 1, 1)}
            else:
                convs = {1: (planes, block_in, 3, 3), 2: (planes, planes, 3, 3)}
            if b == 0 and block_in != out_ch:
                convs["shortcut"] = (out_ch, block_in, 1, 1)
            for k, shape in convs.items():
                name = prefix + ("shortcut" if k == "shortcut" else f"conv{k}")
                expected[name + ".weight"] = shape
                expected.update({f"{name}.norm.{s}": (shape[0],) for s in _BN_REQUIRED})
            if allow_dcn and bottleneck and prefix + "conv2.conv_offset_mask.weight" in renamed:
                expected[prefix + "conv2.bias"] = (planes,)
                expected[prefix + "conv2.conv_offset_mask.weight"] = (_DCN_OFFSET_CHANNELS, planes, 3, 3)
                expected[prefix + "conv2.conv_offset_mask.bias"] = (_DCN_OFFSET_CHANNELS,)
        in_ch = out_ch

    missing = [k for k in expected if k not in renamed]
    if missing:
        raise ValueError(f"{source_name}: incomplete ResNet-{depth}: missing {_short_list(missing)}")
    extra = [
        k for k in renamed
        if k.startswith("backbone.bottom_up.") and k not in expected and not k.endswith(".num_batches_tracked")
    ]
    if extra:
        raise ValueError(f"{source_name}: unexpected ResNet-{depth} keys {_short_list(extra)}")
    wrong = [
        f"{k} {tuple(renamed[k].shape)} (expected {shape})"
        for k, shape in expected.items()
        if tuple(renamed[k].shape) != shape
    ]
    if wrong:
        raise ValueError(
            f"{source_name}: not a standard ResNet-{depth} (grouped or widened convs, e.g. ResNeXt / "
            f"Wide ResNet, are not supported): {'; '.join(wrong[:3])}"
        )
    return depth, counts, bottleneck


def _drop_num_batches_tracked(state_dict: Dict[str, torch.Tensor]) -> int:
    keys = [k for k in state_dict if k.endswith(".num_batches_tracked")]
    for k in keys:
        del state_dict[k]
    return len(keys)


# --------------------------------------------------------------------------------------------
# torchvision
# --------------------------------------------------------------------------------------------
def _convert_torchvision(state_dict, drop_num_batches_tracked=False):
    sd = unwrap_state_dict(state_dict)
    if "conv1.weight" not in sd or not any(k.startswith("layer1.") for k in sd):
        hint = ""
        if any(k.startswith("fpn.lat_layers.") for k in sd):
            hint = "; it looks like an original YOLACT checkpoint: use tools/convert_yolact_weights.py"
        elif any(k.startswith("backbone.bottom_up.") for k in sd):
            hint = "; it already uses Detectron2 names: load it directly with MODEL.WEIGHTS"
        raise ValueError(
            "not a torchvision ImageNet ResNet state dict: no 'conv1.weight' / 'layer1.*' keys found" + hint
        )
    new_sd: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    unknown: List[str] = []
    for key, value in sd.items():
        if key.startswith("fc."):
            dropped.append(key)
            continue
        new_key = None
        m = re.fullmatch(r"layer([1-4])\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)", key)
        if m:
            new_key = _rename_resnet_layer(int(m.group(1)) - 1, m.group(2), m.group(3), m.group(4))
        else:
            m = re.fullmatch(r"(conv1|bn1)\.(\w+)", key)
            if m:
                new_key = _rename_resnet_stem(m.group(1), m.group(2))
        if new_key is None:
            unknown.append(key)
        else:
            new_sd[new_key] = value
    if unknown:
        raise ValueError(f"not a torchvision ImageNet ResNet state dict: unrecognised keys {_short_list(unknown)}")
    depth, _, _ = _resnet_structure(new_sd, "torchvision ResNet")
    if drop_num_batches_tracked:
        _drop_num_batches_tracked(new_sd)
    return new_sd, depth, dropped


def convert_torchvision_resnet_state_dict(
    state_dict: Mapping, drop_num_batches_tracked: bool = False
) -> Tuple[Dict[str, torch.Tensor], int]:
    """Rename a torchvision ImageNet ResNet-18/34/50/101/152 state dict (e.g.
    ``resnet50-19c8e357.pth``) to ``backbone.bottom_up.*`` keys of a Detectron2 ResNet.

    The classifier ``fc.*`` is dropped. The tensors are not copied. Use the result with
    ``MODEL.RESNETS.DEPTH = depth`` and ``MODEL.RESNETS.STRIDE_IN_1X1 = False`` (torchvision puts
    the stride in the 3x3 conv; all yolact_d2 configs already do this); R-18/34 also need
    ``MODEL.RESNETS.RES2_OUT_CHANNELS = 64``.

    Args:
        state_dict: the torchvision state dict (optionally wrapped in ``{"model": ...}`` or
            ``{"state_dict": ...}``).
        drop_num_batches_tracked: omit the BN ``num_batches_tracked`` counters (not used by
            ``FrozenBatchNorm2d``, which would report them as unexpected keys).

    Returns:
        ``(new_state_dict, depth)``.

    Raises:
        ValueError: if the dict is not a standard torchvision ResNet.
    """
    new_sd, depth, _ = _convert_torchvision(state_dict, drop_num_batches_tracked)
    return new_sd, depth


# --------------------------------------------------------------------------------------------
# original YOLACT
# --------------------------------------------------------------------------------------------
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
            hint = "; it looks like a torchvision ImageNet ResNet: use tools/convert_torchvision_backbone.py"
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

    # Backbone.
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
            blocks = next(c for (c, bottleneck), d in _RESNET_DEPTHS.items() if d == depth and bottleneck)
            placement = _dcn_placement(pairs, blocks)
            if placement is None:
                raise UnsupportedCheckpointError(
                    f"the DCN blocks of this YOLACT++ checkpoint ({_short_list(dcn_blocks)}) are not "
                    "'every n-th block of whole stages' (MODEL.RESNETS.DEFORM_ON_PER_STAGE + "
                    "MODEL.YOLACT.DEFORM_INTERVAL)",
                    info,
                )
            info["deform_on_per_stage"], info["deform_interval"] = placement

    # Head and protonet.
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
    if info["variant"] == "YOLACT" and num_anchors != 3:
        info["notes"].append(
            f"{num_anchors} anchors per location (the YOLACT configs have 3): set "
            "MODEL.YOLACT.ANCHOR_SCALES / ANCHOR_ASPECT_RATIOS to match the original config"
        )
    return info


def convert_yolact_state_dict(
    state_dict: Mapping,
    filename: Optional[str] = None,
    drop_num_batches_tracked: bool = False,
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Convert an original YOLACT (dbolya/yolact) state dict to yolact_d2 parameter names.

    The tensors are renamed, not copied or modified: the FPN lists are reversed (the original
    stores C5 first), the shared ``prediction_layers.0`` head keeps its channel layout
    (``a*(K+1)+c`` with c = 0 background), and the unused ``fpn.downsample_layers.2`` and legacy
    ``backbone.layer*`` keys are dropped (as the original ``Yolact.load_weights`` does).

    Args:
        state_dict: the checkpoint (a plain state dict, or wrapped as ``{"model": ...}`` /
            ``{"state_dict": ...}``).
        filename: the checkpoint's file name, only used to guess the input size (``im400`` /
            ``im700`` in the released names) -- the weights do not depend on it.
        drop_num_batches_tracked: omit the BN ``num_batches_tracked`` counters. With the default
            ``MODEL.RESNETS.NORM: "BN"`` (or "SyncBN") keep them (a strict load then succeeds);
            ``FrozenBN`` has no such buffer and reports them as unexpected keys.

    Returns:
        ``(new_state_dict, info)``; ``info`` has ``variant`` ("YOLACT" / "YOLACT++"),
        ``backbone`` ("R-50" / "R-101"), ``depth``, ``num_classes`` (foreground),
        ``num_anchors``, ``num_prototypes``, ``fpn_channels``, ``input_size`` (None when it
        cannot be told from the file name) and ``input_size_source``, ``config_file`` and
        ``config_overrides`` (a config that matches the weights), ``dropped_keys`` and ``notes``.

    Raises:
        UnsupportedCheckpointError: for DarkNet-53 checkpoints, or YOLACT++ ones whose DCN
            placement the config keys cannot express (a ``ValueError``, with the detected
            ``info`` attached).
        ValueError: if it is not an original YOLACT checkpoint, or has keys this converter does
            not know.
    """
    sd = unwrap_state_dict(state_dict)
    info = inspect_yolact_state_dict(sd, filename)
    if info["depth"] is None:
        raise UnsupportedCheckpointError(
            "YOLACT checkpoints with a DarkNet-53 backbone are not supported (yolact_d2 has ResNet backbones only)",
            info,
        )

    new_sd: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    unknown: List[str] = []
    num_lat = len({k.split(".")[2] for k in sd if k.startswith("fpn.lat_layers.")})
    for key, value in sd.items():
        new_key = None
        if key.startswith("backbone."):
            rest = key[len("backbone."):]
            m = re.fullmatch(
                r"layers\.(\d+)\.(\d+)\.(conv\d(?:\.conv_offset_mask)?|bn\d|downsample\.[01])\.(\w+)", rest
            )
            if m:
                new_key = _rename_resnet_layer(int(m.group(1)), m.group(2), m.group(3), m.group(4))
            elif rest.startswith("layer") and not rest.startswith("layers."):
                dropped.append(key)  # legacy names, deleted by the original loader as well
                continue
            else:
                m = re.fullmatch(r"(conv1|bn1)\.(\w+)", rest)
                if m:
                    new_key = _rename_resnet_stem(m.group(1), m.group(2))
        elif key.startswith("fpn."):
            m = re.fullmatch(r"fpn\.(lat_layers|pred_layers|downsample_layers)\.(\d+)\.(weight|bias)", key)
            if m:
                kind, i, suffix = m.group(1), int(m.group(2)), m.group(3)
                if kind == "downsample_layers":
                    if i >= _NUM_FPN_DOWNSAMPLE:
                        dropped.append(key)  # unused extra layer of the released checkpoints (docs/MODEL.md §12.3)
                        continue
                    new_key = f"backbone.downsample_convs.{i}.{suffix}"
                elif i < num_lat:
                    ours = "lateral_convs" if kind == "lat_layers" else "output_convs"
                    new_key = f"backbone.{ours}.{num_lat - 1 - i}.{suffix}"
        elif key.startswith("maskiou_net."):
            m = re.fullmatch(r"maskiou_net\.maskiou_net\.(\d+)\.(weight|bias)", key)
            if m and int(m.group(1)) in _MASKIOU_CONVS:
                new_key = f"maskiou_net.layers.{m.group(1)}.{m.group(2)}"
        else:
            module, _, suffix = key.rpartition(".")
            if module in _YOLACT_HEAD and suffix in ("weight", "bias"):
                new_key = f"{_YOLACT_HEAD[module]}.{suffix}"
        if new_key is None:
            unknown.append(key)
        else:
            new_sd[new_key] = value

    if unknown:
        if any(re.match(r"prediction_layers\.[1-9]", k) for k in unknown):
            raise ValueError(
                "unsupported YOLACT checkpoint: it has weights for prediction_layers other than 0 "
                "(an unshared prediction head; yolact_d2 shares one head across the FPN levels)"
            )
        raise ValueError(f"unsupported YOLACT checkpoint: unrecognised keys {_short_list(unknown)}")

    # Completeness of the non-backbone part (the ResNet part is checked by _resnet_structure).
    expected = [f"backbone.{m}.{i}" for m in ("lateral_convs", "output_convs") for i in range(num_lat)]
    expected += [f"backbone.downsample_convs.{i}" for i in range(_NUM_FPN_DOWNSAMPLE)]
    expected += [v for k, v in _YOLACT_HEAD.items() if k not in _OPTIONAL_MODULES]
    if info["has_maskiou_net"]:
        expected += [f"maskiou_net.layers.{i}" for i in _MASKIOU_CONVS]
    missing = [f"{m}.{s}" for m in expected for s in ("weight", "bias") if f"{m}.{s}" not in new_sd]
    if missing:
        raise ValueError(f"not a complete YOLACT checkpoint: no source for {_short_list(missing)}")
    if info["has_maskiou_net"]:
        for i, (out_ch, in_ch, k) in _MASKIOU_CONVS.items():
            shape = (info["num_classes"] if out_ch is None else out_ch, in_ch, k, k)
            got = tuple(new_sd[f"maskiou_net.layers.{i}.weight"].shape)
            if got != shape or tuple(new_sd[f"maskiou_net.layers.{i}.bias"].shape) != shape[:1]:
                raise ValueError(
                    f"unsupported YOLACT++ checkpoint: maskiou_net.maskiou_net.{i}.weight has shape {got}, "
                    f"expected {shape} (the FastMaskIoUNet of yolact_plus_base / yolact_plus_resnet50)"
                )
    depth, _, bottleneck = _resnet_structure(new_sd, "YOLACT backbone", allow_dcn=True)
    if not bottleneck or depth != info["depth"]:
        raise ValueError(f"unexpected YOLACT backbone: ResNet-{depth}")
    stage_channels = [new_sd[f"backbone.bottom_up.res{s}.0.conv3.weight"].shape[0] for s in (3, 4, 5)]
    lateral_in = [new_sd[f"backbone.lateral_convs.{i}.weight"].shape[1] for i in range(num_lat)]
    if lateral_in != stage_channels[-num_lat:]:
        raise ValueError(
            f"inconsistent YOLACT checkpoint: FPN laterals take {lateral_in[::-1]} channels "
            f"(fpn.lat_layers.0..{num_lat - 1}) but C5..C3 have {stage_channels[::-1][:num_lat]}"
        )

    if dropped:
        info["notes"].append(
            f"dropped {len(dropped)} keys the model does not use (the original loader drops them too): "
            + ", ".join(dropped)
        )
    if drop_num_batches_tracked:
        n = _drop_num_batches_tracked(new_sd)
        info["notes"].append(f"dropped {n} BN num_batches_tracked counters")
    if not info["has_semantic_seg"]:
        info["notes"].append(
            "no semantic_seg_conv (the training-only semantic segmentation head): use "
            "MODEL.YOLACT.SEM_SEG_ON False or let it be trained from scratch"
        )
    info["dropped_keys"] = dropped
    return new_sd, info


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


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------
def cli_path_problem(input_path: str, output_path: str) -> Optional[str]:
    """What is wrong with a converter tool's input/output paths (one line), or None."""
    if not os.path.isfile(input_path):
        return "no such file"
    out_dir = os.path.dirname(os.path.abspath(output_path))
    if not os.path.isdir(out_dir):
        return f"output directory {out_dir} does not exist"
    return None


def load_checkpoint_file(path: str, unsafe: bool = False) -> Any:
    """Read a checkpoint on CPU with :func:`~yolact_d2.checkpoint.safe_load.load_checkpoint`:
    tensors and plain data only (original YOLACT and torchvision checkpoints are plain dicts of
    tensors); ``unsafe`` (``--unsafe-load``) uses the unrestricted loader, which can run code.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        UnsafeCheckpointError: if the file holds other objects and ``unsafe`` is False.
        ValueError: if the file cannot be read as a PyTorch checkpoint.
    """
    from .safe_load import load_checkpoint

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return load_checkpoint(path, trusted=unsafe, opt_in="pass --unsafe-load to load this file unrestricted")
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001  (torch raises several types here)
        raise ValueError(f"not a readable PyTorch checkpoint file (torch.load: {_first_line(e)})") from e


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def save_converted_checkpoint(state_dict: Mapping[str, torch.Tensor], path: str, author: str) -> None:
    """Write ``{"model": state_dict, "__author__": author, "matching_heuristics": False}`` (the
    format ``DetectionCheckpointer`` loads with exact names), atomically: to a temporary file in
    the same directory, then ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pth", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(
                {"model": dict(state_dict), "__author__": author, "matching_heuristics": False}, f
            )
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
