"""Each annotation is checked once (yolact_d2.data.annotation_checks): by the json loader of
DATASETS.COCO_INSTANCES when it is loaded, or by the training mapper for dataset dicts of other loaders;
the rules give the same boxes and masks either way.
The degenerate-box rule: data/detection_utils.degenerate_box_side."""
import json
import uuid

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances

from yolact_d2.data import detection_utils
from yolact_d2.data.annotation_checks import (
    CHECKED_FOR_SIZE_KEY,
    AnnotationError,
    CheckedAnnotation,
    annotations_checked_for,
    check_annotation,
)
from yolact_d2.data.dataset_mapper import YolactDatasetMapper
from yolact_d2.data.datasets import register_datasets_from_config
from yolact_d2.data.detection_utils import annotations_to_yolact_instances, degenerate_box_side
from yolact_d2.data.transforms import SquashResize
from yolact_d2.modeling.meta_arch import Yolact

from conftest import captured, tiny_cfg

H, W = 40, 60
XYWH = BoxMode.XYWH_ABS


def _square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _rle(x0, y0, x1, y1, h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(x0, y0, x1, y1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    flat = m.flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    return {"size": [H, W], "counts": ([0] if flat[0] else []) + np.diff(bounds).tolist()}


# ------------------------------------------------------------------------------------------------
# the one function and what it returns
# ------------------------------------------------------------------------------------------------
def test_check_annotation_says_what_it_kept_dropped_and_fixed():
    def check(bbox, segm, size=(H, W), **kw):
        return check_annotation({"bbox": bbox, "segmentation": segm}, *size, bbox_mode=XYWH, **kw)

    ok = check([4, 6, 16, 12], _square(4, 6, 20, 18))
    assert ok == CheckedAnnotation([4.0, 6.0, 20.0, 18.0], [[4.0, 6.0, 20.0, 6.0, 20.0, 18.0, 4.0, 18.0]])
    assert ok.kept and ok.dropped is None and ok.clipped is None and ok.notes == ()

    far = check([50, 30, 20, 20], _square(50, 30, 60, 40))  # 10 px past the image: clipped, with a note
    assert far.box == [50.0, 30.0, 60, 40] and far.clipped.endswith("clipped to [50, 30, 60, 40]")
    near = check([50, 30, 10.5, 10.25], _square(50, 30, 60, 40))  # under 1 px: rounding, no note
    assert near.box == [50.0, 30.0, 60, 40] and near.clipped is None
    unknown = check([50, 30, 20, 20], _square(50, 30, 60, 40), size=(None, None))  # no size: no clipping
    assert unknown.box == [50.0, 30.0, 70.0, 50.0] and unknown.clipped is None

    fixed = check([5, 5, 10, 10], _square(5, 5, 15, 15) + [[1, 1, 2]])
    assert fixed.kept and fixed.segmentation == [[5.0, 5.0, 15.0, 5.0, 15.0, 15.0, 5.0, 15.0]]
    assert fixed.notes == ("polygon 1 has an odd number of coordinates (3): dropped this polygon",)

    nan = check([5, float("nan"), 10, 10], _square(5, 5, 15, 15))
    assert not nan.kept and nan.box is None and nan.segmentation is None
    assert nan.dropped.endswith("is not 4 finite numbers") and nan.notes == ()
    two_points = check([5, 5, 10, 10], [[5, 5, 15, 15]])  # dropped, and the note says which polygon went
    assert two_points.dropped == "no valid polygon left in its segmentation"
    assert two_points.notes == ("polygon 0 has 2 point(s), fewer than 3: dropped this polygon",)
    wrong_size = check([3, 2, 6, 6], _rle(3, 2, 9, 8, h=20))
    assert wrong_size.dropped == "RLE mask size is 60x20 (w x h) but the image is 60x40"

    compressed = check([3, 2, 6, 6], _uncompressed_rle(3, 2, 9, 8)).segmentation
    assert isinstance(compressed["counts"], bytes)  # uncompressed RLE comes out compressed
    assert (mask_util.decode(compressed) == mask_util.decode(_rle(3, 2, 9, 8))).all()

    # INPUT.GT_BOX_SOURCE 'mask': the extent of the mask, whatever the bbox says
    by_mask = check([float("nan")] * 4, _square(4, 6, 20, 18), box_source="mask")
    assert by_mask.kept and by_mask.box == [4.0, 6.0, 20.0, 18.0]
    empty = check([1, 1, 5, 5], _rle(0, 0, 0, 0), box_source="mask")
    assert empty.dropped == "its mask is empty (INPUT.GT_BOX_SOURCE 'mask')"


# ------------------------------------------------------------------------------------------------
# loader and mapper: each annotation checked in one of them
# ------------------------------------------------------------------------------------------------
ANNOTATIONS = [  # (bbox XYWH, segmentation, iscrowd)
    ([0.1, 2.3, 59.9, 17.7], _square(0.1, 2.3, 60, 20)),  # on the right border, fractional: XYXY -> XYWH -> XYXY
    ([50, 30, 20, 20], _square(50, 30, 60, 40)),  # clipped
    ([3.3, 21.7, 10.1, 0.8], _square(3.3, 21.7, 13.4, 22.5)),  # thin
    ([5, 5, 10, 10], _square(5, 5, 15, 15) + [[1, 1, 2]]),  # one bad polygon
    ([28, 8, 24, 24], _rle(30, 10, 50, 30)),  # compressed RLE, 2 px inside its box
    ([21, 22, 8, 16], _uncompressed_rle(21, 22, 29, 38), 1),  # uncompressed RLE, crowd
    ([200, 200, 10, 10], _square(5, 5, 15, 15)),  # outside the image: dropped at load
]


def _write_dataset(tmp_path, with_size=True, annotations=ANNOTATIONS):
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), image)
    entry = {"id": 1, "file_name": "a.png"}
    if with_size:
        entry.update(height=H, width=W)
    data = {
        "images": [entry],
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
        "annotations": [
            {"id": 10 + i, "image_id": 1, "category_id": 3 + 4 * (i % 2), "bbox": a[0], "segmentation": a[1],
             "iscrowd": a[2] if len(a) > 2 else 0}
            for i, a in enumerate(annotations)
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return str(path), str(tmp_path / "imgs")


def _load(json_file, image_root):
    name = f"once_{uuid.uuid4().hex[:8]}"
    entries = [[name, json_file, image_root]]
    register_datasets_from_config(tiny_cfg(num_classes=2, opts=["DATASETS.COCO_INSTANCES", entries]))
    with captured():
        return DatasetCatalog.get(name)


@pytest.fixture
def count_checks(monkeypatch):
    """How many annotations the mapper ran the rules on."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].get("id"))
        return check_annotation(*args, **kwargs)

    monkeypatch.setattr(detection_utils, "check_annotation", counted)
    return calls


def _instances_equal(a: Instances, b: Instances) -> bool:
    if not (torch.equal(a.gt_boxes.tensor, b.gt_boxes.tensor) and torch.equal(a.gt_classes, b.gt_classes)
            and torch.equal(a.gt_is_crowd, b.gt_is_crowd)):
        return False
    if isinstance(a.gt_masks, BitMasks):
        return torch.equal(a.gt_masks.tensor, b.gt_masks.tensor)
    return all(len(p) == len(q) and all(np.array_equal(x, y) for x, y in zip(p, q))
               for p, q in zip(a.gt_masks.polygons, b.gt_masks.polygons))


@pytest.mark.parametrize("box_source,mask_format", [("json", "polygon"), ("json", "bitmask"), ("mask", "polygon")])
def test_the_mapper_does_not_check_again_what_the_loader_checked(tmp_path, count_checks, box_source, mask_format):
    (record,) = _load(*_write_dataset(tmp_path))
    assert record[CHECKED_FOR_SIZE_KEY] == (H, W) and annotations_checked_for(record, (H, W))
    assert [a["id"] for a in record["annotations"]] == [10, 11, 12, 13, 14, 15]  # 16 dropped at load
    unchecked = {k: v for k, v in record.items() if k != CHECKED_FOR_SIZE_KEY}  # as another loader gives it
    mapper = YolactDatasetMapper(tiny_cfg(num_classes=2, image_size=64, opts=[
        "INPUT.GT_BOX_SOURCE", box_source, "INPUT.MASK_FORMAT", mask_format]), is_train=True)
    for seed in range(6):  # the full training augmentation: crops, expands, mirrors
        np.random.seed(seed)
        once = mapper(record)
        assert count_checks == []
        np.random.seed(seed)
        with captured():
            again = mapper(unchecked)
        assert count_checks == [10, 11, 12, 13, 14, 15]
        count_checks.clear()
        if once is None:
            assert again is None
            continue
        assert CHECKED_FOR_SIZE_KEY not in once and set(once) == set(again)
        assert torch.equal(once["image"], again["image"])
        assert _instances_equal(once["instances"], again["instances"])  # the same boxes and masks, bit for bit
    np.random.seed(0)
    only_resize = YolactDatasetMapper(is_train=True, augmentations=[SquashResize(64)], image_format="BGR",
                                      box_source=box_source, degenerate_box_threshold=degenerate_box_side(64))
    boxes = only_resize(record)["instances"].gt_boxes.tensor
    expected = {1: [50, 30, 60, 40], 4: [28, 8, 52, 32] if box_source == "json" else [30, 10, 50, 30]}
    assert len(boxes) == 6
    for i, (x0, y0, x1, y1) in expected.items():
        assert torch.allclose(boxes[i], torch.tensor([x0 * 64 / W, y0 * 64 / H, x1 * 64 / W, y1 * 64 / H]), atol=1e-5)


def test_dicts_of_other_loaders_are_checked_by_the_mapper(tmp_path, count_checks):
    json_file, image_root = _write_dataset(tmp_path)
    (record,) = load_coco_json(json_file, image_root)  # Detectron2's loader: the synthetic splits, COCO
    assert CHECKED_FOR_SIZE_KEY not in record and len(record["annotations"]) == 7
    mapper = YolactDatasetMapper(is_train=True, augmentations=[SquashResize(64)], image_format="BGR")
    with captured() as records:
        out = mapper(record)
    assert len(count_checks) == 7  # every annotation (Detectron2's loader keeps no annotation id)
    assert len(out["instances"]) == 6
    assert "annotation #6: bbox [200, 200, 210, 210] (XYXY) is entirely outside the 60x40 image" in "\n".join(
        r.getMessage() for r in records)


def test_json_without_image_sizes_is_checked_by_the_mapper(tmp_path):
    """The loader cannot clip boxes or compare mask sizes without the image size: such images are
    not marked as checked, and the mapper, which reads the size from the file, checks them."""
    annotations = [([4, 6, 16, 12], _square(4, 6, 20, 18)), ([50, 30, 20, 20], _square(50, 30, 60, 40)),
                   ([3, 2, 6, 6], _rle(3, 2, 9, 8, h=20))]
    (record,) = _load(*_write_dataset(tmp_path, with_size=False, annotations=annotations))
    assert CHECKED_FOR_SIZE_KEY not in record and len(record["annotations"]) == 3
    assert record["annotations"][1]["bbox"] == [50, 30, 20, 20]  # not clipped: the size is unknown
    mapper = YolactDatasetMapper(is_train=True, augmentations=[SquashResize(60)], image_format="BGR")
    with captured() as records:
        out = mapper(record)
    log = "\n".join(r.getMessage() for r in records)
    assert "annotation id 11: bbox [50, 30, 70, 50] (XYXY) extends 10 px outside the 60x40 image" in log
    assert "annotation id 12: RLE mask size is 60x20 (w x h) but the image is 60x40: annotation dropped" in log
    boxes = out["instances"].gt_boxes.tensor
    assert len(boxes) == 2 and torch.allclose(boxes[1], torch.tensor([50, 30 * 60 / H, 60, 60]))


def test_categories_are_compared_with_num_classes_in_the_mapper_for_every_dict(tmp_path):
    """MODEL.YOLACT.NUM_CLASSES is a config value no loader knows: checked-at-load dicts too."""
    (record,) = _load(*_write_dataset(tmp_path))
    mapper = YolactDatasetMapper(tiny_cfg(num_classes=1, image_size=64), is_train=True)
    pattern = r"a\.png \(image_id 1\), annotation id 11: category_id 1 .*NUM_CLASSES 1"
    with pytest.raises(AnnotationError, match=pattern):
        mapper(record)


# ------------------------------------------------------------------------------------------------
# the degenerate-box rule: the original's 4/550 px (4 / IMAGE_SIZE below 550), in the mapper only
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, side", [(128, 4.0 / 128), (550, 4.0 / 550), (700, 4.0 / 550)])
def test_degenerate_box_rule_is_the_originals_4_over_550_px(size, side):
    mapper = YolactDatasetMapper(tiny_cfg(image_size=size), is_train=True)
    assert mapper.degenerate_box_threshold == degenerate_box_side(size) == side
    boxes = [[0, 10, side, 20], [10, 0, 20, side * 1.5], [10, 10, 30, 40]]  # width 4 / size: dropped
    annos = [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "segmentation": _square(10, 10, 30, 40)}
             for b in boxes]
    instances = annotations_to_yolact_instances(annos, (size, size), "polygon", mapper.degenerate_box_threshold)
    assert instances.gt_boxes.tensor.tolist() == torch.tensor(boxes[1:], dtype=torch.float32).tolist()


def test_the_model_leaves_out_degenerate_boxes_of_any_mapper():
    """The model's targets leave out boxes with a side of at most the original's 4/550 px (another mapper's
    instances may hold them); crowd boxes are kept as they come."""
    instances = Instances((16, 16))
    instances.gt_boxes = Boxes(torch.tensor([[1.0, 1.0, 1.005, 9.0], [2.0, 2.0, 8.0, 8.0], [0.0, 0.0, 16.0, 0.005]]))
    instances.gt_classes = torch.tensor([0, 1, 2])
    instances.gt_is_crowd = torch.tensor([False, False, True])
    instances.gt_masks = BitMasks(torch.ones(3, 16, 16, dtype=torch.bool))
    targets = Yolact.prepare_targets(instances, (16, 16), (16, 16))
    assert targets["classes"].tolist() == [1]  # 0.005 px wide <= 4/550 px: left out
    assert torch.equal(targets["boxes"], instances.gt_boxes.tensor[1:2] / 16)
    assert torch.equal(targets["crowd_boxes"], instances.gt_boxes.tensor[2:] / 16)
    assert targets["masks"].shape == (1, 16, 16)
