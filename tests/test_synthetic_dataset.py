"""Tests for the synthetic COCO-format shapes dataset (yolact_d2.data.datasets.synthetic)."""
import contextlib
import io
import itertools
import json
import os
import time
import uuid

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from yolact_d2.data.datasets import synthetic as syn
from yolact_d2.data.datasets.synthetic import coco_json

NUM_IMAGES = 20
SEED = 0


def _coco(json_path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(json_path)


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth"))
    json_path = syn.generate_synthetic_dataset(root, "train", NUM_IMAGES, SEED)
    return root, json_path, _coco(json_path)


@pytest.fixture
def prefix():
    """A fresh dataset-name prefix; its catalog entries are removed afterwards."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = f"test_synth_{uuid.uuid4().hex[:8]}"
    yield name
    for split in ("train", "val"):
        if f"{name}_{split}" in DatasetCatalog.list():
            DatasetCatalog.remove(f"{name}_{split}")
        MetadataCatalog.remove(f"{name}_{split}")


def _files(directory):
    return {f: open(os.path.join(directory, f), "rb").read() for f in sorted(os.listdir(directory))}


# ------------------------------------------------------------------------------ generation
def test_generation_is_deterministic_and_seed_dependent(tmp_path):
    a = syn.generate_synthetic_dataset(str(tmp_path / "a"), "train", 8, seed=3)
    b = syn.generate_synthetic_dataset(str(tmp_path / "b"), "train", 8, seed=3)
    c = syn.generate_synthetic_dataset(str(tmp_path / "c"), "train", 8, seed=4)
    val = syn.generate_synthetic_dataset(str(tmp_path / "a"), "val", 8, seed=3)

    assert open(a, "rb").read() == open(b, "rb").read()
    imgs_a, imgs_b, imgs_c = (_files(str(tmp_path / d / "train")) for d in "abc")
    assert len(imgs_a) == 8 and imgs_a == imgs_b
    # A different seed or split changes the content, not just the file names.
    assert open(a, "rb").read() != open(c, "rb").read()
    assert all(imgs_a[f] != imgs_c[f] for f in imgs_a)
    imgs_val = _files(str(tmp_path / "a" / "val"))
    assert all(imgs_a[f] != imgs_val[f] for f in imgs_a)
    assert json.load(open(a))["annotations"] != json.load(open(val))["annotations"]

    # Each image has its own stream: asking for fewer images gives the same first images.
    syn.generate_synthetic_dataset(str(tmp_path / "d"), "train", 3, seed=3)
    imgs_d = _files(str(tmp_path / "d" / "train"))
    assert imgs_d == {f: imgs_a[f] for f in list(imgs_a)[:3]}


def test_coco_structure(dataset):
    root, json_path, coco = dataset
    raw = json.load(open(json_path))
    assert [c["id"] for c in raw["categories"]] == [1, 2, 3, 5, 7, 9]  # non-contiguous on purpose
    assert [c["name"] for c in raw["categories"]] == syn.SYNTHETIC_CLASSES
    assert all(c["supercategory"] for c in raw["categories"])
    assert len(coco.imgs) == NUM_IMAGES

    shapes = set()
    for img in coco.imgs.values():
        pixels = cv2.imread(os.path.join(root, "train", img["file_name"]))
        assert img["file_name"].endswith(".jpg")
        assert pixels.shape == (img["height"], img["width"], 3)
        assert 160 <= img["height"] <= 256 and 160 <= img["width"] <= 256
        shapes.add((img["height"], img["width"]))
        n = len(coco.getAnnIds(imgIds=img["id"]))
        assert 1 <= n <= 7  # up to 6 objects + an optional crowd
    assert len(shapes) > NUM_IMAGES // 2 and all(h == w for h, w in shapes)  # random squares

    anns = raw["annotations"]
    assert len({a["id"] for a in anns}) == len(anns)
    cat_ids = {c["id"] for c in raw["categories"]}
    assert {a["category_id"] for a in anns} <= cat_ids
    assert len({a["category_id"] for a in anns}) >= 5
    assert {a["category_id"] for a in anns} & {5, 7, 9}
    for a in anns:
        img = coco.imgs[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0
        assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
        assert a["area"] >= syn.MIN_VISIBLE_PIXELS
        if a["iscrowd"] == 0:
            assert a["segmentation"] and all(
                len(p) >= 6 and len(p) % 2 == 0 and all(isinstance(v, float) for v in p) for p in a["segmentation"]
            )


def test_annotations_match_visible_masks(dataset):
    """Stored polygons / boxes / areas agree with the exact visible masks of the renderer."""
    _, _, coco = dataset
    ious, occluded, multi_piece = [], 0, 0
    for image_id in sorted(coco.imgs):
        sample = syn.render_synthetic_sample(SEED, "train", image_id - 1)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert len(anns) == len(sample["instances"])
        for ann, inst in zip(anns, sample["instances"]):
            visible = inst["mask"]
            assert ann["category_id"] == inst["category_id"]
            assert ann["area"] == visible.sum()
            assert ann["bbox"] == _tight_box(visible)
            assert visible.sum() >= syn.MIN_VISIBLE_PIXELS
            assert visible.sum() >= syn.MIN_VISIBLE_FRACTION * inst["drawn_area"]
            raster = coco.annToMask(ann).astype(bool)
            ious.append((raster & visible).sum() / (raster | visible).sum())
            box = _tight_box(raster)
            assert np.abs(np.subtract(box, ann["bbox"])).max() <= 1
            assert abs(raster.sum() - ann["area"]) <= 0.1 * ann["area"]
            occluded += visible.sum() < 0.9 * inst["drawn_area"]
            multi_piece += ann["iscrowd"] == 0 and len(ann["segmentation"]) > 1
        # Visible parts of different objects are disjoint.
        for a, b in itertools.combinations(sample["instances"], 2):
            assert not (a["mask"] & b["mask"]).any()
    assert min(ious) >= 0.95 and np.mean(ious) >= 0.99
    assert occluded >= 3  # occlusion actually happens in these images
    assert multi_piece >= 1  # an object cut in two by an occluder keeps both pieces


def test_occluded_polygons_do_not_overlap(dataset):
    _, _, coco = dataset
    touching_pairs = 0
    for image_id in coco.imgs:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        for (a, ma), (b, mb) in itertools.combinations(zip(anns, masks), 2):
            ax, ay, aw, ah = a["bbox"]
            bx, by, bw, bh = b["bbox"]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                touching_pairs += 1
            assert (ma & mb).sum() <= 3
    assert touching_pairs >= 3  # overlapping boxes, disjoint masks: occlusion is resolved


def test_polygons_of_mask_with_hole_leave_the_hole_out():
    mask = np.zeros((60, 60), bool)
    mask[10:50, 10:50] = True
    mask[25:35, 20:30] = False  # an occluder inside the object
    polygons = coco_json._mask_to_exact_polygons(mask)
    raster = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, 60, 60))).astype(bool)
    assert not raster[25:35, 20:30].any()
    assert (raster & mask).sum() / (raster | mask).sum() >= 0.97

    split = np.zeros((40, 40), bool)
    split[5:30, 5:15] = split[5:30, 20:35] = True  # one object, two visible pieces
    split[38:40, 0] = True  # a 2-pixel sliver still gets a polygon (crumbs are dropped earlier)
    polygons = coco_json._mask_to_exact_polygons(split)
    assert len(polygons) == 3
    raster = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, 40, 40))).astype(bool)
    assert (raster == split).all()


def test_crowd_annotations_are_rle_of_visible_region(tmp_path):
    json_path = syn.generate_synthetic_dataset(str(tmp_path), "train", 6, SEED, crowd_fraction=1.0)
    coco = _coco(json_path)
    crowds = [a for a in coco.anns.values() if a["iscrowd"]]
    assert len(crowds) >= 4
    for ann in crowds:
        img = coco.imgs[ann["image_id"]]
        assert isinstance(ann["segmentation"]["counts"], str)
        assert ann["segmentation"]["size"] == [img["height"], img["width"]]
        crowd_mask = coco.annToMask(ann).astype(bool)
        assert crowd_mask.sum() == ann["area"]
        assert ann["bbox"] == _tight_box(crowd_mask)
        others = [coco.annToMask(a).astype(bool) for a in coco.imgToAnns[ann["image_id"]] if a is not ann]
        assert all((crowd_mask & m).sum() <= 3 for m in others)
    assert len(coco.imgs) == 6 and len({a["image_id"] for a in crowds}) == len(crowds)


def test_background_is_textured():
    for index in range(6):
        sample = syn.render_synthetic_sample(SEED, "train", index)
        objects = np.zeros((sample["height"], sample["width"]), bool)
        for inst in sample["instances"]:
            objects |= inst["mask"]
        grey = cv2.cvtColor(sample["image"], cv2.COLOR_BGR2GRAY)[~objects].astype(float)
        low, high = np.percentile(grey, [5, 95])
        assert grey.std() > 8 and high - low > 25


def test_image_size_options(tmp_path):
    coco = _coco(syn.generate_synthetic_dataset(str(tmp_path / "a"), "val", 3, 0, image_size=96))
    assert {(i["height"], i["width"]) for i in coco.imgs.values()} == {(96, 96)}
    coco = _coco(syn.generate_synthetic_dataset(str(tmp_path / "b"), "val", 3, 0, image_size=(80, 120)))
    assert {(i["height"], i["width"]) for i in coco.imgs.values()} == {(80, 120)}
    assert cv2.imread(str(tmp_path / "b" / "val" / "000000.jpg")).shape == (80, 120, 3)
    with pytest.raises(ValueError):
        syn.generate_synthetic_dataset(str(tmp_path / "c"), "val", 3, 0, image_size=((100, 50), 64))
    # Random sizes: independent sides, or squares (the default, so that squash-resizing to the
    # model's square input keeps every shape's proportions).
    coco = _coco(syn.generate_synthetic_dataset(str(tmp_path / "d"), "val", 12, 0, image_size=((64, 96), (64, 96))))
    sizes = [(i["height"], i["width"]) for i in coco.imgs.values()]
    assert sum(h != w for h, w in sizes) >= 10 and all(64 <= v <= 96 for hw in sizes for v in hw)
    coco = _coco(syn.generate_synthetic_dataset(str(tmp_path / "e"), "val", 12, 0, image_size=syn.SquareSides(64, 96)))
    sizes = [(i["height"], i["width"]) for i in coco.imgs.values()]
    assert all(h == w and 64 <= h <= 96 for h, w in sizes) and len(set(sizes)) >= 6
    assert coco.dataset["info"]["square"] is True
    assert isinstance(syn.DEFAULT_IMAGE_SIZE, syn.SquareSides)


# ------------------------------------------------------------------------------ registration
def test_registration_is_lazy_and_idempotent(tmp_path, prefix, monkeypatch):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    start = time.perf_counter()
    names = syn.register_synthetic_datasets(num_train=10, num_val=4, prefix=prefix)
    names_again = syn.register_synthetic_datasets(num_train=10, num_val=4, prefix=prefix)
    assert time.perf_counter() - start < 1.0
    assert names == names_again == [f"{prefix}_train", f"{prefix}_val"]
    assert set(names) <= set(DatasetCatalog.list())
    assert not (tmp_path / prefix).exists()  # nothing generated yet

    meta = MetadataCatalog.get(f"{prefix}_train")
    assert meta.thing_classes == syn.SYNTHETIC_CLASSES
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 5: 3, 7: 4, 9: 5}
    assert meta.evaluator_type == "coco"
    assert meta.json_file == str(tmp_path / prefix / "annotations" / "instances_train.json")
    assert meta.image_root == str(tmp_path / prefix / "train")


def test_registered_dataset_generates_then_reuses(tmp_path, prefix):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    root = tmp_path / "synth"
    syn.register_synthetic_datasets(str(root), num_train=12, num_val=4, seed=1, prefix=prefix)
    dicts = DatasetCatalog.get(f"{prefix}_train")
    json_file = MetadataCatalog.get(f"{prefix}_train").json_file
    assert os.path.isfile(json_file)
    assert len(dicts) == 12
    cat_ids = {a["category_id"] for d in dicts for a in d["annotations"]}
    assert cat_ids <= set(range(len(syn.SYNTHETIC_CLASSES)))  # remapped by load_coco_json
    assert cat_ids & {3, 4, 5}  # dataset ids 5/7/9 arrived as contiguous 3/4/5
    for d in dicts:
        assert os.path.isfile(d["file_name"])
        assert d["annotations"] and all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in d["annotations"])
    assert MetadataCatalog.get(f"{prefix}_train").thing_classes == syn.SYNTHETIC_CLASSES

    mtime = os.stat(json_file).st_mtime_ns
    time.sleep(0.01)
    assert DatasetCatalog.get(f"{prefix}_train") == dicts
    assert os.stat(json_file).st_mtime_ns == mtime
    assert not os.path.exists(MetadataCatalog.get(f"{prefix}_val").json_file)  # val still lazy


def test_interrupted_generation_is_regenerated(tmp_path, prefix):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    root = tmp_path / "synth"
    syn.register_synthetic_datasets(str(root), num_train=4, num_val=5, prefix=prefix)
    # Simulate a crash mid-generation: a truncated temp json and a partial image, no json.
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val.json.abc123.tmp").write_text('{"images": [')
    (root / "val").mkdir()
    (root / "val" / "000000.jpg").write_bytes(b"\xff\xd8 truncated")

    dicts = DatasetCatalog.get(f"{prefix}_val")
    assert len(dicts) == 5
    assert cv2.imread(dicts[0]["file_name"]) is not None
    assert json.load(open(MetadataCatalog.get(f"{prefix}_val").json_file))["info"]["num_images"] == 5


def test_stale_dataset_is_regenerated(tmp_path):
    first = syn.ensure_synthetic_dataset(str(tmp_path), "train", 4, seed=0)
    mtime = os.stat(first).st_mtime_ns
    assert syn.ensure_synthetic_dataset(str(tmp_path), "train", 4, seed=0) == first
    assert os.stat(first).st_mtime_ns == mtime
    syn.ensure_synthetic_dataset(str(tmp_path), "train", 6, seed=0)  # e.g. DEFAULT_NUM_TRAIN changed
    assert len(json.load(open(first))["images"]) == 6
