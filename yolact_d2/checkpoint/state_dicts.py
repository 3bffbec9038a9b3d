"""State dicts and checkpoint files of the weight converters: unwrapping, counting, reading and
writing. Only ``torch`` is imported, so the command-line tools need no Detectron2."""
import os
from collections.abc import Mapping
from typing import Any, Dict, Optional

import torch

from ..utils.atomic_io import atomic_open
from ..utils.errors import UserError, first_line

_BN_RUNNING = ("running_mean", "running_var", "num_batches_tracked")


def short_list(keys, limit: int = 6) -> str:
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


def drop_num_batches_tracked(state_dict: Dict[str, torch.Tensor]) -> int:
    """Delete the BN ``num_batches_tracked`` counters in place; returns how many there were."""
    keys = [k for k in state_dict if k.endswith(".num_batches_tracked")]
    for k in keys:
        del state_dict[k]
    return len(keys)


def cli_path_problem(input_path: str, output_path: str, force: bool = False) -> Optional[str]:
    """What is wrong with a converter tool's input/output paths (one line), or None. The output is
    never the input (the original checkpoint would be gone, whatever ``force`` says), and an existing
    output is replaced only with ``force`` (``--force``)."""
    from ..utils.file_checks import unreadable_file_cause

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
