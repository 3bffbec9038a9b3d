"""Atomic result files for ``COCOEvaluator`` subclasses (docs/RELIABILITY.md), added on top of the
core's evaluator by the trainer and the tools (:class:`AtomicYolactCOCOEvaluator`).

``COCOEvaluator.evaluate`` writes ``instances_predictions.pth`` and ``coco_instances_results.json``
straight into its output folder, so an evaluation killed while writing leaves truncated files
that look like results. :class:`AtomicResultsMixin` lets the evaluator write them into a private
staging folder inside the output folder and, once ``evaluate`` has finished, flushes each file to
disk and renames it into the output folder (an atomic replace). An interrupted evaluation
therefore leaves the previous complete files (or none), never partial ones, and running it again
gives the same files and metrics. Staging folders of processes that no longer exist are removed.
A write that fails (a full disk: torch reports it as "enforce fail at inline_container.cc") is one
line naming the file, the cause and the free space (:class:`ResultsWriteError`).
"""
import errno
import logging
import os
import shutil
import tempfile

from detectron2.utils import comm

from ..evaluation import YolactCOCOEvaluator
from ..utils.atomic_io import free_space_text, os_error_in, publish_file, stale_entries
from ..utils.detectron2_internals import results_folder, results_written_to
from ..utils.errors import UserError, first_line

__all__ = ["AtomicResultsMixin", "AtomicYolactCOCOEvaluator", "ResultsWriteError"]

logger = logging.getLogger(__name__)

_STAGING_PREFIX = ".staging-"


def _staging_writer(name: str):
    if not name.startswith(_STAGING_PREFIX):
        return None
    try:
        return int(name[len(_STAGING_PREFIX):].split("-")[0])
    except ValueError:
        return None


def _remove_stale_staging(folder: str) -> None:
    for path in stale_entries(folder, _staging_writer):  # not those of another evaluation still running
        shutil.rmtree(path, ignore_errors=True)
        logger.warning(f"Removed {path}, left by an interrupted evaluation")


# The files COCOEvaluator.evaluate writes, in the order it writes them.
_RESULT_FILES = ("instances_predictions.pth", "coco_instances_results.json")


class ResultsWriteError(UserError, OSError):
    """An evaluation result file could not be written (full disk, no permission, ...)."""


def _is_write_failure(exc: BaseException) -> bool:
    """A failed write: an OSError with an errno (in the chain), or torch's wrapped write error."""
    text = first_line(exc)
    return os_error_in(exc) is not None or (
        isinstance(exc, RuntimeError) and ("enforce fail" in text or "write failed" in text or "No space" in text)
    )


def _write_error(final_dir: str, staging: str, exc: BaseException) -> ResultsWriteError:
    present = [n for n in _RESULT_FILES if os.path.exists(os.path.join(staging, n))]
    name = present[-1] if present else _RESULT_FILES[0]  # the one being written when it failed
    os_error = os_error_in(exc)
    if os_error is not None:
        cause = f"{os_error.strerror or os.strerror(os_error.errno)} ({errno.errorcode.get(os_error.errno, '?')})"
    elif "No space" in first_line(exc) or "enforce fail" in first_line(exc):
        cause = f"the write failed, most likely a full disk (torch: {first_line(exc)})"
    else:
        cause = f"{type(exc).__name__}: {first_line(exc)}"
    return ResultsWriteError(
        f"cannot write evaluation results {os.path.join(final_dir, name)}",
        f"{cause}; {free_space_text(final_dir)} on {final_dir}; the previous result files (if any) are kept",
        fix="free some space or write the evaluation to another OUTPUT_DIR",
    )


class AtomicResultsMixin:
    """Put before ``COCOEvaluator`` (or a subclass) in the bases: result files are written
    atomically (module docstring). Everything else is unchanged."""

    def evaluate(self, *args, **kwargs):
        final_dir = results_folder(self)
        if not final_dir or "://" in final_dir or not comm.is_main_process():
            return super().evaluate(*args, **kwargs)
        os.makedirs(final_dir, exist_ok=True)
        _remove_stale_staging(final_dir)
        staging = tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=final_dir)
        try:
            try:
                with results_written_to(self, staging):
                    results = super().evaluate(*args, **kwargs)
            except (OSError, RuntimeError) as e:
                if not _is_write_failure(e):
                    raise
                raise _write_error(final_dir, staging, e) from e
            for name in sorted(os.listdir(staging)):
                source = os.path.join(staging, name)
                if not os.path.isfile(source):
                    continue
                publish_file(source, os.path.join(final_dir, name))
                logger.info(f"Wrote {os.path.join(final_dir, name)}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return results


class AtomicYolactCOCOEvaluator(AtomicResultsMixin, YolactCOCOEvaluator):
    """:class:`~yolact_d2.evaluation.YolactCOCOEvaluator` whose result files are written atomically:
    what ``YolactTrainer``, ``yolact-train --eval-only`` and the LazyConfigs evaluate with."""
