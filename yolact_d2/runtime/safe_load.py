"""Loading checkpoint files without running code from them (docs/RELIABILITY.md).

A pickle can name any Python callable and have it called while it is read, so an unrestricted
``torch.load`` / ``pickle.load`` of a downloaded file can run anything. Every file yolact_d2 reads
(``MODEL.WEIGHTS``, the checkpoint to resume, the converters' inputs) goes through
:func:`load_checkpoint`:

* PyTorch files (``.pth``, ``.pyth``, any zip or legacy ``torch.save`` format):
  ``torch.load(weights_only=True)``: tensors, numbers, strings and plain containers only.
* Plain pickles (``.pkl``, Detectron2's ImageNet backbones; or a ``.pth`` that is a plain pickle):
  :class:`RestrictedUnpickler`, which only rebuilds numpy arrays, numpy scalars and dtypes,
  ``OrderedDict`` and plain built-in data.

Anything else is refused with :class:`UnsafeCheckpointError` *before* it is built. The user can opt
in to the unrestricted loaders for one file (``MODEL.WEIGHTS_TRUSTED True`` for ``MODEL.WEIGHTS``,
``--unsafe-load`` for the converters); that logs a warning.
"""
import codecs
import collections
import logging
import pickle
import re
import zipfile
from typing import Any, Optional

import torch

from ..utils.errors import UserError

__all__ = [
    "UnsafeCheckpointError",
    "RestrictedUnpickler",
    "restricted_pickle_load",
    "safe_torch_load",
    "unsafe_load",
    "load_checkpoint",
    "trusted_weights_file",
    "WEIGHTS_OPT_IN",
]

logger = logging.getLogger(__name__)

# How to opt in, for the refusal message of MODEL.WEIGHTS.
WEIGHTS_OPT_IN = "add MODEL.WEIGHTS_TRUSTED True to load this file unrestricted"


class UnsafeCheckpointError(UserError):
    """A checkpoint holds Python objects other than tensors / arrays: loading it could run code."""

    def __init__(self, path: str, offending: str, opt_in: str = WEIGHTS_OPT_IN):
        self.path, self.offending, self.opt_in = str(path), str(offending), str(opt_in)
        super().__init__(
            path,
            f"holds Python objects other than tensors, arrays, numbers and plain containers "
            f"({offending}); loading it could run code from the file, so it was not loaded",
            f"only if you trust the file: {opt_in}",
        )

    def __reduce__(self):
        return (type(self), (self.path, self.offending, self.opt_in))


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes``; other codecs refused."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1", errors)


def _numpy_private(name: str):
    """A private numpy function used by array pickles (moved to ``numpy._core`` in numpy 2)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    return getattr(multiarray, name, None) or getattr(numeric, name)


def _allowed_globals():
    import numpy as np

    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("builtins", "__builtin__"):  # Python 2 pickles say __builtin__
        for name, obj in (("set", set), ("frozenset", frozenset), ("bytearray", bytearray),
                          ("complex", complex), ("slice", slice)):
            allowed[(module, name)] = obj
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # array / scalar reconstruction, under the module names of numpy 1.x and 2.x
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = _numpy_private("_reconstruct")
        allowed[(f"{prefix}.multiarray", "scalar")] = _numpy_private("scalar")
        allowed[(f"{prefix}.numeric", "_frombuffer")] = _numpy_private("_frombuffer")
    # dtype classes of numpy >= 1.25 (numpy.dtypes.Float32DType, ...)
    dtypes = getattr(np, "dtypes", None)
    for name in dir(dtypes) if dtypes is not None else ():
        obj = getattr(dtypes, name)
        if isinstance(obj, type) and issubclass(obj, np.dtype):
            allowed[("numpy.dtypes", name)] = obj
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays / scalars / dtypes, ``OrderedDict`` and plain
    built-in data; any other global (a function to call, a class to build) is refused before it is
    looked up, so nothing from the file runs."""

    _allowed = None

    def __init__(self, file, path: str = "<file>", opt_in: str = WEIGHTS_OPT_IN, **kwargs):
        super().__init__(file, **kwargs)
        self._path, self._opt_in = path, opt_in

    def find_class(self, module: str, name: str):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        obj = RestrictedUnpickler._allowed.get((module, name))
        if obj is None:
            raise UnsafeCheckpointError(self._path, f"{module}.{name}", self._opt_in)
        return obj

    def persistent_load(self, pid):
        # torch storages are only read through torch.load; here a persistent id is a file this
        # loader cannot read (e.g. image bytes whose 'P' reads as the opcode), not code to refuse
        raise pickle.UnpicklingError("a persistent id (a torch storage) in a plain pickle")


def restricted_pickle_load(path: str, opt_in: str = WEIGHTS_OPT_IN) -> Any:
    """Read the plain pickle ``path`` with :class:`RestrictedUnpickler` (latin1 for Python 2 files,
    as Detectron2 reads its ``.pkl`` files)."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, path=path, opt_in=opt_in, encoding="latin1").load()


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def _is_weights_only_refusal(error: BaseException) -> bool:
    return isinstance(error, pickle.UnpicklingError) and "weights only load failed" in str(error).lower()


def safe_torch_load(path: str, opt_in: str = WEIGHTS_OPT_IN) -> Any:
    """``torch.load(weights_only=True)`` on CPU. A file that is a plain pickle rather than a
    ``torch.save`` file is read with :class:`RestrictedUnpickler` instead. Raises
    :class:`UnsafeCheckpointError` for files holding other objects; bytes that neither reader can
    parse (a truncated file, an image) are a ``pickle.UnpicklingError``; other read errors propagate."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises several types)
        if not _is_weights_only_refusal(e):
            raise
        torch_error = e
    found = _GLOBAL_RE.search(str(torch_error))
    reason = found.group(1) if found else _torch_reason(torch_error)
    if zipfile.is_zipfile(path):
        raise UnsafeCheckpointError(path, reason, opt_in) from None
    # a plain pickle (e.g. of numpy arrays, or protocol 4, which torch's restricted reader does
    # not parse) or a legacy torch.save file: the first pickle in it, read restricted
    try:
        data = restricted_pickle_load(path, opt_in)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 (pickle raises many types on bytes that are no pickle)
        if found is None:  # neither reader found code to refuse: the bytes are no checkpoint at all
            raise pickle.UnpicklingError(
                f"neither a torch.save file nor a pickle ({reason}; pickle: {type(e).__name__}: {e})"
            ) from None
        data = None
    if isinstance(data, dict):
        return data
    raise UnsafeCheckpointError(path, reason, opt_in) from None


def _torch_reason(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if not line.lower().startswith(("weights only load failed", "check the documentation", "please file")):
            return f"torch.load(weights_only=True): {line}"
    return "torch.load(weights_only=True) refused it"


def unsafe_load(path: str, how: str) -> Any:
    """The unrestricted loaders (the user opted in for ``path``): ``pickle.load`` for ``.pkl``,
    else ``torch.load(weights_only=False)``. Logs a warning that names the opt-in ``how``."""
    logger.warning(f"Loading {path} without restrictions ({how}): this runs any code the file contains")
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_checkpoint(path: str, trusted: bool = False, opt_in: str = WEIGHTS_OPT_IN) -> Any:
    """Read a checkpoint file: ``.pkl`` with :func:`restricted_pickle_load`, anything else with
    :func:`safe_torch_load`; with ``trusted`` the unrestricted loaders (:func:`unsafe_load`)."""
    if trusted:
        return unsafe_load(path, opt_in)
    if path.endswith(".pkl"):
        return restricted_pickle_load(path, opt_in)
    return safe_torch_load(path, opt_in)


def trusted_weights_file(cfg) -> Optional[str]:
    """``cfg.MODEL.WEIGHTS`` if the user opted in with ``MODEL.WEIGHTS_TRUSTED True``, else None."""
    if cfg.MODEL.get("WEIGHTS_TRUSTED", False) and cfg.MODEL.WEIGHTS:
        return cfg.MODEL.WEIGHTS
    return None

