"""Tests of yolact_d2.data.transforms (docs/MODEL.md §7.1, §7.2)."""
import cv2
import numpy as np
import pytest
from fvcore.transforms.transform import HFlipTransform, NoOpTransform, TransformList

from detectron2.data import transforms as T
from detectron2.structures.masks import polygons_to_bitmask

from yolact_d2.data.transforms import (
    SSD_CROP_MODES,
    CV2ResizeTransform,
    ExpandTransform,
    PhotometricDistortTransform,
    RandomExpand,
    RandomPhotometricDistort,
    RandomSSDCrop,
    ResizeLongestSide,
    SquashResize,
    SSDCropTransform,
    YolactAugInput,
    keep_aspect_output_shape,
    shift_hue,
)

H, W = 40, 60
BG = (10.0, 20.0, 30.0)
COLOR = (200.0, 50.0, 100.0)
# The instance: pixels x in [12, 30), y in [8, 22) -> box / polygon [12, 8, 30, 22].
X0, Y0, X1, Y1 = 12, 8, 30, 22


def make_scene():
    img = np.empty((H, W, 3), np.float32)
    img[...] = BG
    img[Y0:Y1, X0:X1] = COLOR
    mask = np.zeros((H, W), np.uint8)
    mask[Y0:Y1, X0:X1] = 1
    poly = np.array([[X0, Y0], [X1, Y0], [X1, Y1], [X0, Y1]], np.float64)
    box = np.array([[X0, Y0, X1, Y1]], np.float64)
    return img, mask, poly, box


def mask_bbox(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def rasterize(polys, h, w):
    return polygons_to_bitmask([p.reshape(-1) for p in polys], h, w)


# ------------------------------------------------------------------------------------------
# geometric consistency of image / box / polygon / bitmask
# ------------------------------------------------------------------------------------------
GEOMETRIC = {
    "expand": (ExpandTransform(7, 3, 100, 70, fill=(1.0, 2.0, 3.0), orig_w=W, orig_h=H), True),
    "crop_inside": (SSDCropTransform(5, 4, 40, 30, orig_w=W, orig_h=H), True),
    "crop_cuts": (SSDCropTransform(20, 15, 30, 20, orig_w=W, orig_h=H), True),
    "hflip": (HFlipTransform(W), True),
    "resize": (CV2ResizeTransform(H, W, 55, 37), False),
    "resize_up": (CV2ResizeTransform(H, W, 97, 131), False),
    "chain": (
        TransformList(
            [
                ExpandTransform(5, 9, 80, 60, fill=(0.0, 0.0, 0.0)),
                SSDCropTransform(10, 12, 40, 30),
                HFlipTransform(40),
                CV2ResizeTransform(30, 40, 50, 50),
            ]
        ),
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_geometry_consistent(name):
    tfm, exact = GEOMETRIC[name]
    img, mask, poly, box = make_scene()
    out_img = tfm.apply_image(img)
    out_mask = tfm.apply_segmentation(mask)
    out_box = tfm.apply_box(box.copy())[0]
    out_polys = tfm.apply_polygons([poly.copy()])

    assert out_img.dtype == np.float32
    assert out_mask.dtype == np.uint8
    assert out_mask.shape == out_img.shape[:2]
    h, w = out_mask.shape
    raster = rasterize(out_polys, h, w)
    if exact:
        np.testing.assert_array_equal(mask_bbox(out_mask), out_box)
        np.testing.assert_array_equal(raster, out_mask.astype(bool))
        colors = out_img[out_mask.astype(bool)]
        np.testing.assert_array_equal(colors, np.tile(COLOR, (len(colors), 1)))
    else:
        assert np.abs(mask_bbox(out_mask) - out_box).max() <= 1.0
        assert np.abs(mask_bbox(raster) - out_box).max() <= 1.0
        inter = np.logical_and(raster, out_mask).sum()
        union = np.logical_or(raster, out_mask).sum()
        assert inter / union > 0.85
        # Bilinear interpolation of a constant area is that constant: check the mask interior
        # (3 px away from the border, enough for the x2.4 up-scaling blur).
        interior = cv2.erode(out_mask, np.ones((7, 7), np.uint8)).astype(bool)
        assert interior.sum() > 0
        colors = out_img[interior]
        np.testing.assert_allclose(colors, np.tile(COLOR, (len(colors), 1)), atol=1e-3)


def test_crop_cut_instance_is_clipped():
    _, _, poly, box = make_scene()
    tfm = SSDCropTransform(20, 15, 30, 20)
    np.testing.assert_array_equal(tfm.apply_box(box), [[0, 0, 10, 7]])
    (clipped,) = tfm.apply_polygons([poly])
    np.testing.assert_array_equal(mask_bbox(rasterize([clipped], 20, 30)), [0, 0, 10, 7])


def test_crop_polygon_outside_dropped_and_concave_clip():
    tfm = SSDCropTransform(10, 10, 20, 20)
    outside = np.array([[0, 0], [5, 0], [5, 5], [0, 5]], np.float64)
    assert tfm.apply_polygons([outside]) == []
    # A "U" shape whose two arms enter the crop separately.
    u_shape = np.array(
        [[12, 0], [28, 0], [28, 25], [24, 25], [24, 5], [16, 5], [16, 25], [12, 25]], np.float64
    )
    full = polygons_to_bitmask([u_shape.reshape(-1)], 40, 40)
    expected = full[10:30, 10:30]
    (clipped,) = tfm.apply_polygons([u_shape])
    np.testing.assert_array_equal(rasterize([clipped], 20, 20), expected)


# ------------------------------------------------------------------------------------------
# crop policy
# ------------------------------------------------------------------------------------------
def test_crop_centre_inside_rule_via_aug_input():
    img, _, _, _ = make_scene()
    boxes = np.array(
        [
            [25, 18, 45, 30],  # centre (35, 24) inside, cut by the crop -> clipped
            [0, 0, 24, 14],  # centre (12, 7) outside, overlaps the crop -> dropped
            [22, 17, 28, 21],  # centre (25, 19) inside, crowd, fully inside
            [20, 16, 20, 40],  # centre (20, 28) on the left border: not strictly inside -> dropped
        ],
        np.float64,
    )
    aug_input = YolactAugInput(img, boxes=boxes, is_crowd=[False, False, True, False])
    tfm = SSDCropTransform(20, 15, 20, 20, orig_w=W, orig_h=H)
    aug_input.transform(TransformList([NoOpTransform(), tfm]))
    np.testing.assert_array_equal(aug_input.instance_indices, [0, 2])
    np.testing.assert_array_equal(aug_input.is_crowd, [False, True])
    np.testing.assert_array_equal(aug_input.boxes, [[5, 3, 20, 15], [2, 2, 8, 6]])
    assert aug_input.image.shape == (20, 20, 3)


def test_crop_mode_none_is_identity():
    img, _, _, box = make_scene()
    np.random.seed(0)
    aug_input = YolactAugInput(img, boxes=box)
    tfm = RandomSSDCrop(modes=(None,))(aug_input)
    assert isinstance(tfm, NoOpTransform)
    np.testing.assert_array_equal(aug_input.image, img)
    np.testing.assert_array_equal(aug_input.boxes, box)


def test_crop_without_non_crowd_is_identity():
    img = np.zeros((H, W, 3), np.float32)
    crop = RandomSSDCrop(modes=((None, None),))
    np.random.seed(0)
    crowd_only = crop.get_transform(img, np.array([[0, 0, 30, 30.0]]), np.array([True]))
    assert isinstance(crowd_only, NoOpTransform)
    assert isinstance(crop.get_transform(img, np.zeros((0, 4)), np.zeros(0, bool)), NoOpTransform)


def test_crop_requires_a_non_crowd_instance():
    img = np.zeros((H, W, 3), np.float32)
    boxes = np.array([[5, 5, 55, 35], [1, 1, 9, 7]], np.float64)  # big crowd, small non-crowd
    is_crowd = np.array([True, False])
    crop = RandomSSDCrop(modes=((None, None),))  # never returns "no crop"
    n_crowd_also = 0
    for seed in range(60):
        np.random.seed(seed)
        tfm = crop.get_transform(img, boxes, is_crowd)
        assert isinstance(tfm, SSDCropTransform)
        keep = tfm.instance_keep_mask(boxes)
        assert keep[1], "a crop keeping only the crowd must be rejected"
        n_crowd_also += int(keep[0])
        assert 0 <= tfm.x0 and tfm.x0 + tfm.w <= W and 0 <= tfm.y0 and tfm.y0 + tfm.h <= H
    assert n_crowd_also > 0


def test_crop_iou_modes_do_not_constrain_and_offsets_faithful():
    img = np.zeros((H, W, 3), np.float32)
    boxes = np.array([[29, 19, 31, 21]], np.float64)  # tiny: every crop has IoU < 0.9 with it
    crop = RandomSSDCrop(modes=((0.9, None),))
    for seed in range(30):
        np.random.seed(seed)
        tfm = crop.get_transform(img, boxes, np.array([False]))
        assert isinstance(tfm, SSDCropTransform)
        assert tfm.w >= int(0.3 * W) - 1 and tfm.h >= int(0.3 * H) - 1
        assert 0.4 <= tfm.h / tfm.w <= 2.2  # h/w in [0.5, 2] before the int() rounding
        # numpy's uniform(W - w) samples in [1, W - w): the crop never starts at 0 unless
        # there is less than one pixel of room.
        if W - tfm.w > 2:
            assert tfm.x0 >= 1
        if H - tfm.h > 2:
            assert tfm.y0 >= 1


def test_crop_draws_match_manual_replay():
    img = np.zeros((H, W, 3), np.float32)
    boxes = np.array([[10, 10, 50, 30]], np.float64)
    np.random.seed(3)
    tfm = RandomSSDCrop(modes=((None, None),)).get_transform(img, boxes, np.array([False]))
    np.random.seed(3)
    np.random.randint(1)
    while True:
        w = np.random.uniform(0.3 * W, W)
        h = np.random.uniform(0.3 * H, H)
        if 0.5 <= h / w <= 2:
            break
    left, top = np.random.uniform(W - w), np.random.uniform(H - h)
    assert (tfm.x0, tfm.y0) == (int(left), int(top))
    assert (tfm.x0 + tfm.w, tfm.y0 + tfm.h) == (int(left + w), int(top + h))


def test_default_modes():
    expected = (None, (0.1, None), (0.3, None), (0.7, None), (0.9, None), (None, None))
    assert SSD_CROP_MODES == expected


# ------------------------------------------------------------------------------------------
# expand
# ------------------------------------------------------------------------------------------
def test_expand_canvas_fill_and_offset():
    img, mask, _, _ = make_scene()
    tfm = ExpandTransform(7, 3, 100, 70, fill=(1.25, 2.5, 3.75), orig_w=W, orig_h=H)
    out = tfm.apply_image(img.astype(np.uint8))
    assert out.shape == (70, 100, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[3 : 3 + H, 7 : 7 + W], img)
    outside = np.ones((70, 100), bool)
    outside[3 : 3 + H, 7 : 7 + W] = False
    np.testing.assert_array_equal(out[outside], np.tile([1.25, 2.5, 3.75], (outside.sum(), 1)))
    seg = tfm.apply_segmentation(mask.astype(bool))
    assert seg.dtype == bool and seg.shape == (70, 100) and seg.sum() == mask.sum()
    assert not seg[outside].any()
    np.testing.assert_array_equal(tfm.apply_coords(np.array([[0.5, 1.5]])), [[7.5, 4.5]])
    back = tfm.inverse().apply_image(out)
    np.testing.assert_array_equal(back, img)


def test_random_expand_draws():
    img, _, _, _ = make_scene()
    aug = RandomExpand(mean=(1.0, 2.0, 3.0), prob=1.0)
    np.random.seed(5)
    tfm = aug.get_transform(img)
    np.random.seed(5)
    np.random.rand()
    r = np.random.uniform(1, 4)
    left, top = np.random.uniform(0, W * r - W), np.random.uniform(0, H * r - H)
    assert (tfm.canvas_w, tfm.canvas_h) == (int(W * r), int(H * r))
    assert (tfm.left, tfm.top) == (int(left), int(top))
    out = tfm.apply_image(img)
    assert out.shape == (int(H * r), int(W * r), 3)
    assert isinstance(RandomExpand(mean=(0, 0, 0), prob=0.0).get_transform(img), NoOpTransform)


# ------------------------------------------------------------------------------------------
# photometric
# ------------------------------------------------------------------------------------------
def test_photometric_geometry_untouched_and_no_clipping():
    img, mask, poly, box = make_scene()
    img[0, 0] = (250, 250, 250)
    img[0, 1] = (5, 5, 5)
    up = PhotometricDistortTransform(brightness_delta=30.0)
    out = up.apply_image(img.astype(np.uint8))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [280, 280, 280], atol=1e-2)
    assert out.max() > 255
    down = PhotometricDistortTransform(
        brightness_delta=-30.0, contrast_alpha=1.5, contrast_first=False
    )
    out = down.apply_image(img)
    np.testing.assert_allclose(out[0, 1], [-37.5, -37.5, -37.5], atol=1e-2)
    assert out.min() < 0
    np.testing.assert_allclose(out[Y0:Y1, X0:X1], (img[Y0:Y1, X0:X1] - 30) * 1.5, rtol=1e-4)
    # Like the original, the HSV round trip maps a pixel whose max channel is <= 0 to V = 0 grey:
    # background (10, 20, 30) - 30 = (-20, -10, 0) comes back as (0, 0, 0).
    np.testing.assert_allclose(out[0, 2], [0, 0, 0], atol=1e-3)
    # geometry untouched
    assert up.apply_segmentation(mask) is mask
    np.testing.assert_array_equal(up.apply_box(box), box)
    np.testing.assert_array_equal(up.apply_polygons([poly])[0], poly)
    assert isinstance(up.inverse(), NoOpTransform)
    # input not modified in place
    assert img[0, 0, 0] == 250


def test_photometric_contrast_order_and_saturation():
    img, _, _, _ = make_scene()
    kw = dict(brightness_delta=7.0, contrast_alpha=0.5)
    first = PhotometricDistortTransform(contrast_first=True, **kw)
    last = PhotometricDistortTransform(contrast_first=False, **kw)
    np.testing.assert_allclose(first.apply_image(img), (img + 7) * 0.5, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(last.apply_image(img), (img + 7) * 0.5, rtol=1e-4, atol=1e-3)
    sat = PhotometricDistortTransform(saturation_factor=0.0).apply_image(img)
    # zero saturation -> grey with V = max channel
    np.testing.assert_allclose(sat[0, 0], [30, 30, 30], atol=1e-3)
    np.testing.assert_allclose(sat[Y0, X0], [200, 200, 200], atol=1e-3)
    changed = RandomPhotometricDistort(prob=1.0)
    np.random.seed(1)
    assert not np.allclose(changed.get_transform(img).apply_image(img), img)


def test_photometric_hue_wraps_and_channel_order():
    np.testing.assert_allclose(shift_hue(np.array([355.0, 5.0, 180.0]), 10.0), [5.0, 15.0, 190.0])
    np.testing.assert_allclose(shift_hue(np.array([3.0, 350.0]), -10.0), [353.0, 340.0])
    red_bgr = np.array([[[0.0, 0.0, 255.0]]], np.float32)  # H = 0
    out = PhotometricDistortTransform(hue_delta=-10.0, image_format="BGR").apply_image(red_bgr)
    expected = cv2.cvtColor(np.array([[[350.0, 1.0, 255.0]]], np.float32), cv2.COLOR_HSV2BGR)
    np.testing.assert_allclose(out, expected, atol=1e-3)
    assert out[0, 0, 0] > 1.0  # a magenta-ish red: blue rises
    # RGB images give the same colours with the channels reversed.
    img, _, _, _ = make_scene()
    kw = dict(brightness_delta=-12.0, contrast_alpha=1.3, saturation_factor=1.4, hue_delta=17.0)
    bgr = PhotometricDistortTransform(image_format="BGR", **kw).apply_image(img)
    rgb = PhotometricDistortTransform(image_format="RGB", **kw).apply_image(img[:, :, ::-1])
    np.testing.assert_allclose(rgb[:, :, ::-1], bgr, atol=1e-3)


def test_random_photometric_probabilities():
    img, _, _, _ = make_scene()
    np.random.seed(0)
    t = RandomPhotometricDistort(prob=1.0).get_transform(img)
    assert -32 <= t.brightness_delta <= 32 and 0.5 <= t.contrast_alpha <= 1.5
    assert 0.5 <= t.saturation_factor <= 1.5 and -18 <= t.hue_delta <= 18
    t = RandomPhotometricDistort(prob=0.0).get_transform(img)
    assert (t.brightness_delta, t.contrast_alpha, t.saturation_factor, t.hue_delta) == (None,) * 4
    with pytest.raises(ValueError):
        RandomPhotometricDistort(image_format="L")


# ------------------------------------------------------------------------------------------
# resize
# ------------------------------------------------------------------------------------------
def test_cv2_resize_matches_cv2_on_float():
    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, size=(H, W, 3)).astype(np.uint8)
    tfm = SquashResize(55).get_transform(img)
    out = tfm.apply_image(img)
    assert out.dtype == np.float32 and out.shape == (55, 55, 3)
    ref = cv2.resize(img.astype(np.float32), (55, 55), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out, ref)
    coords = tfm.apply_coords(np.array([[60.0, 40.0], [30.0, 10.0]]))
    np.testing.assert_allclose(coords, [[55, 55], [27.5, 13.75]])
    nearest = CV2ResizeTransform(H, W, 20, 30, mask_interp="nearest")
    labels = np.zeros((H, W), np.int32)
    labels[:, 30:] = 7
    assert set(np.unique(nearest.apply_segmentation(labels))) == {0, 7}


def test_keep_aspect_resize():
    assert keep_aspect_output_shape(40, 60, 550) == (367, 550)
    assert keep_aspect_output_shape(60, 40, 550) == (550, 367)
    assert keep_aspect_output_shape(50, 50, 32) == (32, 32)
    img = np.zeros((H, W, 3), np.uint8)
    out = ResizeLongestSide(32).get_transform(img).apply_image(img)
    assert out.shape == (21, 32, 3) and out.dtype == np.float32


def test_full_chain_keeps_instances_in_sync():
    img, _, _, _ = make_scene()
    boxes = np.array([[X0, Y0, X1, Y1], [40, 25, 58, 38]], np.float64)
    augs = T.AugmentationList(
        [
            RandomPhotometricDistort(),
            RandomExpand(mean=BG),
            RandomSSDCrop(),
            T.RandomFlip(prob=0.5),
            SquashResize(32),
        ]
    )
    for seed in range(15):
        np.random.seed(seed)
        aug_input = YolactAugInput(img, boxes=boxes, is_crowd=[False, True])
        tfms = augs(aug_input)
        assert aug_input.image.shape == (32, 32, 3) and aug_input.image.dtype == np.float32
        assert 0 in aug_input.instance_indices.tolist()  # the only non-crowd always survives
        ref = tfms.apply_box(boxes[aug_input.instance_indices])
        np.testing.assert_allclose(aug_input.boxes, ref)
        assert (aug_input.boxes >= -1e-9).all() and (aug_input.boxes <= 32 + 1e-9).all()
