"""Counting the training images skipped by ``DATALOADER.SKIP_BAD_IMAGES`` (docs/RELIABILITY.md):
the mapper reports each skip inside the batch, the tally takes the reports out before the model
sees the batch, and the hook puts the count in metrics.json and in checkpoints."""
import logging

from detectron2.engine import HookBase

from ..data.dataset_mapper import SKIPPED_IMAGES_KEY

__all__ = ["BadImageTally", "BadImageCounter"]

logger = logging.getLogger(__name__)


class BadImageTally:
    """Wraps the training data loader in the main process: removes the reports of images skipped
    by :class:`~yolact_d2.data.dataset_mapper.YolactDatasetMapper` from the batches, counts them
    and logs the running count."""

    def __init__(self, loader):
        self.loader = loader
        self.count = 0  # skips (an image drawn again is skipped again)
        self.files = {}  # file name -> message, in order of first skip

    def __iter__(self):
        for batch in self.loader:
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

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


class BadImageCounter(HookBase):
    """Puts the number of skipped bad training images in the event storage
    (``bad_images_skipped`` in metrics.json), logs the total at the end of training and keeps the
    count in checkpoints so that it continues after ``--resume``."""

    def __init__(self, tally: BadImageTally):
        self.tally = tally

    def after_step(self):
        if self.tally.count:
            self.trainer.storage.put_scalar("bad_images_skipped", self.tally.count, smoothing_hint=False)

    def after_train(self):
        files = self.tally.files
        if self.tally.count:
            shown = "\n  ".join(list(files.values())[:20]) + ("\n  ..." if len(files) > 20 else "")
            logger.warning(
                f"Training skipped bad images {self.tally.count} time(s) in total, "
                f"{len(files)} distinct file(s) (DATALOADER.SKIP_BAD_IMAGES; this process):\n  {shown}"
            )
        else:
            logger.info("No bad training image was skipped.")

    def state_dict(self):
        return {"count": self.tally.count, "files": dict(self.tally.files)}

    def load_state_dict(self, state_dict):
        self.tally.count = int(state_dict.get("count", 0))
        self.tally.files = dict(state_dict.get("files", {}))
