"""SkippedImages (yolact_d2/engine/skipped_images.py): the reports of DATALOADER.SKIP_BAD_IMAGES taken
out of the batches, counted, logged, put in the event storage and kept in checkpoints. The trainer-level
runs (the count in metrics.json, loader workers, --resume) are in tests/test_reliability_inputs.py."""
from detectron2.utils.events import EventStorage

from yolact_d2.data.dataset_mapper import SKIPPED_IMAGES_KEY
from yolact_d2.engine.skipped_images import SkippedImages

from conftest import captured


def _batches():
    return [
        [{"image_id": 1, SKIPPED_IMAGES_KEY: [("x.jpg", "Image file x.jpg: not found")]}, {"image_id": 2}],
        [{"image_id": 3}],
        [{"image_id": 4, SKIPPED_IMAGES_KEY: [("x.jpg", "x again"), ("y.jpg", "Cannot read image y.jpg: truncated")]}],
    ]


def _text(records):
    return "\n".join(r.getMessage() for r in records)


def test_reports_are_taken_out_counted_and_logged():
    skipped = SkippedImages()
    with captured() as records:
        batches = list(skipped.batches(_batches()))
    assert [[d["image_id"] for d in batch] for batch in batches] == [[1, 2], [3], [4]]
    assert not any(SKIPPED_IMAGES_KEY in d for batch in batches for d in batch)
    assert skipped.count == 3  # x.jpg twice: each skip counts
    assert skipped.files == {"x.jpg": "Image file x.jpg: not found", "y.jpg": "Cannot read image y.jpg: truncated"}
    assert _text(records).splitlines() == [
        "Bad training images skipped so far: 1 (1 distinct file(s)); latest: x.jpg",
        "Bad training images skipped so far: 2 (1 distinct file(s)); latest: x.jpg",
        "Bad training images skipped so far: 3 (2 distinct file(s)); latest: y.jpg",
    ]


def test_total_in_the_event_storage_and_at_the_end():
    skipped = SkippedImages()
    with EventStorage(start_iter=5) as storage:
        skipped.put_total(storage)
        assert "bad_images_skipped" not in storage.latest()  # nothing skipped yet: nothing written
        list(skipped.batches(_batches()))
        skipped.put_total(storage)
        assert storage.latest()["bad_images_skipped"] == (3, 5)
    with captured() as records:
        skipped.log_total()
    assert _text(records) == (
        "Training skipped bad images 3 time(s) in total, 2 distinct file(s) (DATALOADER.SKIP_BAD_IMAGES; "
        "this process):\n  Image file x.jpg: not found\n  Cannot read image y.jpg: truncated"
    )
    with captured() as records:
        SkippedImages(skipping=True).log_total()
        SkippedImages(skipping=False).log_total()  # skipping off: a bad image stops training instead
    assert _text(records) == "No bad training image was skipped."


def test_state_round_trip():
    skipped = SkippedImages()
    list(skipped.batches(_batches()))
    restored = SkippedImages()
    restored.load_state_dict(skipped.state_dict())
    assert (restored.count, restored.files) == (3, skipped.files)
    restored.load_state_dict({})  # a checkpoint without the count
    assert (restored.count, restored.files) == (0, {})
