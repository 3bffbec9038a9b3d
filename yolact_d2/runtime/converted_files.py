"""The converters' files: checking a command line's input and output paths, reading a third-party
checkpoint with the safe loader, writing the converted one atomically."""
import os
from collections.abc import Mapping
from typing import Any, Optional

import torch

from ..utils.atomic_io import atomic_open
from ..utils.errors import UserError, first_line
from ..utils.file_checks import unreadable_file_cause
from .safe_load import load_checkpoint

__all__ = ["cli_path_problem", "load_checkpoint_file", "save_converted_checkpoint"]


def cli_path_problem(input_path: str, output_path: str, force: bool = False) -> Optional[str]:
    """What is wrong with a converter tool's input/output paths (one line), or None. The output is
    never the input (the original checkpoint would be gone, whatever ``force`` says), and an existing
    output is replaced only with ``force`` (``--force``)."""
    cause = unreadable_file_cause(input_path)
    if cause is not None:
        return "no such file" if cause == "does not exist" else cause
    out_dir = os.path.dirname(os.path.abspath(output_path))
    if not os.path.isdir(out_dir):
        return f"output directory {out_dir} does not exist"
    if os.path.realpath(input_path) == os.path.realpath(output_path) or (
            os.path.exists(output_path) and os.path.samefile(input_path, output_path)):
        return (f"the output {output_path} is this input file: converting would replace the original checkpoint "
                "(give another output path)")
    if os.path.isdir(output_path):
        return f"the output {output_path} is a folder (give a file name)"
    if os.path.lexists(output_path) and not force:
        return f"the output {output_path} exists (pass --force to replace it, or give another output path)"
    return None


def load_checkpoint_file(path: str, unsafe: bool = False) -> Any:
    """Read a checkpoint on CPU with :func:`~yolact_d2.runtime.safe_load.load_checkpoint`:
    tensors and plain data only (original YOLACT and torchvision checkpoints are plain dicts of
    tensors); ``unsafe`` (``--unsafe-load``) uses the unrestricted loader, which can run code.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        UnsafeCheckpointError: if the file holds other objects and ``unsafe`` is False.
        ValueError: if the file cannot be read as a PyTorch checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return load_checkpoint(path, trusted=unsafe, opt_in="pass --unsafe-load to load this file unrestricted")
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001  (torch raises several types here)
        raise ValueError(f"not a readable PyTorch checkpoint file (torch.load: {_typed_first_line(e)})") from e


def _typed_first_line(error: BaseException) -> str:
    text = first_line(error) if str(error).strip() else ""
    return f"{type(error).__name__}: {text}".rstrip(": ")


def save_converted_checkpoint(state_dict: Mapping[str, torch.Tensor], path: str, author: str) -> None:
    """Write ``{"model": state_dict, "__author__": author, "matching_heuristics": False}`` (the
    format ``DetectionCheckpointer`` loads with exact names), atomically: to a temporary file in
    the same directory, flushed to disk, then renamed (:func:`~yolact_d2.utils.atomic_io.atomic_open`)."""
    with atomic_open(path, "wb") as f:
        torch.save({"model": dict(state_dict), "__author__": author, "matching_heuristics": False}, f)
