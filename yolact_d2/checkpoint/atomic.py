"""Crash-safe checkpoints (docs/RELIABILITY.md).

:class:`AtomicDetectionCheckpointer` is Detectron2's ``DetectionCheckpointer`` with:

* **atomic writes** (:mod:`yolact_d2.utils.atomic_io`): a checkpoint is written to a temporary
  file in the same folder, flushed to disk, then renamed over the final name; ``last_checkpoint``
  is updated the same way, and only after the checkpoint is complete. A process killed at any
  moment (SIGKILL included) leaves either the previous checkpoint or the new one, and
  ``last_checkpoint`` never names a partial file. Temporary files left by a killed process are
  removed at the next save.
* **clear load errors**: a file that cannot be read names the file; loading weights of which
  less than half match the model (another architecture, e.g. a different backbone or a
  detector without YOLACT's head) raises :class:`IncompatibleCheckpointError` with the counts,
  unless the checkpoint only holds backbone (ResNet) weights, as ImageNet initialisations do.
  Fine-tuning from a YOLACT checkpoint with another number of classes stays possible: only the
  class-dependent layers are skipped.

Writes to non-local paths (``scheme://``) fall back to Detectron2's behaviour.
"""
import errno
import logging
import os
import shutil
from typing import Any, Dict, List, Optional

import torch

from detectron2.checkpoint import DetectionCheckpointer

from ..utils.atomic_io import atomic_open, remove_stale_temporary_files
from ..utils.errors import UserError, first_line
from .safe_load import WEIGHTS_OPT_IN, load_checkpoint

__all__ = ["AtomicDetectionCheckpointer", "IncompatibleCheckpointError", "CheckpointWriteError", "atomic_open"]

logger = logging.getLogger(__name__)

# Parameter-name prefix of the ResNet part of the model; a checkpoint that loads into it only is
# an ImageNet (or other backbone) initialisation.
_BACKBONE_PREFIX = "backbone.bottom_up."


class IncompatibleCheckpointError(UserError, RuntimeError):
    """MODEL.WEIGHTS (or the checkpoint to resume) does not fit the model (a user error: one line from
    the command-line programs)."""


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written (full disk, no permission, ...); the previous one is kept."""


def _os_error_in(exc: BaseException):
    """The OSError behind ``exc`` (itself, or in its cause / context chain), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _free_space(folder: str) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown free space"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} {unit} free" if unit == "B" else f"{free:.1f} {unit} free"
        free /= 1024.0


def _write_error(path: str, exc: BaseException, previous: str) -> CheckpointWriteError:
    """One line naming the file, the cause (errno name and text, or torch's message) and the free space."""
    folder = os.path.dirname(path)
    os_error = _os_error_in(exc)
    text = first_line(exc)
    if os_error is not None:
        name = errno.errorcode.get(os_error.errno, os_error.errno)
        cause = f"{os_error.strerror or os.strerror(os_error.errno)} ({name})"
    elif "No space left" in text:
        cause = f"{text} (ENOSPC)"
    else:
        cause = f"{type(exc).__name__}: {text}"
    kept = f"the previous checkpoint {previous} is kept" if previous else "no earlier checkpoint was written"
    return CheckpointWriteError(
        f"cannot write checkpoint {path}", f"{cause}; {_free_space(folder)} on {folder}; {kept}",
        fix="free some space or use an OUTPUT_DIR on a disk with room, then continue with --resume",
    )


def _is_local(path: str) -> bool:
    return "://" not in path


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic saves and architecture checks (module docstring)."""

    # Loading fails when fewer than this fraction of the model's tensors come from a non-backbone
    # checkpoint.
    min_loaded_fraction = 0.5

    def __init__(self, model, save_dir: str = "", *, trusted_file=None, **kwargs):
        # trusted_file: the one file the user allowed to load unrestricted (MODEL.WEIGHTS_TRUSTED)
        super().__init__(model, save_dir, **kwargs)
        self._trusted_file = trusted_file
        self._stale_checked = False
        self._loading_path = None
        self.loaded_path: Optional[str] = None  # the file of the last load() (MODEL.WEIGHTS or the one resumed)
        # the training classes (set by the trainer): saved as "thing_classes" in every checkpoint, so
        # that evaluation and the predictor can tell a dataset with other classes (check_class_names)
        self.class_names: Optional[List[str]] = None

    # ------------------------------------------------------------------ saving
    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if self.class_names:
            kwargs.setdefault("thing_classes", list(self.class_names))
        if not _is_local(self.save_dir):
            return super().save(name, **kwargs)
        os.makedirs(self.save_dir, exist_ok=True)
        if not self._stale_checked:
            self._stale_checked = True
            for path in remove_stale_temporary_files(self.save_dir):
                self.logger.warning(f"Removed {path}, a partial file left by an interrupted save")
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        previous = self.get_checkpoint_file() if self.has_checkpoint() else ""
        try:
            with atomic_open(save_file, "wb") as f:
                torch.save(data, f)
            self.tag_last_checkpoint(basename)
        except (OSError, RuntimeError) as e:  # full disk, no permission; torch wraps write errors in RuntimeError
            raise _write_error(save_file, e, previous) from e

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not _is_local(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        with atomic_open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)

    # ------------------------------------------------------------------ loading
    def resume_or_load(self, path: str, *, resume: bool = True):
        if resume and self.has_checkpoint() and _is_local(self.save_dir):
            self._check_last_checkpoint()
        return super().resume_or_load(path, resume=resume)

    def _check_last_checkpoint(self) -> None:
        """``--resume`` with a ``last_checkpoint`` that is empty or names a missing file: an error
        naming that file (fvcore would try to load the folder itself, or report only the path)."""
        pointer = os.path.join(self.save_dir, "last_checkpoint")
        with open(pointer) as f:
            name = f.read().strip()
        fix = "write the name of a model_*.pth of this folder into it, or delete it to start from MODEL.WEIGHTS"
        if not name:
            raise UserError(pointer, "is empty: --resume needs the name of the checkpoint to resume from", fix)
        if not os.path.isfile(os.path.join(self.save_dir, name)):
            raise UserError(pointer, f"names {name}, which is not in {self.save_dir}", f"restore {name}, {fix}")

    def load(self, path, *args, **kwargs):
        self._loading_path = self.loaded_path = path
        try:
            return super().load(path, *args, **kwargs)
        except AssertionError as e:  # fvcore asserts the file exists, with no hint where the path came from
            if str(e) != f"Checkpoint {path} not found!":
                raise
            raise UserError(
                f"Checkpoint {path}", "no such file",
                fix="check MODEL.WEIGHTS, or the last_checkpoint file in OUTPUT_DIR with --resume",
            ) from None
        finally:
            self._loading_path = None

    def _trusted(self, filename) -> bool:
        return bool(self._trusted_file) and self._trusted_file in (filename, self._loading_path)

    def _torch_load(self, f):
        return load_checkpoint(f, trusted=self._trusted(f), opt_in=WEIGHTS_OPT_IN)

    def _read_safely(self, filename):
        """.pkl / .pyth read through safe_load (Detectron2 reads them with pickle / torch.load)."""
        data = load_checkpoint(filename, trusted=self._trusted(filename), opt_in=WEIGHTS_OPT_IN)
        if filename.endswith(".pyth"):
            if "model_state" not in data:
                raise IncompatibleCheckpointError(f"Cannot load .pyth file {filename}: no 'model_state' in it")
            state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        if "model" in data and "__author__" in data:
            return data  # Detectron2 model-zoo format
        data = data.get("blobs", data)  # Caffe2 / Detectron1 format
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

    def _load_file(self, filename):
        try:
            if filename.endswith((".pkl", ".pyth")):
                return self._read_safely(filename)
            return super()._load_file(filename)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 (torch / pickle raise many types)
            if filename in str(e):
                raise
            raise IncompatibleCheckpointError(
                f"Cannot load checkpoint {filename}: {type(e).__name__}: {e}. The file may be "
                "incomplete (interrupted copy or download) or not a PyTorch/Detectron2 checkpoint."
            ) from e

    def _load_model(self, checkpoint):
        checkpoint_keys = list(checkpoint.get("model", {}) or {})
        incompatible = super()._load_model(checkpoint)
        if incompatible is not None:
            self._check_loaded_enough(incompatible, checkpoint_keys)
        return incompatible

    def _check_loaded_enough(self, incompatible, checkpoint_keys) -> None:
        model_state = {
            _strip_module(k): v
            for k, v in self.model.state_dict().items()
            if not k.endswith("num_batches_tracked")
        }
        if not model_state:
            return
        not_loaded = {_strip_module(k) for k in incompatible.missing_keys}
        wrong_shape = {_strip_module(k) for k, *_ in incompatible.incorrect_shapes}
        not_loaded |= wrong_shape
        not_loaded &= set(model_state)
        loaded = [k for k in model_state if k not in not_loaded]
        if len(loaded) >= self.min_loaded_fraction * len(model_state):
            return
        backbone = [k for k in model_state if k.startswith(_BACKBONE_PREFIX)]
        loaded_backbone = [k for k in loaded if k.startswith(_BACKBONE_PREFIX)]
        if loaded and len(loaded_backbone) == len(loaded) and len(loaded_backbone) >= 0.5 * len(backbone):
            return  # a backbone (e.g. ImageNet) initialisation: the rest is trained from scratch
        numel = lambda keys: sum(int(model_state[k].numel()) for k in keys)  # noqa: E731
        unexpected = list(incompatible.unexpected_keys)
        example = ""
        if unexpected:
            example = f" (e.g. {', '.join(unexpected[:3])})"
        missing = sorted(not_loaded - wrong_shape)
        raise IncompatibleCheckpointError(
            f"Checkpoint {self._loading_path or '<unknown>'} does not fit this model: only "
            f"{len(loaded)} of the model's {len(model_state)} parameter tensors "
            f"({numel(loaded):,} of {numel(model_state):,} values) would be initialised from it. "
            f"{len(missing)} are missing from the checkpoint (e.g. {', '.join(missing[:3])}), "
            f"{len(wrong_shape)} have a different shape, and {len(unexpected)} of its "
            f"{len(checkpoint_keys)} tensors are not used by the model{example}. It is probably "
            "a checkpoint of another architecture or configuration (backbone depth, "
            "MODEL.FPN.OUT_CHANNELS, ...). Use a yolact_d2 checkpoint of this configuration (a "
            "different MODEL.YOLACT.NUM_CLASSES is fine for fine-tuning), a ResNet backbone "
            "checkpoint (yolact-convert backbone), or an original YOLACT checkpoint converted with "
            "yolact-convert yolact."
        )
