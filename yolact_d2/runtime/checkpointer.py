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
* **inference mode** (``strict=True``: the predictor, evaluation, export, the demos): a checkpoint
  that leaves any parameter of the model uninitialised (missing, or of another shape) is an error
  naming the layers and, for the class-dependent ones, both class counts; an empty path is an
  error too (``MODEL.WEIGHTS random`` runs an untrained model on purpose, in every mode).
* **non-finite weights** (NaN / Inf) are refused when loaded, in every mode, naming the file.
* **resuming** (the optimizer state is loaded too) checks every model tensor and every optimizer
  state tensor of the checkpoint against this model and optimizer *before* loading: another class
  count or backbone depth is one line, not a crash inside the optimizer's step.

Writes to non-local paths (``scheme://``) fall back to Detectron2's behaviour. The private parts of
Detectron2's checkpointer it extends are reached through
:class:`~yolact_d2.utils.detectron2_internals.CheckpointerExtensionPoints`.
"""
import errno
import logging
import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..utils.atomic_io import atomic_open, free_space_text, os_error_in, remove_stale_temporary_files
from ..utils.detectron2_internals import (
    STEP_STATE_KEY,
    CheckpointerExtensionPoints,
    checkpoint_from_pickle,
    checkpoint_from_pycls,
    is_missing_checkpoint_assertion,
)
from ..utils.errors import ConfigError, UserError, first_line
from ..utils.file_checks import unreadable_file_cause
from .safe_load import WEIGHTS_OPT_IN, load_checkpoint
from .weights_catalog import RANDOM_WEIGHTS, is_random_weights

__all__ = [
    "AtomicDetectionCheckpointer", "IncompatibleCheckpointError", "CheckpointWriteError", "atomic_open",
    "RANDOM_WEIGHTS", "is_random_weights",
]

logger = logging.getLogger(__name__)

# Parameter-name prefix of the ResNet part of the model; a checkpoint that loads into it only is
# an ImageNet (or other backbone) initialisation.
_BACKBONE_PREFIX = "backbone.bottom_up."
# Class-dependent layers: output channels that follow MODEL.YOLACT.NUM_CLASSES.
_CLASS_LAYERS = ("head.cls_score.", "maskiou_net.", "sem_seg_head.")
# Layers inference never runs (the semantic-segmentation loss): converted original checkpoints may lack them.
_TRAINING_ONLY = ("sem_seg_head.",)


def _empty_weights_error() -> ConfigError:
    return ConfigError(
        "MODEL.WEIGHTS is empty", "the model would run with random weights",
        fix="give MODEL.WEIGHTS (or --weights) path/to/model_final.pth; MODEL.WEIGHTS random runs an "
        "untrained model on purpose",
    )


def _layer(key: str) -> str:
    return key.rsplit(".", 1)[0]


def _short_names(names, limit: int = 5) -> str:
    names = sorted(set(names))
    text = ", ".join(names[:limit])
    return f"{text}, ... ({len(names)} in all)" if len(names) > limit else text


def _non_finite(obj, prefix: str, found: List[str]) -> None:
    """Append the names of the float tensors / arrays under ``obj`` holding NaN or Inf to ``found``."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and obj.numel() and not bool(torch.isfinite(obj).all()):
            found.append(prefix)
    elif isinstance(obj, np.ndarray):
        if np.issubdtype(obj.dtype, np.floating) and obj.size and not np.isfinite(obj).all():
            found.append(prefix)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _non_finite(value, f"{prefix}.{key}" if prefix else str(key), found)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _non_finite(value, f"{prefix}.{i}", found)


class IncompatibleCheckpointError(UserError, RuntimeError):
    """MODEL.WEIGHTS (or the checkpoint to resume) does not fit the model (a user error: one line from
    the command-line programs)."""


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written (full disk, no permission, ...); the previous one is kept."""


def _write_error(path: str, exc: BaseException, previous: str) -> CheckpointWriteError:
    """One line naming the file, the cause (errno name and text, or torch's message) and the free space."""
    folder = os.path.dirname(path)
    os_error = os_error_in(exc)
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
        f"cannot write checkpoint {path}", f"{cause}; {free_space_text(folder)} on {folder}; {kept}",
        fix="free some space or use an OUTPUT_DIR on a disk with room, then continue with --resume",
    )


def _is_local(path: str) -> bool:
    return "://" not in path


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


class _AtomicWrites:
    """A checkpointer's path manager (Detectron2's ``PathManager``) whose files opened for writing on
    local paths are written atomically: fvcore's ``Checkpointer.save`` and ``tag_last_checkpoint``
    write through ``self.path_manager.open``, the customisation point fvcore gives for storage."""

    def __init__(self, path_manager):
        self.path_manager = path_manager

    def open(self, path: str, mode: str = "r", **kwargs):
        if mode in ("w", "wb") and _is_local(path):
            return atomic_open(path, mode)
        return self.path_manager.open(path, mode, **kwargs)

    def __getattr__(self, name: str):  # everything else (get_local_path, exists, ls, rm, ...) as it is
        if name == "path_manager":  # not set yet (a copy being made)
            raise AttributeError(name)
        return getattr(self.path_manager, name)


class AtomicDetectionCheckpointer(CheckpointerExtensionPoints):
    """``DetectionCheckpointer`` with atomic saves and architecture checks (module docstring)."""

    # Loading fails when fewer than this fraction of the model's tensors come from a non-backbone
    # checkpoint.
    min_loaded_fraction = 0.5

    def __init__(self, model, save_dir: str = "", *, trusted_file=None, strict: bool = False, **kwargs):
        # trusted_file: the one file the user allowed to load unrestricted (MODEL.WEIGHTS_TRUSTED)
        # strict: inference mode, every parameter must come from the checkpoint (module docstring)
        super().__init__(model, save_dir, **kwargs)
        self.path_manager = _AtomicWrites(self.path_manager)
        self.strict = strict
        self._loading_checkpointables = None
        self._preloaded = None  # (path, data) read by read() before the model was built
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
        save_file = os.path.join(self.save_dir, f"{name}.pth")  # the file fvcore writes
        previous = self.get_checkpoint_file() if self.has_checkpoint() else ""
        try:
            super().save(name, **kwargs)  # written atomically through self.path_manager (_AtomicWrites)
        except (OSError, RuntimeError) as e:  # full disk, no permission; torch wraps write errors in RuntimeError
            raise _write_error(save_file, e, previous) from e

    # ------------------------------------------------------------------ loading
    def resume_or_load(self, path: str, *, resume: bool = True):
        if resume and self.has_checkpoint() and _is_local(self.save_dir):
            self._check_last_checkpoint()
        return super().resume_or_load(path, resume=resume)

    def _check_last_checkpoint(self) -> None:
        """``--resume`` with a ``last_checkpoint`` that is empty or names a missing file: an error
        naming that file (fvcore would try to load the folder itself, or report only the path)."""
        pointer = os.path.join(self.save_dir, "last_checkpoint")
        fix = "write the name of a model_*.pth of this folder into it, or delete it to start from MODEL.WEIGHTS"
        cause = unreadable_file_cause(pointer)  # a FIFO would block in open() forever
        if cause is not None:
            raise UserError(pointer, cause, fix)
        with open(pointer) as f:
            name = f.read().strip()
        if not name:
            raise UserError(pointer, "is empty: --resume needs the name of the checkpoint to resume from", fix)
        if not os.path.isfile(os.path.join(self.save_dir, name)):
            raise UserError(pointer, f"names {name}, which is not in {self.save_dir}", f"restore {name}, {fix}")

    def load(self, path, checkpointables=None):
        if is_random_weights(path):
            self.logger.warning("MODEL.WEIGHTS random: the model keeps its random initialisation (untrained)")
            self.loaded_path = None
            return {}
        if not path and self.strict:
            raise _empty_weights_error()
        self._loading_path = self.loaded_path = path
        self._loading_checkpointables = checkpointables
        try:
            return super().load(path, checkpointables=checkpointables)
        except AssertionError as e:  # fvcore asserts the file exists, with no hint where the path came from
            if not is_missing_checkpoint_assertion(e, path):
                raise
            cause = unreadable_file_cause(path)  # a FIFO, a link loop, a folder...
            raise UserError(
                f"Checkpoint {path}", "no such file" if cause in (None, "does not exist") else cause,
                fix="check MODEL.WEIGHTS, or the last_checkpoint file in OUTPUT_DIR with --resume",
            ) from None
        finally:
            self._loading_path = None
            self._loading_checkpointables = None
            self.forget_failed_load()

    def read(self, path: str) -> Dict[str, Any]:
        """The checkpoint file ``path`` as loaded (safely), before any model is involved, e.g. to read
        its recorded classes; the next :meth:`load` of ``path`` uses it without reading the file again."""
        if not path:
            raise _empty_weights_error()
        local = self.local_file(path)
        if not os.path.isfile(local):
            raise UserError(f"Checkpoint {path}", "no such file", fix="check MODEL.WEIGHTS")
        self._loading_path = path
        try:
            data = self.read_file_of(path, local)
        finally:
            self._loading_path = None
        self._preloaded = (local, data)
        return data

    def _trusted(self, filename) -> bool:
        return bool(self._trusted_file) and self._trusted_file in (filename, self._loading_path)

    def torch_load(self, filename):
        return load_checkpoint(filename, trusted=self._trusted(filename), opt_in=WEIGHTS_OPT_IN)

    def _read_safely(self, filename):
        """.pkl / .pyth read through safe_load (Detectron2 reads them with pickle / torch.load)."""
        data = load_checkpoint(filename, trusted=self._trusted(filename), opt_in=WEIGHTS_OPT_IN)
        if filename.endswith(".pyth"):
            if "model_state" not in data:
                raise IncompatibleCheckpointError(
                    f"Cannot load .pyth file {filename}", "no 'model_state' in it",
                    fix="give a pycls checkpoint, or a .pth file",
                )
            return checkpoint_from_pycls(data)
        return checkpoint_from_pickle(data)

    def read_file(self, filename):
        if self._preloaded is not None and self._preloaded[0] == filename:
            data, self._preloaded = self._preloaded[1], None
            return dict(data)
        try:
            if filename.endswith((".pkl", ".pyth")):
                return self._read_safely(filename)
            return super().read_file(filename)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 (torch / pickle raise many types)
            if filename in str(e):
                raise
            raise IncompatibleCheckpointError(
                f"Cannot load checkpoint {filename}", f"{type(e).__name__}: {e}. The file may be incomplete "
                "(interrupted copy or download) or not a PyTorch/Detectron2 checkpoint",
                fix="copy or download it again, or give a checkpoint written by PyTorch or Detectron2",
            ) from e

    def load_model_state(self, checkpoint):
        checkpoint_keys = list(checkpoint.get("model", {}) or {})
        self._check_finite(checkpoint)
        if self._resuming(checkpoint):
            self._check_resumable(checkpoint)
        classes = checkpoint.get("thing_classes")
        incompatible = super().load_model_state(checkpoint)
        if incompatible is not None:
            if self.strict:
                self._check_complete(incompatible, classes)
            self._check_loaded_enough(incompatible, checkpoint_keys)
        return incompatible

    def _path(self) -> str:
        return self._loading_path or "<unknown>"

    def _loaded_parts(self, checkpoint) -> List[str]:
        """The entries of ``checkpoint`` that this load puts into the model and the checkpointables."""
        wanted = self.checkpointables if self._loading_checkpointables is None else self._loading_checkpointables
        return ["model"] + [k for k in wanted if k in checkpoint and k in self.checkpointables]

    def _check_finite(self, checkpoint) -> None:
        found: List[str] = []
        for part in self._loaded_parts(checkpoint):
            _non_finite(checkpoint.get(part), part, found)
        if found:
            raise IncompatibleCheckpointError(
                f"Checkpoint {self._path()}", f"holds NaN or Inf values in {len(found)} tensors "
                f"({_short_names(found, 3)}); a model loaded from it would predict nothing useful",
                fix="use an earlier checkpoint of the run (a model_*.pth in its OUTPUT_DIR)",
            )

    def _resuming(self, checkpoint) -> bool:
        """The training state (Detectron2's ``trainer``, or an ``optimizer``) is loaded too: --resume."""
        return any(k in self._loaded_parts(checkpoint) for k in ("trainer", "optimizer"))

    def _optimizer_and_state(self, checkpoint):
        """(this run's optimizer, its state in the checkpoint): a DefaultTrainer keeps it in the state
        of its step object (``trainer/<STEP_STATE_KEY>/optimizer``); (None, None) if either is not there."""
        if "optimizer" in self.checkpointables:
            return self.checkpointables["optimizer"], checkpoint.get("optimizer")
        trainer = self.checkpointables.get("trainer")
        saved = checkpoint.get("trainer")
        if trainer is None or not isinstance(saved, dict):
            return None, None
        inner = saved.get(STEP_STATE_KEY)
        return getattr(trainer, "optimizer", None), inner.get("optimizer") if isinstance(inner, dict) else None

    def _class_counts(self, key: str, checkpoint_shape, model_shape, classes) -> str:
        """`` (the checkpoint has K classes, this config N)`` for a class-dependent layer, else ''."""
        if not key.startswith(_CLASS_LAYERS):
            return ""
        ours = getattr(getattr(self.model, "head", None), "num_classes", None)
        theirs = len(classes) if classes else None
        if theirs is None and ours and key == "head.cls_score.weight" and checkpoint_shape:
            anchors = model_shape[0] // (ours + 1)
            theirs = checkpoint_shape[0] // anchors - 1 if anchors else None
        if not ours or not theirs or ours == theirs:
            return ""
        return f"{theirs} classes in the checkpoint, MODEL.YOLACT.NUM_CLASSES {ours} in the config"

    def _check_complete(self, incompatible, classes) -> None:
        """Inference: every model parameter and buffer must come from the checkpoint."""
        wrong = [(_strip_module(k), a, b) for k, a, b in incompatible.incorrect_shapes
                 if not k.endswith("num_batches_tracked")]
        skipped = {k for k, *_ in wrong}  # fvcore also lists them as missing
        missing = [k for k in map(_strip_module, incompatible.missing_keys)
                   if not k.endswith("num_batches_tracked") and k not in skipped and not k.startswith(_TRAINING_ONLY)]
        if not wrong and not missing:
            return
        counts = ""
        for key, theirs, ours in wrong:
            counts = counts or self._class_counts(key, theirs, ours, classes)
        parts = []
        if wrong:
            layers = _short_names(_layer(k) for k, *_ in wrong) + (f"; {counts}" if counts else "")
            parts.append(f"{len(wrong)} tensors have another shape in it (layers {layers})")
        if missing:
            parts.append(f"{len(missing)} are missing from it (layers {_short_names(_layer(k) for k in missing)})")
        fix = "use the config the checkpoint was trained with (its run's OUTPUT_DIR/config.yaml)"
        if counts:
            fix = f"{fix}, or set MODEL.YOLACT.NUM_CLASSES to the checkpoint's count"
        raise IncompatibleCheckpointError(
            f"Checkpoint {self._path()} does not fit this model", f"{' and '.join(parts)}; those layers would keep "
            "their random initialisation", fix=fix,
        )

    def _check_resumable(self, checkpoint) -> None:
        """--resume: the checkpoint's model and optimizer state must have this model's and this
        optimizer's shapes (the optimizer is loaded without shape checks; a fused step on tensors of
        the wrong size crashes the process)."""
        model_state = {_strip_module(k): v for k, v in self.model.state_dict().items()}
        theirs = checkpoint.get("model") or {}
        classes = checkpoint.get("thing_classes")
        problems = []
        for key, value in theirs.items():
            ours = model_state.get(_strip_module(key))
            shape = tuple(getattr(value, "shape", ()))
            if ours is not None and tuple(ours.shape) != shape:
                problems.append((_strip_module(key), shape, tuple(ours.shape)))
        their_keys = {_strip_module(k) for k in theirs if not k.endswith("num_batches_tracked")}
        our_keys = {k for k in model_state if not k.endswith("num_batches_tracked")}
        missing, unexpected = sorted(our_keys - their_keys), sorted(their_keys - our_keys)
        fix = ("resume with the config of that run (its OUTPUT_DIR/config.yaml), or start this config in a new "
               "OUTPUT_DIR (MODEL.WEIGHTS that checkpoint fine-tunes from it)")
        if problems or missing or unexpected:
            counts = ""
            for k, ta, tb in problems:
                counts = counts or self._class_counts(k, ta, tb, classes)
            if problems:
                key, a, b = problems[0]
                detail = f"{key} is {a} there and {b} here"
            else:
                detail = f"{missing[0]} is not in it" if missing else f"its {unexpected[0]} is not in this model"
            raise IncompatibleCheckpointError(
                f"--resume: checkpoint {self._path()}", f"was written for another model: {len(problems)} tensors "
                f"differ in shape, {len(missing)} are missing and {len(unexpected)} are not in this model "
                f"({detail}{'; ' + counts if counts else ''})", fix=fix,
            )
        self._check_optimizer_state(*self._optimizer_and_state(checkpoint), fix)

    def _check_optimizer_state(self, optimizer, saved, fix: str) -> None:
        if optimizer is None or not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list):
            return
        names = {id(p): _strip_module(n) for n, p in self.model.named_parameters()}
        groups = optimizer.param_groups
        sizes = [len(g.get("params", [])) for g in saved["param_groups"]]
        if sizes != [len(g["params"]) for g in groups]:
            raise IncompatibleCheckpointError(
                f"--resume: checkpoint {self._path()}", f"has an optimizer state for {sum(sizes)} parameters in "
                f"{len(sizes)} groups, this model's optimizer has {sum(len(g['params']) for g in groups)} in "
                f"{len(groups)} groups (another model or SOLVER settings)", fix=fix,
            )
        state = saved.get("state") or {}
        for saved_group, group in zip(saved["param_groups"], groups):
            for index, param in zip(saved_group["params"], group["params"]):
                for name, value in (state.get(index) or {}).items():
                    if isinstance(value, torch.Tensor) and value.dim() and tuple(value.shape) != tuple(param.shape):
                        raise IncompatibleCheckpointError(
                            f"--resume: checkpoint {self._path()}", f"its optimizer state '{name}' of "
                            f"{names.get(id(param), 'a parameter')} is {tuple(value.shape)}, the parameter is "
                            f"{tuple(param.shape)} (another model)", fix=fix,
                        )

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
            f"Checkpoint {self._path()} does not fit this model",
            f"only {len(loaded)} of the model's {len(model_state)} parameter tensors "
            f"({numel(loaded):,} of {numel(model_state):,} values) would be initialised from it. "
            f"{len(missing)} are missing from the checkpoint (e.g. {', '.join(missing[:3])}), "
            f"{len(wrong_shape)} have a different shape, and {len(unexpected)} of its "
            f"{len(checkpoint_keys)} tensors are not used by the model{example}. It is probably "
            "a checkpoint of another architecture or configuration (backbone depth, "
            "MODEL.FPN.OUT_CHANNELS, ...)",
            fix="use a yolact_d2 checkpoint of this configuration (a different MODEL.YOLACT.NUM_CLASSES is fine "
            "for fine-tuning), a ResNet backbone checkpoint (yolact-convert backbone), or an original YOLACT "
            "checkpoint converted with yolact-convert yolact",
        )
