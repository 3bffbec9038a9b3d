"""Convert the weights of the original YOLACT and of torchvision ImageNet ResNets to this project's
parameter names, so that Detectron2's checkpointer loads them by name: rename by the tables of
:mod:`.yolact_keys` and :mod:`.resnet_keys`, then check the result is complete. The tensors are renamed, never modified.

Only ``torch`` is imported here, so the command-line tools can use this module without importing
Detectron2. The names below are the public API of the converters (``yolact-convert``, ``yolact_d2/cli/convert_*.py``).
"""
import re
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple

import torch

from .resnet_keys import rename_torchvision_key, resnet_structure
from .state_dicts import count_parameters, short_list, unwrap_state_dict
from .state_dicts import drop_num_batches_tracked as _drop_counters
from .yolact_inspect import UnsupportedCheckpointError, format_yolact_info, inspect_yolact_state_dict
from .yolact_keys import DROP, check_fpn_inputs, check_yolact_keys, rename_yolact_key

__all__ = [
    "UnsupportedCheckpointError",
    "unwrap_state_dict",
    "inspect_yolact_state_dict",
    "convert_yolact_state_dict",
    "convert_torchvision_resnet_state_dict",
    "format_yolact_info",
    "count_parameters",
]


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
    sd = unwrap_state_dict(state_dict)
    if "conv1.weight" not in sd or not any(k.startswith("layer1.") for k in sd):
        hint = ""
        if any(k.startswith("fpn.lat_layers.") for k in sd):
            hint = "; it looks like an original YOLACT checkpoint: convert it with yolact-convert yolact"
        elif any(k.startswith("backbone.bottom_up.") for k in sd):
            hint = "; it already uses Detectron2 names: load it directly with MODEL.WEIGHTS"
        raise ValueError(
            "not a torchvision ImageNet ResNet state dict: no 'conv1.weight' / 'layer1.*' keys found" + hint
        )
    renamed = {key: rename_torchvision_key(key) for key in sd if not key.startswith("fc.")}  # fc: the classifier
    unknown = [key for key, new_key in renamed.items() if new_key is None]
    if unknown:
        raise ValueError(f"not a torchvision ImageNet ResNet state dict: unrecognised keys {short_list(unknown)}")
    new_sd = {new_key: sd[key] for key, new_key in renamed.items()}
    depth, _, _ = resnet_structure(new_sd, "torchvision ResNet")
    if drop_num_batches_tracked:
        _drop_counters(new_sd)
    return new_sd, depth


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
        new_key = rename_yolact_key(key, num_lat)
        if new_key is DROP:
            dropped.append(key)
        elif new_key is None:
            unknown.append(key)
        else:
            new_sd[new_key] = value
    if unknown:
        if any(re.match(r"prediction_layers\.[1-9]", k) for k in unknown):
            raise ValueError(
                "unsupported YOLACT checkpoint: it has weights for prediction_layers other than 0 "
                "(an unshared prediction head; yolact_d2 shares one head across the FPN levels)"
            )
        raise ValueError(f"unsupported YOLACT checkpoint: unrecognised keys {short_list(unknown)}")

    check_yolact_keys(new_sd, info, num_lat)
    depth, _, bottleneck = resnet_structure(new_sd, "YOLACT backbone", allow_dcn=True)
    if not bottleneck or depth != info["depth"]:
        raise ValueError(f"unexpected YOLACT backbone: ResNet-{depth}")
    check_fpn_inputs(new_sd, num_lat)

    if dropped:
        info["notes"].append(
            f"dropped {len(dropped)} keys the model does not use (the original loader drops them too): "
            + ", ".join(dropped)
        )
    if drop_num_batches_tracked:
        n = _drop_counters(new_sd)
        info["notes"].append(f"dropped {n} BN num_batches_tracked counters")
    if not info["has_semantic_seg"]:
        info["notes"].append(
            "no semantic_seg_conv (the training-only semantic segmentation head): use "
            "MODEL.YOLACT.SEM_SEG_ON False or let it be trained from scratch"
        )
    info["dropped_keys"] = dropped
    return new_sd, info
