"""Atomic result files for ``COCOEvaluator`` subclasses (docs/RELIABILITY.md).

``COCOEvaluator.evaluate`` writes ``instances_predictions.pth`` and ``coco_instances_results.json``
straight into its output folder, so an evaluation killed while writing leaves truncated files
that look like results. :class:`AtomicResultsMixin` lets the evaluator write them into a private
staging folder inside the output folder and, once ``evaluate`` has finished, flushes each file to
disk and renames it into the output folder (an atomic replace). An interrupted evaluation
therefore leaves the previous complete files (or none), never partial ones, and running it again
gives the same files and metrics. Staging folders of processes that no longer exist are removed.
"""
import logging
import os
import shutil
import tempfile

from detectron2.utils import comm

from ..utils.atomic_io import publish_file, stale_entries

__all__ = ["AtomicResultsMixin"]

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


class AtomicResultsMixin:
    """Put before ``COCOEvaluator`` (or a subclass) in the bases: result files are written
    atomically (module docstring). Everything else is unchanged."""

    def evaluate(self, *args, **kwargs):
        final_dir = getattr(self, "_output_dir", None)
        if not final_dir or "://" in final_dir or not comm.is_main_process():
            return super().evaluate(*args, **kwargs)
        os.makedirs(final_dir, exist_ok=True)
        _remove_stale_staging(final_dir)
        staging = tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=final_dir)
        self._output_dir = staging
        try:
            results = super().evaluate(*args, **kwargs)
            for name in sorted(os.listdir(staging)):
                source = os.path.join(staging, name)
                if not os.path.isfile(source):
                    continue
                publish_file(source, os.path.join(final_dir, name))
                logger.info(f"Wrote {os.path.join(final_dir, name)}")
        finally:
            self._output_dir = final_dir
            shutil.rmtree(staging, ignore_errors=True)
        return results
