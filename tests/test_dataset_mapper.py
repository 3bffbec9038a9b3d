"""Tests of yolact_d2.data.dataset_mapper.YolactDatasetMapper."""
import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from detectron2.data import transforms as T
from detectron2.structures import BitMasks, BoxMode, PolygonMasks
from detectron2.structures.masks import polygons_to_bitmask

from yolact_d2.data.dataset_mapper import YolactDatasetMapper
from yolact_d2.data.transforms import (
    RandomSSDCrop,
    SquashResize,
    build_yolact_test_augmentation,
    build_yolact_train_augmentation,
)
from yolact_d2.runtime.config_loading import setup_cfg

H, W, S = 40, 60, 32
BG = (10, 20, 30)  # BGR
# name: (x0, y0, x1, y1, BGR colour)
RECTS = {
    "A": (4, 6, 20, 18, (200, 50, 100)),
    "B": (30, 10, 50, 30, (60, 220, 140)),
    "C": (21, 22, 29, 38, (90, 90, 250)),
}


def _rle(x0, y0, x1, y1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return mask_util.encode(np.asfortranarray(m))


def _anno(name, category, segm_kind, iscrowd=0):
    x0, y0, x1, y1, _ = RECTS[name]
    if segm_kind == "polygon":
        segm = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    elif segm_kind == "rle":
        segm = _rle(x0, y0, x1, y1)
    else:  # binary ndarray
        segm = np.zeros((H, W), np.uint8)
        segm[y0:y1, x0:x1] = 1
    return {
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": category,
        "segmentation": segm,
        "iscrowd": iscrowd,
    }


DEGENERATE = {  # zero-width box: dropped by the degenerate-box rule
    "bbox": [10, 30, 0, 5],
    "bbox_mode": BoxMode.XYWH_ABS,
    "category_id": 4,
    "segmentation": [[10, 30, 10, 35, 10, 32]],
    "iscrowd": 0,
}


@pytest.fixture
def image_file(tmp_path):
    img = np.empty((H, W, 3), np.uint8)
    img[...] = BG
    for x0, y0, x1, y1, color in RECTS.values():
        img[y0:y1, x0:x1] = color
    path = str(tmp_path / "img.png")
    cv2.imwrite(path, img)
    return path


def _dataset_dict(path, annos):
    return {"file_name": path, "height": H, "width": W, "image_id": 1, "annotations": annos}


def _all_annos():
    return [
        _anno("A", 1, "polygon"),
        _anno("B", 2, "rle"),
        _anno("C", 3, "rle", iscrowd=1),
        dict(DEGENERATE),
    ]


def _cfg(fmt="BGR", mask_format="polygon", test_mode="squash"):
    cfg = setup_cfg(freeze=False)
    cfg.INPUT.IMAGE_SIZE = S
    cfg.INPUT.FORMAT = fmt
    cfg.INPUT.MASK_FORMAT = mask_format
    cfg.INPUT.TEST_RESIZE_MODE = test_mode
    return cfg


def _flip_scale(box):
    x0, y0, x1, y1 = box
    return [(W - x1) * S / W, y0 * S / H, (W - x0) * S / W, y1 * S / H]


def _mask_bbox(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
@pytest.mark.parametrize("fmt", ["BGR", "RGB"])
def test_mapper_no_crop_keeps_every_instance(image_file, mask_format, fmt):
    mapper = YolactDatasetMapper(
        is_train=True,
        augmentations=[T.RandomFlip(prob=1.0), SquashResize(S)],
        image_format=fmt,
        instance_mask_format=mask_format,
        degenerate_box_threshold=4.0 / S,
    )
    np.random.seed(0)
    out = mapper(_dataset_dict(image_file, _all_annos()))
    img = out["image"]
    assert img.dtype == torch.float32 and tuple(img.shape) == (3, S, S)
    assert (out["height"], out["width"]) == (H, W)
    assert "annotations" not in out
    inst = out["instances"]
    # 4 annotations in, exactly one dropped by the documented degenerate-box rule.
    assert len(inst) == 3
    assert inst.image_size == (S, S)
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == [1, 2, 3]
    assert inst.gt_is_crowd.dtype == torch.bool
    assert inst.gt_is_crowd.tolist() == [False, False, True]
    expected = [_flip_scale(RECTS[k][:4]) for k in "ABC"]
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), expected, rtol=1e-5)

    if mask_format == "bitmask":
        assert isinstance(inst.gt_masks, BitMasks)
        masks = inst.gt_masks.tensor.numpy()
    else:
        assert isinstance(inst.gt_masks, PolygonMasks)
        masks = np.stack([polygons_to_bitmask(p, S, S) for p in inst.gt_masks.polygons])
    assert masks.shape == (3, S, S)
    hwc = img.permute(1, 2, 0).numpy()
    if fmt == "RGB":
        hwc = hwc[:, :, ::-1]
    for mask, box, key in zip(masks, expected, "ABC"):
        assert np.abs(_mask_bbox(mask) - np.array(box)).max() <= 1.0
        interior = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert interior.any()
        colors = hwc[interior]
        np.testing.assert_allclose(colors, np.tile(RECTS[key][4], (len(colors), 1)), atol=1e-3)


def test_mapper_ndarray_segmentation(image_file):
    mapper = YolactDatasetMapper(
        is_train=True,
        augmentations=[SquashResize(S)],
        image_format="BGR",
        instance_mask_format="polygon",
    )
    out = mapper(_dataset_dict(image_file, [_anno("B", 2, "array"), _anno("A", 1, "polygon")]))
    inst = out["instances"]
    assert len(inst) == 2 and inst.gt_is_crowd.tolist() == [False, False]
    mask_b = polygons_to_bitmask(inst.gt_masks.polygons[0], S, S)
    assert np.abs(_mask_bbox(mask_b) - inst.gt_boxes.tensor[0].numpy()).max() <= 1.0


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_mapper_full_pipeline(image_file, mask_format):
    cfg = _cfg(mask_format=mask_format)
    mapper = YolactDatasetMapper(cfg, is_train=True)
    assert mapper.degenerate_box_threshold == pytest.approx(4.0 / S)
    n_cropped = 0
    for seed in range(12):
        np.random.seed(seed)
        out = mapper(_dataset_dict(image_file, _all_annos()))
        assert out is not None  # A and B are never degenerate after any augmentation here
        img = out["image"]
        assert img.dtype == torch.float32 and tuple(img.shape) == (3, S, S)
        inst = out["instances"]
        assert 1 <= len(inst) <= 3
        assert (~inst.gt_is_crowd).any()
        assert set(inst.gt_classes.tolist()) <= {1, 2, 3}
        assert inst.gt_is_crowd.tolist() == [c == 3 for c in inst.gt_classes.tolist()]
        b = inst.gt_boxes.tensor
        assert (b >= 0).all() and (b <= S).all() and (b[:, 2:] > b[:, :2]).all()
        n_cropped += len(inst) < 3
    assert n_cropped > 0  # the crop did drop instances in some runs


def test_build_augmentations(image_file):
    cfg = _cfg(fmt="RGB")
    augs = build_yolact_train_augmentation(cfg)
    assert [type(a).__name__ for a in augs] == [
        "RandomPhotometricDistort",
        "RandomExpand",
        "RandomSSDCrop",
        "RandomFlip",
        "SquashResize",
    ]
    assert augs[0].image_format == "RGB"
    assert augs[1].mean == tuple(cfg.MODEL.PIXEL_MEAN)
    assert augs[4].size == S
    cfg.INPUT.TEST_RESIZE_MODE = "bogus"
    with pytest.raises(ValueError):
        build_yolact_test_augmentation(cfg)


@pytest.mark.parametrize("mode,shape", [("squash", (3, S, S)), ("keep_aspect", (3, 21, S))])
def test_mapper_test_mode(image_file, mode, shape):
    mapper = YolactDatasetMapper(_cfg(test_mode=mode), is_train=False)
    d = _dataset_dict(image_file, _all_annos())
    del d["height"], d["width"]
    out = mapper(d)
    assert tuple(out["image"].shape) == shape and out["image"].dtype == torch.float32
    assert "instances" not in out and "annotations" not in out
    assert (out["height"], out["width"]) == (H, W)
    ref = cv2.resize(cv2.imread(image_file).astype(np.float32), (shape[2], shape[1]))
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), ref)


def test_mapper_crowd_only_input_is_kept(image_file):
    mapper = YolactDatasetMapper(_cfg(), is_train=True)
    np.random.seed(0)
    out = mapper(_dataset_dict(image_file, [_anno("C", 3, "rle", iscrowd=1)]))
    assert out is not None
    assert len(out["instances"]) == 1 and out["instances"].gt_is_crowd.tolist() == [True]


def test_mapper_resamples_when_augmentation_removes_all_non_crowd(image_file):
    annos = [dict(DEGENERATE), _anno("C", 3, "rle", iscrowd=1)]
    kw = dict(
        is_train=True,
        augmentations=[SquashResize(S)],
        image_format="BGR",
        degenerate_box_threshold=4.0 / S,
    )
    assert YolactDatasetMapper(**kw)(_dataset_dict(image_file, annos)) is None
    out = YolactDatasetMapper(resample_if_empty=False, **kw)(_dataset_dict(image_file, annos))
    assert out["instances"].gt_is_crowd.tolist() == [True]


def test_mapper_empty_annotations(image_file):
    mapper = YolactDatasetMapper(
        is_train=True, augmentations=[RandomSSDCrop(), SquashResize(S)], image_format="BGR"
    )
    out = mapper(_dataset_dict(image_file, []))
    inst = out["instances"]
    assert len(inst) == 0 and isinstance(inst.gt_masks, PolygonMasks)
    assert inst.gt_is_crowd.dtype == torch.bool


def _uncompressed_rle(x0, y0, x1, y1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    flat = m.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"counts": counts, "size": [H, W]}


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_mapper_fixed_crop_drops_by_centre_rule_only(image_file, mask_format):
    from yolact_d2.data.transforms import SSDCropTransform

    annos = _all_annos()
    annos[1]["segmentation"] = _uncompressed_rle(*RECTS["B"][:4])
    mapper = YolactDatasetMapper(
        is_train=True,
        augmentations=[SSDCropTransform(24, 5, 30, 35, orig_w=W, orig_h=H)],
        image_format="BGR",
        instance_mask_format=mask_format,
        degenerate_box_threshold=4.0 / S,
    )
    out = mapper(_dataset_dict(image_file, annos))
    assert tuple(out["image"].shape) == (3, 35, 30)
    inst = out["instances"]
    # A (centre (12, 12)) and the degenerate box (centre (10, 32.5)) are outside the crop;
    # B is inside; the crowd C (centre (25, 30)) is inside but cut by the crop's left border.
    assert inst.gt_classes.tolist() == [2, 3]
    assert inst.gt_is_crowd.tolist() == [False, True]
    np.testing.assert_array_equal(inst.gt_boxes.tensor.numpy(), [[6, 5, 26, 25], [0, 17, 5, 33]])
    if mask_format == "bitmask":
        masks = inst.gt_masks.tensor.numpy()
    else:
        masks = np.stack([polygons_to_bitmask(p, 35, 30) for p in inst.gt_masks.polygons])
    for mask, box in zip(masks, inst.gt_boxes.tensor.numpy()):
        assert np.abs(_mask_bbox(mask) - box).max() <= 1.0


def test_mapper_with_base_config_expand_uses_rgb_mean(image_file):
    from yolact_d2.data.transforms import RandomExpand

    from conftest import yolact_cfg

    cfg = yolact_cfg("Base-YOLACT.yaml", ["INPUT.IMAGE_SIZE", S])
    assert cfg.INPUT.FORMAT == "RGB"
    mapper = YolactDatasetMapper(cfg, is_train=True)
    np.random.seed(0)
    assert mapper(_dataset_dict(image_file, _all_annos())) is not None
    # Expand only (no resize): the canvas outside the image is the RGB mean, exactly.
    only_expand = YolactDatasetMapper(
        is_train=True,
        augmentations=[RandomExpand(cfg.MODEL.PIXEL_MEAN, prob=1.0)],
        image_format=cfg.INPUT.FORMAT,
    )
    np.random.seed(1)
    out = only_expand(_dataset_dict(image_file, _all_annos()))
    img = out["image"].permute(1, 2, 0).numpy()
    box_a = out["instances"].gt_boxes.tensor[0].numpy()
    left, top = int(box_a[0]) - RECTS["A"][0], int(box_a[1]) - RECTS["A"][1]
    inside = np.zeros(img.shape[:2], bool)
    inside[top : top + H, left : left + W] = True
    assert img.shape[0] > H or img.shape[1] > W
    np.testing.assert_array_equal(
        img[~inside], np.tile(np.float32(cfg.MODEL.PIXEL_MEAN), ((~inside).sum(), 1))
    )
    np.testing.assert_array_equal(img[top, left], np.float32(BG[::-1]))  # RGB image
