"""State dicts of the weight converters: unwrapping, counting, naming. Only ``torch`` is imported, so the
command-line converters need no Detectron2."""
from collections.abc import Mapping
from typing import Any, Dict

import torch

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
