"""Conversion of third-party weights (original YOLACT checkpoints, torchvision ResNets) to
yolact_d2 parameter names. See ``yolact-convert`` (``yolact_d2/cli/convert_weights.py`` and
``convert_backbone.py``) for the command-line front ends.

:class:`AtomicDetectionCheckpointer` (``atomic.py``) writes checkpoints atomically and rejects
weights of another architecture (docs/RELIABILITY.md). ``yolact://NAME`` weights (``catalog.py``,
``weights_cache.py``: downloaded, converted and cached once) are registered on Detectron2's ``PathManager``
here."""
from . import weights_cache  # noqa: F401  (registers the yolact:// PathHandler)
from .atomic import AtomicDetectionCheckpointer, IncompatibleCheckpointError, atomic_open
from .yolact_converter import (
    UnsupportedCheckpointError,
    convert_torchvision_resnet_state_dict,
    convert_yolact_state_dict,
    count_parameters,
    format_yolact_info,
    inspect_yolact_state_dict,
    load_checkpoint_file,
    save_converted_checkpoint,
    unwrap_state_dict,
)

__all__ = [
    "AtomicDetectionCheckpointer",
    "IncompatibleCheckpointError",
    "atomic_open",
    "UnsupportedCheckpointError",
    "convert_torchvision_resnet_state_dict",
    "convert_yolact_state_dict",
    "count_parameters",
    "format_yolact_info",
    "inspect_yolact_state_dict",
    "load_checkpoint_file",
    "save_converted_checkpoint",
    "unwrap_state_dict",
]
