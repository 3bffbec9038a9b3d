"""The count of the training images skipped by ``DATALOADER.SKIP_BAD_IMAGES`` (docs/RELIABILITY.md).

Why the count travels with the batch: the mapper runs in the DataLoader's worker processes
(``DATALOADER.NUM_WORKERS > 0``), while Detectron2's EventStorage, metrics.json and the checkpoints
are the main process's. So the mapper logs each skip where it happens and reports it in the next
dict it returns; in the main process :meth:`SkippedImages.batches` takes the reports out of each
batch before the model sees it and counts them, and the trainer puts the running total in the
EventStorage after every step (``bad_images_skipped`` in metrics.json) and in its checkpoints (the
total continues after ``--resume``). Each process counts the images of its own loader.
"""
import logging
from typing import Dict, Iterable, Iterator

from ..data.dataset_mapper import SKIPPED_IMAGES_KEY

__all__ = ["SkippedImages"]

logger = logging.getLogger(__name__)


class SkippedImages:
    """The skipped training images of this process: ``count`` skips (an image drawn again is skipped
    again) of ``files`` (file name -> message, in the order of their first skip)."""

    def __init__(self, skipping: bool = True):
        self.skipping = skipping  # DATALOADER.SKIP_BAD_IMAGES: the end of training says "none" too
        self.count = 0
        self.files: Dict[str, str] = {}

    def batches(self, loader: Iterable) -> Iterator:
        """The batches of ``loader`` without the mapper's reports, which are counted and logged."""
        for batch in loader:
            for d in batch:
                reports = d.pop(SKIPPED_IMAGES_KEY, None) if isinstance(d, dict) else None
                for file_name, message in reports or ():
                    self.count += 1
                    self.files.setdefault(file_name, message)
                    logger.warning(
                        f"Bad training images skipped so far: {self.count} ({len(self.files)} "
                        f"distinct file(s)); latest: {file_name}"
                    )
            yield batch

    def put_total(self, storage) -> None:
        """The running total into the EventStorage (``bad_images_skipped`` in metrics.json); called
        after each step, before the hooks' ``after_step``, so that it is in that iteration's record."""
        if self.count:
            storage.put_scalar("bad_images_skipped", self.count, smoothing_hint=False)

    def log_total(self) -> None:
        """At the end of training: the total and the first 20 files."""
        if self.count:
            shown = "\n  ".join(list(self.files.values())[:20]) + ("\n  ..." if len(self.files) > 20 else "")
            logger.warning(
                f"Training skipped bad images {self.count} time(s) in total, "
                f"{len(self.files)} distinct file(s) (DATALOADER.SKIP_BAD_IMAGES; this process):\n  {shown}"
            )
        elif self.skipping:
            logger.info("No bad training image was skipped.")

    def state_dict(self) -> dict:
        return {"count": self.count, "files": dict(self.files)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.count = int(state_dict.get("count", 0))
        self.files = dict(state_dict.get("files", {}))
