"""Reliability with bad inputs (docs/RELIABILITY.md): image files, annotations and configs.

Every case is constructed here. Each consumer (training mapper, evaluation mapper, predictor,
demo) either handles it correctly or fails with a message naming the file; bad annotations are
fixed or dropped with a warning naming the image and the annotation id; bad configs fail before
training starts. Tiny images, the ResNet-18 helper config, one thread.
"""
import importlib.util
import itertools
import json
import os
import sys
import uuid

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.structures import BoxMode

from yolact_d2.data.annotation_checks import AnnotationError
from yolact_d2.data.dataset_mapper import SKIPPED_IMAGES_KEY, YolactDatasetMapper
from yolact_d2.data.datasets import generate_synthetic_dataset, register_datasets_from_config
from yolact_d2.data.detection_utils import BadImageError, read_image_file
from yolact_d2.data.transforms import SquashResize
from yolact_d2.demo import run_images
from yolact_d2.runtime.checkpointer import AtomicDetectionCheckpointer, IncompatibleCheckpointError

from conftest import captured, tiny_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S = 128  # network input of the tiny config (P7 stride)


pytestmark = pytest.mark.usefixtures("one_thread")




def _text(records):
    return "\n".join(r.getMessage() for r in records)


def _unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------------
# Image files
# ------------------------------------------------------------------------------------------------
H, W = 40, 60


def _picture(h=H, w=W):
    """BGR uint8: a flat background with two coloured rectangles."""
    img = np.empty((h, w, 3), np.uint8)
    img[...] = (30, 60, 90)
    img[h // 8 : h // 2, w // 8 : w // 2] = (200, 40, 120)
    img[h // 2 : h - 2, w // 2 : w - 2] = (20, 220, 60)
    return img


def _write_jpeg(path, img=None):
    assert cv2.imwrite(str(path), _picture() if img is None else img)
    return str(path)


BAD_FILES = {
    # kind: (file name, writer, words expected in the message)
    "missing": ("missing.jpg", None, "not found"),
    "zero_bytes": ("empty.jpg", lambda p: p.write_bytes(b""), "empty (0 bytes)"),
    "truncated_jpeg": ("truncated.jpg", "truncate", "truncated"),
    "text_as_png": ("notes.png", lambda p: p.write_bytes(b"just some text, not pixels\n" * 20), "not an image"),
    "random_as_jpg": (
        "noise.jpg",
        lambda p: p.write_bytes(np.random.default_rng(0).integers(0, 256, 700, dtype=np.uint8).tobytes()),
        "not an image",
    ),
}


def make_bad_file(tmp_path, kind):
    name, writer, words = BAD_FILES[kind]
    path = tmp_path / name
    if writer == "truncate":
        full = tmp_path / "full.jpg"
        rng = np.random.default_rng(1)  # noisy picture: big JPEG, truncated in the middle of the scan
        _write_jpeg(full, rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        data = full.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif writer is not None:
        writer(path)
    return str(path), words


def _dict(path, h=H, w=W, annos=None, image_id=1):
    d = {"file_name": path, "height": h, "width": w, "image_id": image_id}
    if annos is None:
        annos = [_anno(1, [4, 4, 20, 14])]
    d["annotations"] = annos
    return d


def _anno(ann_id, xywh, category=0, segm="box", iscrowd=0):
    x, y, w, h = xywh
    if segm == "box":
        segm = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return {
        "id": ann_id, "bbox": list(xywh), "bbox_mode": BoxMode.XYWH_ABS, "category_id": category,
        "segmentation": segm, "iscrowd": iscrowd,
    }


def _mapper(is_train=True, skip=False, image_size=S):
    cfg = tiny_cfg(image_size=image_size, opts=["DATALOADER.SKIP_BAD_IMAGES", skip])
    return YolactDatasetMapper(cfg, is_train=is_train)


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_image_stops_training_naming_the_file(tmp_path, kind):
    path, words = make_bad_file(tmp_path, kind)
    with pytest.raises(BadImageError) as info:
        _mapper(is_train=True)(_dict(path))
    message = str(info.value)
    assert path in message and words in message
    assert "DATALOADER.SKIP_BAD_IMAGES" in message


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_image_stops_evaluation_naming_the_file(tmp_path, kind):
    path, words = make_bad_file(tmp_path, kind)
    for skip in (False, True):  # evaluation never skips
        with pytest.raises(BadImageError) as info:
            _mapper(is_train=False, skip=skip)(_dict(path))
        assert path in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_image_skipped_with_warning_when_asked(tmp_path, kind):
    path, _ = make_bad_file(tmp_path, kind)
    good = _write_jpeg(tmp_path / "good.jpg")
    mapper = _mapper(is_train=True, skip=True)
    with captured() as records:
        assert mapper(_dict(path)) is None  # Detectron2's MapDataset then draws another image
    assert path in _text(records) and "skipping a bad training image" in _text(records)
    assert mapper.num_skipped == 1
    out = mapper(_dict(good, image_id=2))
    assert out is not None and tuple(out["image"].shape) == (3, S, S)
    (reported_file, message), = out[SKIPPED_IMAGES_KEY]  # counted by the trainer
    assert reported_file == path and path in message
    assert SKIPPED_IMAGES_KEY not in mapper(_dict(good, image_id=2))


class _StubDemo:
    """Stands in for yolact_d2.demo.VisualizationDemo: records the arrays it gets, draws nothing."""

    def __init__(self):
        self.images = []

    def run_on_image(self, bgr):
        self.images.append(bgr)
        return [], bgr


def test_demo_reports_every_bad_file_and_goes_on(tmp_path):
    paths, words = [], []
    for kind in sorted(BAD_FILES):
        folder = tmp_path / kind
        folder.mkdir()
        path, word = make_bad_file(folder, kind)
        paths.append(path)
        words.append(word)
    good = _write_jpeg(tmp_path / "good.jpg")
    stub = _StubDemo()
    outputs = [str(tmp_path / f"out{i}.png") for i in range(len(paths) + 1)]
    with captured("yolact_demo") as records:
        status = run_images(stub, paths + [good], [], outputs)
    log = _text(records)
    assert status == 1
    assert f"1 image(s) succeeded, {len(paths)} failed" in log
    for path, word in zip(paths, words):
        assert path in log and word in log
    assert len(stub.images) == 1 and os.path.isfile(outputs[-1])


# ---- unusual but valid images: handled correctly everywhere --------------------------------------
def _gray_png(tmp_path):
    gray = cv2.cvtColor(_picture(), cv2.COLOR_BGR2GRAY)
    path = str(tmp_path / "gray.png")
    cv2.imwrite(path, gray)
    return path, np.repeat(gray[:, :, None], 3, axis=2)  # expected BGR


def _rgba_png(tmp_path):
    bgr = _picture()
    rgba = np.concatenate([bgr[:, :, ::-1], np.full((H, W, 1), 77, np.uint8)], axis=2)
    path = str(tmp_path / "rgba.png")
    Image.fromarray(rgba, mode="RGBA").save(path)
    return path, bgr


def _png16(tmp_path):
    wide = (np.arange(H * W, dtype=np.float64).reshape(H, W) / (H * W - 1) * 65535).astype(np.uint16)
    path = str(tmp_path / "depth16.png")
    cv2.imwrite(path, wide)
    assert Image.open(path).mode.startswith("I;16")
    eight = np.round(wide.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    assert eight.max() == 255 and eight.min() == 0  # the full range is used, nothing is clipped
    return path, np.repeat(eight[:, :, None], 3, axis=2)


def _exif_jpeg(tmp_path):
    raw = _picture()  # stored 60 wide x 40 high, EXIF orientation 6: displayed rotated by 90 deg
    exif = Image.Exif()
    exif[0x0112] = 6
    path = str(tmp_path / "rotated.jpg")
    Image.fromarray(raw[:, :, ::-1]).save(path, exif=exif.tobytes(), quality=95)
    with Image.open(path) as stored:  # the pixels as stored, without the EXIF rotation
        decoded_raw = np.asarray(stored.convert("RGB"))[:, :, ::-1]
    assert decoded_raw.shape == (H, W, 3)
    return path, np.ascontiguousarray(np.rot90(decoded_raw, k=-1))  # orientation 6 = 90 deg clockwise


def _tiny(size):
    def make(tmp_path):
        img = np.full((size, size, 3), (10, 120, 240), np.uint8)
        path = str(tmp_path / f"tiny{size}.png")
        cv2.imwrite(path, img)
        return path, img
    return make


VALID_IMAGES = {
    "grayscale": _gray_png,
    "rgba_png": _rgba_png,
    "png_16bit": _png16,
    "exif_rotated_jpeg": _exif_jpeg,
    "1x1": _tiny(1),
    "8x8": _tiny(8),
}


@pytest.mark.parametrize("kind", sorted(VALID_IMAGES))
def test_unusual_images_are_read_correctly(tmp_path, kind):
    path, expected_bgr = VALID_IMAGES[kind](tmp_path)
    bgr = read_image_file(path, "BGR")
    assert bgr.dtype == np.uint8 and bgr.shape == expected_bgr.shape
    np.testing.assert_array_equal(bgr, expected_bgr)
    np.testing.assert_array_equal(read_image_file(path, "RGB"), bgr[:, :, ::-1])


@pytest.mark.parametrize("kind", sorted(VALID_IMAGES))
def test_unusual_images_through_train_and_eval_mappers(tmp_path, kind):
    path, expected_bgr = VALID_IMAGES[kind](tmp_path)
    h, w = expected_bgr.shape[:2]
    annos = [_anno(1, [0, 0, w, h])]
    np.random.seed(0)
    out = _mapper(is_train=True)(_dict(path, h, w, annos))
    assert out is not None and tuple(out["image"].shape) == (3, S, S)
    assert len(out["instances"]) == 1
    out = _mapper(is_train=False)(_dict(path, h, w))
    assert tuple(out["image"].shape) == (3, S, S) and (out["height"], out["width"]) == (h, w)
    expected = cv2.resize(expected_bgr[:, :, ::-1].astype(np.float32), (S, S))  # tiny_cfg is RGB
    np.testing.assert_allclose(out["image"].permute(1, 2, 0).numpy(), expected, atol=1e-3)


@pytest.fixture(scope="module")
def predictor():
    from yolact_d2 import YolactPredictor

    torch.manual_seed(0)
    return YolactPredictor(tiny_cfg(opts=["MODEL.YOLACT.SCORE_THRESH_TEST", 0.0]))


@pytest.mark.parametrize("kind", sorted(VALID_IMAGES))
def test_unusual_images_through_the_predictor(tmp_path, predictor, kind):
    path, _ = VALID_IMAGES[kind](tmp_path)
    bgr = read_image_file(path, "BGR")
    instances = predictor(bgr)["instances"]
    assert instances.image_size == bgr.shape[:2]
    assert instances.pred_masks.shape[1:] == bgr.shape[:2]


@pytest.mark.parametrize("kind", sorted(VALID_IMAGES))
def test_unusual_images_through_the_demo(tmp_path, kind):
    path, expected_bgr = VALID_IMAGES[kind](tmp_path)
    stub = _StubDemo()
    out = str(tmp_path / "drawn.png")
    with captured("yolact_demo"):
        assert run_images(stub, [path], [], [out]) == 0
    (got,) = stub.images
    np.testing.assert_array_equal(got, expected_bgr)
    assert cv2.imread(out).shape == expected_bgr.shape


def test_predictor_rejects_16bit_and_nan_arrays_clearly(predictor):
    wide = np.full((8, 8, 3), 4000, np.uint16)
    with pytest.raises(ValueError, match=r"0\.\.255.*16-bit"):
        predictor(wide)
    nan = np.full((8, 8, 3), np.nan, np.float32)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        predictor(nan)
    ok = predictor(np.full((8, 8, 3), 200, np.uint16))["instances"]  # values in range: accepted
    assert ok.image_size == (8, 8)


def test_very_large_image_is_cheap_through_the_mappers(tmp_path):
    """6000 x 4000 photo (mostly uniform PNG): the training mapper first downscales it to
    ceil(IMAGE_SIZE / 0.3) so the SSD expand does not allocate gigabytes."""
    big = np.full((4000, 6000, 3), 120, np.uint8)
    cv2.rectangle(big, (600, 400), (3000, 2000), (10, 200, 30), -1)
    path = str(tmp_path / "big.png")
    cv2.imwrite(path, big)
    annos = [_anno(5, [600, 400, 2401, 1601])]
    mapper = _mapper(is_train=True)
    assert mapper.max_input_size == 427  # ceil(128 / 0.3)
    np.random.seed(0)
    out = mapper(_dict(path, 4000, 6000, annos))
    assert tuple(out["image"].shape) == (3, S, S) and len(out["instances"]) == 1
    # geometry: squash only (deterministic), box scaled from the file's coordinates
    only_resize = YolactDatasetMapper(
        is_train=True, augmentations=[SquashResize(S)], image_format="BGR", max_input_size=427
    )
    box = only_resize(_dict(path, 4000, 6000, annos))["instances"].gt_boxes.tensor[0].numpy()
    np.testing.assert_allclose(box, [600 * S / 6000, 400 * S / 4000, 3001 * S / 6000, 2001 * S / 4000], atol=0.05)
    out = _mapper(is_train=False)(_dict(path, 4000, 6000))
    assert tuple(out["image"].shape) == (3, S, S) and (out["height"], out["width"]) == (4000, 6000)


def test_json_size_that_disagrees_with_the_file(tmp_path):
    path = _write_jpeg(tmp_path / "img.jpg")
    wrong = _dict(path, h=H + 10, w=W)
    for is_train in (True, False):
        with pytest.raises(BadImageError) as info:
            _mapper(is_train=is_train)(wrong)
        assert path in str(info.value) and f"{W}x{H}" in str(info.value) and f"height {H + 10}" in str(info.value)
    mapper = _mapper(is_train=True, skip=True)
    with captured() as records:
        assert mapper(wrong) is None
    assert path in _text(records)


def test_exif_rotation_and_json_size(tmp_path):
    path, rotated = _exif_jpeg(tmp_path)
    h, w = rotated.shape[:2]  # 60 high, 40 wide once rotated
    out = _mapper(is_train=False)(_dict(path, h, w))
    assert (out["height"], out["width"]) == (60, 40)
    with pytest.raises(BadImageError, match="EXIF orientation 6") as info:
        _mapper(is_train=True)(_dict(path, w, h))  # json with the stored (unrotated) size
    assert path in str(info.value)


# ------------------------------------------------------------------------------------------------
# Training with bad images (YolactTrainer)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    train = generate_synthetic_dataset(str(root), "train", 6, seed=5, image_size=(96, 128))
    return train, os.path.join(str(root), "train")


def _copy_dataset(synthetic, tmp_path, break_files=()):
    """A copy of the small synthetic training set in tmp_path, with some image files broken."""
    json_file, image_root = synthetic
    images = tmp_path / "images"
    images.mkdir()
    with open(json_file) as f:
        data = json.load(f)
    for entry in data["images"]:
        (images / entry["file_name"]).write_bytes(open(os.path.join(image_root, entry["file_name"]), "rb").read())
    broken = []
    for index, how in break_files:
        target = images / data["images"][index]["file_name"]
        target.write_bytes(b"" if how == "empty" else target.read_bytes()[:300])
        broken.append(str(target))
    new_json = tmp_path / "train.json"
    new_json.write_text(json.dumps(data))
    return str(new_json), str(images), broken


def _trainer_cfg(tmp_path, json_file, image_root, *opts):
    name = _unique("rel_train")
    cfg = tiny_cfg(num_classes=6, opts=[
        "DATASETS.COCO_INSTANCES", [[name, json_file, image_root]],
        "DATASETS.TRAIN", (name,), "DATASETS.TEST", (),
        "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", 0.001,
        "SOLVER.WARMUP_ITERS", 0, "SOLVER.STEPS", (), "SOLVER.MAX_ITER", 3,
        "SOLVER.CHECKPOINT_PERIOD", 1000, "TEST.EVAL_PERIOD", 0, "SEED", 1,
        "OUTPUT_DIR", str(tmp_path / "out"), *opts,
    ])
    register_datasets_from_config(cfg)
    return cfg


def test_training_stops_on_a_bad_image_by_default(synthetic, tmp_path):
    from yolact_d2 import YolactTrainer

    # one good image of three: any batch of two distinct images holds a bad one
    damage = [(0, "empty"), (1, "truncate"), (3, "empty"), (4, "truncate"), (5, "empty")]
    json_file, image_root, broken = _copy_dataset(synthetic, tmp_path, damage)
    cfg = _trainer_cfg(tmp_path, json_file, image_root, "SOLVER.MAX_ITER", 1)
    trainer = YolactTrainer(cfg)
    with pytest.raises(BadImageError) as info:
        trainer.train()
    assert any(path in str(info.value) for path in broken)
    assert "DATALOADER.SKIP_BAD_IMAGES True" in str(info.value)


def test_training_skips_and_counts_bad_images_when_asked(synthetic, tmp_path):
    from yolact_d2 import YolactTrainer

    json_file, image_root, broken = _copy_dataset(synthetic, tmp_path, [(1, "empty"), (4, "truncate")])
    # 4 iterations x 2 images cover the first shuffled pass over the 6 images: both bad ones
    cfg = _trainer_cfg(tmp_path, json_file, image_root, "DATALOADER.SKIP_BAD_IMAGES", True, "SOLVER.MAX_ITER", 4)
    with captured() as records:
        trainer = YolactTrainer(cfg)
        trainer.train()
    log = _text(records)
    for path in broken:
        assert "skipping a bad training image" in log and path in log
    assert "Bad training images skipped so far: 1 " in log
    assert "Training skipped bad images" in log and "2 distinct file(s)" in log
    with open(os.path.join(cfg.OUTPUT_DIR, "metrics.json")) as f:
        records_json = [json.loads(line) for line in f if line.strip()]
    assert records_json[-1]["bad_images_skipped"] >= 2


def test_skips_in_loader_workers_are_counted_in_the_main_process(synthetic, tmp_path):
    """With DATALOADER.NUM_WORKERS > 0 the mapper skips in the worker processes: the reports travel
    with the batches and are counted where the trainer runs."""
    from detectron2.data import build_detection_train_loader
    from detectron2.data.samplers import TrainingSampler

    from yolact_d2.engine.skipped_images import SkippedImages

    json_file, image_root, broken = _copy_dataset(synthetic, tmp_path, [(1, "empty"), (4, "truncate")])
    cfg = _trainer_cfg(tmp_path, json_file, image_root, "DATALOADER.SKIP_BAD_IMAGES", True)
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
    mapper = YolactDatasetMapper(cfg, is_train=True)
    loader = build_detection_train_loader(
        dataset=dicts, mapper=mapper, total_batch_size=2, num_workers=2, aspect_ratio_grouping=False,
        sampler=TrainingSampler(len(dicts), seed=3),
    )
    skipped = SkippedImages()
    with captured() as records:
        batches = list(itertools.islice(skipped.batches(loader), 12))  # 24 good images of 6, 2 of them bad
    assert all(len(batch) == 2 and SKIPPED_IMAGES_KEY not in d for batch in batches for d in batch)
    assert mapper.num_skipped == 0  # the main process's mapper skipped nothing: its copies in the workers did
    assert sorted(skipped.files) == sorted(broken) and skipped.count >= 2
    assert f"Bad training images skipped so far: {skipped.count} (2 distinct file(s))" in _text(records)


def test_the_skipped_count_continues_after_resume(synthetic, tmp_path):
    from yolact_d2 import YolactTrainer

    json_file, image_root, broken = _copy_dataset(synthetic, tmp_path, [(1, "empty"), (4, "truncate")])
    cfg = _trainer_cfg(tmp_path, json_file, image_root, "DATALOADER.SKIP_BAD_IMAGES", True, "SOLVER.MAX_ITER", 4)
    with captured():
        trainer = YolactTrainer(cfg)
        trainer.train()  # model_final.pth at the last iteration
    count, files = trainer.skipped_images.count, dict(trainer.skipped_images.files)
    assert count >= 2 and sorted(files) == sorted(broken)
    saved = torch.load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"), map_location="cpu", weights_only=False)
    assert saved["trainer"]["bad_images_skipped"] == {"count": count, "files": files}
    with captured():
        resumed = YolactTrainer(cfg)
        resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4 and resumed.skipped_images.count == count and resumed.skipped_images.files == files


def test_all_images_bad_is_an_error_not_a_loop(synthetic, tmp_path):
    from yolact_d2 import YolactTrainer

    json_file, image_root, _ = _copy_dataset(synthetic, tmp_path, [(i, "empty") for i in range(6)])
    cfg = _trainer_cfg(tmp_path, json_file, image_root, "DATALOADER.SKIP_BAD_IMAGES", True, "SOLVER.MAX_ITER", 1)
    trainer = YolactTrainer(cfg)
    with captured():
        with pytest.raises(RuntimeError, match=r"6 training images in a row could not be used.*empty"):
            trainer.train()


# ------------------------------------------------------------------------------------------------
# Annotations
# ------------------------------------------------------------------------------------------------
def _rle(h, w):
    m = np.zeros((h, w), np.uint8)
    m[2:8, 3:9] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


BAD_ANNOTATIONS = {
    # name: (annotation id, bbox XYWH, segmentation, expected outcome, words)
    "negative_box": (101, [30, 10, -8, 10], "box", "dropped", "zero or negative size"),
    "zero_size_box": (102, [30, 10, 0, 10], "box", "dropped", "zero or negative size"),
    "box_outside": (103, [200, 200, 10, 10], "box", "dropped", "entirely outside"),
    "box_partly_outside": (104, [50, 30, 20, 20], "box", "clipped", "clipped to [50, 30, 60, 40]"),
    "polygon_two_points": (105, [5, 5, 10, 10], [[5, 5, 15, 15]], "dropped", "fewer than 3"),
    "polygon_odd_count": (106, [5, 5, 10, 10], [[5, 5, 15, 5, 15, 15, 5]], "dropped", "odd number"),
    "one_bad_polygon_of_two": (107, [5, 5, 10, 10], [[5, 5, 15, 5, 15, 15, 5, 15], [1, 1, 2]], "kept", "polygon 1"),
    "empty_segmentation": (108, [5, 5, 10, 10], [], "dropped", "empty segmentation"),
    "no_segmentation": (109, [5, 5, 10, 10], None, "dropped", "no segmentation"),
    "rle_wrong_size": (110, [3, 2, 6, 6], "rle_wrong", "dropped", "RLE mask size"),
    "rle_undecodable": (111, [3, 2, 6, 6], {"size": [H, W], "counts": [5, 3]}, "dropped", "cannot be decoded"),
    "nan_box": (112, [5, float("nan"), 10, 10], "box", "dropped", "is not 4 finite numbers"),
}


def _bad_anno(name):
    ann_id, bbox, segm, outcome, words = BAD_ANNOTATIONS[name]
    if segm == "rle_wrong":
        segm = _rle(H // 2, W // 2)
    anno = _anno(ann_id, bbox, segm=segm)
    if segm is None:
        del anno["segmentation"]
    return anno, outcome, words


@pytest.mark.parametrize("name", sorted(BAD_ANNOTATIONS))
def test_bad_annotation_in_the_mapper(tmp_path, name):
    path = _write_jpeg(tmp_path / "img.jpg")
    anno, outcome, words = _bad_anno(name)
    good = _anno(1, [4, 4, 20, 14], category=1)
    mapper = YolactDatasetMapper(is_train=True, augmentations=[SquashResize(S)], image_format="RGB")
    with captured() as records:
        out = mapper(_dict(path, annos=[good, anno], image_id=42))
    log = _text(records)
    assert words in log and path in log and "image_id 42" in log and f"annotation id {anno['id']}" in log
    inst = out["instances"]
    if outcome == "dropped":
        assert len(inst) == 1 and "annotation dropped" in log
    else:
        assert len(inst) == 2
    if name == "box_partly_outside":
        np.testing.assert_allclose(inst.gt_boxes.tensor[1].numpy(), [50 * S / W, 30 * S / H, S, S], rtol=1e-5)
    with captured() as records:  # warned once per annotation, not every epoch
        mapper(_dict(path, annos=[good, anno], image_id=42))
    assert words not in _text(records)


def test_mapper_rejects_a_category_outside_the_classes(tmp_path):
    path = _write_jpeg(tmp_path / "img.jpg")
    pattern = r"img\.jpg \(image_id 1\), annotation id 9: category_id 3 .*NUM_CLASSES 3"
    with pytest.raises(AnnotationError, match=pattern):
        _mapper()(_dict(path, annos=[_anno(9, [4, 4, 20, 14], category=3)]))


def test_only_invalid_annotations_resample_the_image(tmp_path):
    path = _write_jpeg(tmp_path / "img.jpg")
    mapper = YolactDatasetMapper(is_train=True, augmentations=[SquashResize(S)], image_format="RGB")
    with captured():
        assert mapper(_dict(path, annos=[_bad_anno("empty_segmentation")[0]])) is None


def _coco_json(tmp_path, annotations, images=None, categories=None):
    img_dir = tmp_path / "imgs"
    img_dir.mkdir(exist_ok=True)
    if images is None:
        images = []
        for i in range(1, 5):
            name = f"{i}.jpg"
            _write_jpeg(img_dir / name)
            images.append({"id": i, "file_name": name, "height": H, "width": W})
    data = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return str(path), str(img_dir)


def _coco_ann(ann_id, image_id, bbox, segm="box", category=3, iscrowd=0):
    if segm == "box":
        x, y, w, h = bbox
        segm = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    ann = {"id": ann_id, "image_id": image_id, "bbox": bbox, "category_id": category, "iscrowd": iscrowd, "area": 1.0}
    if segm is not None:
        ann["segmentation"] = segm
    return ann


def _register(json_file, image_root, opts=()):
    name = _unique("rel_json")
    cfg = tiny_cfg(num_classes=2, opts=["DATASETS.COCO_INSTANCES", [[name, json_file, image_root]], *opts])
    register_datasets_from_config(cfg)
    return name, cfg


def test_bad_annotations_in_a_json_are_fixed_or_dropped_with_ids(tmp_path):
    anns = [_coco_ann(1, 1, [4, 4, 20, 14])]  # image 1: one good annotation
    for name in sorted(BAD_ANNOTATIONS):
        anno, _, _ = _bad_anno(name)
        segm = anno.get("segmentation", None)
        if isinstance(segm, dict) and isinstance(segm["counts"], bytes):
            segm = dict(segm, counts=segm["counts"].decode())
        anns.append(_coco_ann(anno["id"], 2, anno["bbox"], segm=segm))
    anns.append(_coco_ann(500, 3, [10, 10, 20, 20], segm=_rle(H, W), iscrowd=1))  # image 3: crowd only
    anns.append(_coco_ann(600, 99, [1, 1, 5, 5]))  # unknown image: ignored with a warning
    json_file, image_root = _coco_json(tmp_path, anns)  # image 4: no annotation
    name, _ = _register(json_file, image_root)
    with captured() as records:
        dicts = DatasetCatalog.get(name)
    log = _text(records)
    for bad in BAD_ANNOTATIONS.values():
        assert f"annotation id {bad[0]}" in log and bad[4] in log
    assert "(image_id 2)" in log and json_file in log and "2.jpg" in log
    assert "image_id 99" in log and "annotation problems:" in log
    by_id = {d["image_id"]: d for d in dicts}
    assert len(dicts) == 4
    kept = {a["id"]: a for a in by_id[2]["annotations"]}
    assert sorted(kept) == [104, 107]
    assert kept[104]["bbox"] == [50, 30, 10, 10]  # clipped to the 60 x 40 image
    assert kept[107]["segmentation"] == [[5, 5, 15, 5, 15, 15, 5, 15]]
    assert MetadataCatalog.get(name).thing_classes == ["a", "b"]
    assert {a["category_id"] for d in dicts for a in d["annotations"]} == {0}

    # training filters the crowd-only and empty images (Detectron2 logs how many), evaluation keeps them
    assert sorted(d["image_id"] for d in get_detection_dataset_dicts([name], filter_empty=True)) == [1, 2]
    assert len(get_detection_dataset_dicts([name], filter_empty=False)) == 4
    from yolact_d2 import YolactTrainer

    _, cfg = _register(json_file, image_root, ["DATALOADER.NUM_WORKERS", 0])
    cfg.DATASETS.TEST = (cfg.DATASETS.COCO_INSTANCES[0][0],)
    loader = YolactTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])
    assert len(loader.dataset) == 4


def test_unknown_category_in_a_json_is_an_error_naming_it(tmp_path):
    anns = [_coco_ann(1, 1, [4, 4, 20, 14]), _coco_ann(77, 2, [4, 4, 20, 14], category=5)]
    json_file, image_root = _coco_json(tmp_path, anns)
    name, _ = _register(json_file, image_root)
    with pytest.raises(AnnotationError) as info:
        DatasetCatalog.get(name)
    for words in (json_file, "2.jpg", "image_id 2", "annotation id 77", "category_id 5", "[3, 7]"):
        assert words in str(info.value)


def test_json_without_any_segmentation_is_an_error(tmp_path):
    json_file, image_root = _coco_json(tmp_path, [_coco_ann(1, 1, [4, 4, 20, 14], segm=None)])
    name, _ = _register(json_file, image_root)
    with pytest.raises(ValueError, match="none of its 1 annotations has a segmentation"):
        DatasetCatalog.get(name)


JSON_STRUCTURE_ERRORS = {
    "duplicate_image_id": (lambda d: d["images"].append(dict(d["images"][0])), "image id 1 appears twice"),
    "duplicate_annotation_id": (
        lambda d: d["annotations"].append(dict(d["annotations"][0])), "annotation id 1 appears twice"
    ),
    "duplicate_category_id": (lambda d: d["categories"].append({"id": 3, "name": "c"}), "category id 3 appears twice"),
    "no_categories": (lambda d: d.pop("categories"), "has no 'categories' list"),
    "ignore_flag": (lambda d: d["annotations"][0].update(ignore=1), "annotation id 1 has 'ignore': 1"),
    "bad_image_entry": (lambda d: d["images"].append({"id": 9}), "image entry {'id': 9} needs"),
}


@pytest.mark.parametrize("case", sorted(JSON_STRUCTURE_ERRORS))
def test_json_structure_errors_name_the_file_and_entry(tmp_path, case):
    json_file, image_root = _coco_json(tmp_path, [_coco_ann(1, 1, [4, 4, 20, 14])])
    data = json.loads(open(json_file).read())
    edit, words = JSON_STRUCTURE_ERRORS[case]
    edit(data)
    open(json_file, "w").write(json.dumps(data))
    name, _ = _register(json_file, image_root)
    with pytest.raises(ValueError) as info:
        DatasetCatalog.get(name)
    assert json_file in str(info.value) and words in str(info.value)


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    (tmp_path / "imgs").mkdir()
    name, _ = _register(str(path), str(tmp_path / "imgs"))
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        DatasetCatalog.get(name)


# ------------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------------
def _train_net_module():
    sys.path.insert(0, ROOT)
    try:
        spec = importlib.util.spec_from_file_location("train_net_reliability", os.path.join(ROOT, "train_net.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(ROOT)
    return module


def test_unknown_config_keys_are_errors(tmp_path):
    train_net = _train_net_module()
    config = os.path.join(ROOT, "configs", "Synthetic", "yolact_R_18_FPN_synthetic.yaml")
    # Detectron2 (yacs) rejects unknown keys; train_net.py names where they came from and suggests
    args = train_net.get_parser().parse_args(["--config-file", config, "MODEL.YOLACT.NUM_CLASSSES", "3"])
    with pytest.raises(KeyError, match=r"Non-existent config key: MODEL.YOLACT.NUM_CLASSSES \(in the command "
                       r"line\). Did you mean MODEL.YOLACT.NUM_CLASSES"):
        train_net.setup(args)
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(f'_BASE_: "{config}"\nSOLVER:\n  BASE_LRR: 0.1\n')
    args = train_net.get_parser().parse_args(["--config-file", str(bad_file)])
    pattern = r"Non-existent config key: SOLVER.BASE_LRR \(in .*bad.yaml\). Did you mean SOLVER.BASE_LR"
    with pytest.raises(KeyError, match=pattern):
        train_net.setup(args)
    from detectron2.config import get_cfg

    cfg = get_cfg()  # the plain Detectron2 behaviour
    with pytest.raises(AssertionError, match="Non-existent key: MODEL.YOLACT"):
        cfg.merge_from_list(["MODEL.YOLACT.NUM_CLASSES", "3"])


def test_num_classes_that_disagrees_with_the_dataset(synthetic, tmp_path):
    from yolact_d2 import YolactTrainer
    from yolact_d2.runtime.run_checks import check_num_classes

    json_file, image_root = synthetic
    cfg = _trainer_cfg(tmp_path, json_file, image_root, "MODEL.YOLACT.NUM_CLASSES", 4)
    pattern = r"has 6 classes \(circle, .*\) but MODEL.YOLACT.NUM_CLASSES is 4. Set MODEL.YOLACT.NUM_CLASSES 6"
    with pytest.raises(ValueError, match=pattern):
        YolactTrainer.build_train_loader(cfg)
    with pytest.raises(ValueError, match="MODEL.YOLACT.NUM_CLASSES is 4"):
        check_num_classes(cfg, cfg.DATASETS.TRAIN)


def test_input_size_too_small_for_the_coarsest_level():
    from yolact_d2 import YolactPredictor, YolactTrainer

    cfg = tiny_cfg(image_size=64)
    pattern = r"INPUT.IMAGE_SIZE 64 is smaller than the stride 128 of the coarsest feature level 'p7'"
    with pytest.raises(ValueError, match=pattern):
        YolactTrainer.build_model(cfg)
    with pytest.raises(ValueError, match="INPUT.IMAGE_SIZE 64"):
        YolactPredictor(cfg)
    # fewer levels (and anchor scales) make a small input valid
    YolactTrainer.build_model(tiny_cfg(image_size=64, opts=[
        "MODEL.YOLACT.IN_FEATURES", ["p3", "p4", "p5", "p6"], "MODEL.YOLACT.ANCHOR_SCALES", [[8], [16], [32], [64]],
    ]))


def test_anchor_levels_that_do_not_match_the_feature_levels():
    from yolact_d2 import YolactPredictor, YolactTrainer

    cfg = tiny_cfg(opts=["MODEL.YOLACT.ANCHOR_SCALES", [[24], [48], [96], [192]]])
    pattern = r"ANCHOR_SCALES has 4 levels .* but MODEL.YOLACT.IN_FEATURES has 5"
    with pytest.raises(ValueError, match=pattern):
        YolactTrainer.build_model(cfg)
    with pytest.raises(ValueError, match=pattern):
        YolactPredictor(cfg)
    cfg = tiny_cfg(opts=["MODEL.YOLACT.ANCHOR_ASPECT_RATIOS", [[1.0], [0.5]]])
    with pytest.raises(ValueError, match="ANCHOR_ASPECT_RATIOS has 2 levels"):
        YolactTrainer.build_model(cfg)


# ---- checkpoints of another architecture ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_state():
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    return {k: v.clone() for k, v in build_model(tiny_cfg()).state_dict().items()}


def _load_into_fresh_model(tmp_path, state, num_classes=3, name="ckpt.pth"):
    from detectron2.modeling import build_model

    path = str(tmp_path / name)
    torch.save({"model": state}, path)
    model = build_model(tiny_cfg(num_classes=num_classes))
    AtomicDetectionCheckpointer(model).load(path)
    return model, path


def test_checkpoint_of_another_architecture_is_an_error_with_counts(tmp_path, tiny_state):
    unrelated = {f"layer{i}.conv.weight": torch.zeros(4, 4) for i in range(10)}  # e.g. an unconverted torchvision file
    with pytest.raises(IncompatibleCheckpointError) as info:
        _load_into_fresh_model(tmp_path, unrelated)
    message = str(info.value)
    total = len([k for k in tiny_state if not k.endswith("num_batches_tracked")])
    assert str(tmp_path / "ckpt.pth") in message
    assert f"only 0 of the model's {total} parameter tensors" in message
    assert "10 of its 10 tensors are not used" in message

    wider = {k: torch.zeros(*(2 * s for s in v.shape)) if v.dim() else v for k, v in tiny_state.items()}
    with pytest.raises(IncompatibleCheckpointError, match="have a different shape"):
        _load_into_fresh_model(tmp_path, wider)


def test_compatible_checkpoints_still_load(tmp_path, tiny_state):
    # same architecture, other number of classes: fine-tuning (class-dependent layers skipped)
    model, _ = _load_into_fresh_model(tmp_path, tiny_state, num_classes=5)
    conv1 = "backbone.bottom_up.stem.conv1.weight"
    assert torch.equal(model.state_dict()[conv1], tiny_state[conv1])
    # an ImageNet-style backbone-only checkpoint
    backbone = {k: v for k, v in tiny_state.items() if k.startswith("backbone.bottom_up.")}
    _load_into_fresh_model(tmp_path, backbone)
    # a Mask R-CNN-style state dict: same ResNet, its own FPN and heads
    mask_rcnn = dict(backbone)
    mask_rcnn.update({
        "backbone.fpn_lateral3.weight": torch.zeros(256, 128, 1, 1),
        "proposal_generator.rpn_head.conv.weight": torch.zeros(256, 256, 3, 3),
        "roi_heads.box_predictor.cls_score.weight": torch.zeros(81, 1024),
        "roi_heads.mask_head.predictor.weight": torch.zeros(80, 256, 1, 1),
    })
    _load_into_fresh_model(tmp_path, mask_rcnn)


def test_truncated_checkpoint_names_the_file(tmp_path, tiny_state):
    from detectron2.modeling import build_model

    good = tmp_path / "good.pth"
    torch.save({"model": tiny_state}, str(good))
    partial = tmp_path / "partial.pth"
    partial.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(IncompatibleCheckpointError, match=r"(?s)Cannot load checkpoint .*partial\.pth.*incomplete"):
        AtomicDetectionCheckpointer(build_model(tiny_cfg())).load(str(partial))


def test_predictor_rejects_weights_of_another_architecture(tmp_path):
    from yolact_d2 import YolactPredictor

    path = tmp_path / "other.pth"
    torch.save({"model": {f"layer{i}.weight": torch.zeros(2) for i in range(5)}}, str(path))
    with pytest.raises(IncompatibleCheckpointError, match="other.pth does not fit this model"):
        YolactPredictor(tiny_cfg(opts=["MODEL.WEIGHTS", str(path)]))


def test_bad_weights_stop_before_training(synthetic, tmp_path):
    from yolact_d2 import YolactTrainer

    path = tmp_path / "other.pth"
    torch.save({"model": {f"head{i}.weight": torch.zeros(2) for i in range(5)}}, str(path))
    json_file, image_root = synthetic
    cfg = _trainer_cfg(tmp_path, json_file, image_root, "MODEL.WEIGHTS", str(path))
    trainer = YolactTrainer(cfg)
    with pytest.raises(IncompatibleCheckpointError, match="does not fit this model"):
        trainer.resume_or_load(resume=False)
