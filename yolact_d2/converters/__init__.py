"""Conversion of third-party weights (original YOLACT checkpoints, torchvision ImageNet ResNets) to
yolact_d2 parameter names: pure functions on state dicts. Reading and writing the files is the run-time
layer's (:mod:`yolact_d2.runtime.converted_files`); ``yolact-convert`` is the command line."""
from .yolact_converter import (
    UnsupportedCheckpointError,
    convert_torchvision_resnet_state_dict,
    convert_yolact_state_dict,
    count_parameters,
    format_yolact_info,
    inspect_yolact_state_dict,
    unwrap_state_dict,
)

__all__ = [
    "UnsupportedCheckpointError",
    "convert_torchvision_resnet_state_dict",
    "convert_yolact_state_dict",
    "count_parameters",
    "format_yolact_info",
    "inspect_yolact_state_dict",
    "unwrap_state_dict",
]
