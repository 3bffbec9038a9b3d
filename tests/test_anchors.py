import math

import pytest
import torch

from yolact_d2.modeling.anchor_generator import YolactAnchorGenerator

from conftest import yolact_cfg


def _sizes(image_size):
    """Feature sizes of the YOLACT ResNet-FPN for a square input (conv arithmetic, docs/MODEL.md §2.1)."""
    s = (image_size + 2 * 3 - 7) // 2 + 1  # stem conv
    s = (s + 2 - 3) // 2 + 1  # max pool -> C2
    sizes = []
    for _ in range(5):  # C3, C4, C5, P6, P7: 3x3 stride-2 pad-1 convs
        s = (s + 2 - 3) // 2 + 1
        sizes.append((s, s))
    return sizes


@pytest.mark.parametrize(
    "config,size,count",
    [
        ("COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml", 550, 19248),
        ("COCO-InstanceSegmentation/yolact_R_101_FPN_400.yaml", 400, 10077),
        ("COCO-InstanceSegmentation/yolact_R_101_FPN_700.yaml", 700, 30963),
    ],
)
def test_anchor_counts(config, size, count):
    gen = YolactAnchorGenerator(yolact_cfg(config))
    assert gen(_sizes(size), (size, size)).shape == (count, 4)


def test_feature_sizes_match_backbone():
    assert _sizes(550) == [(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)]
    assert _sizes(400) == [(50, 50), (25, 25), (13, 13), (7, 7), (4, 4)]


def test_first_and_last_anchors_550():
    gen = YolactAnchorGenerator(yolact_cfg("COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml"))
    a = gen(_sizes(550), (550, 550))
    c = 0.5 / 69
    # docs/MODEL.md §3.2: square v1 anchors of side s, s/sqrt(2), s*sqrt(2) (relative to 550)
    expected_first = torch.tensor(
        [[c, c, 0.043636, 0.043636], [c, c, 0.030856, 0.030856], [c, c, 0.061711, 0.061711]]
    )
    assert torch.allclose(a[:3], expected_first, atol=1e-6)
    # bit-exact with the original's Python-float computation cast to float32
    assert a[1, 2].item() == torch.tensor(24 * math.sqrt(0.5) / 550, dtype=torch.float32).item()
    last = a[-3:]
    assert torch.allclose(last[:, :2], torch.full((3, 2), 0.9))
    assert torch.allclose(last[:, 2], torch.tensor([384 / 550, 384 * math.sqrt(0.5) / 550, 384 * math.sqrt(2) / 550]))
    assert torch.equal(last[:, 2], last[:, 3])  # square
    assert abs(last[0, 2].item() - 0.698) < 1e-3 and abs(last[1, 2].item() - 0.494) < 1e-3


def test_anchor_order_level_row_column_anchor():
    gen = YolactAnchorGenerator(yolact_cfg("Base-YOLACT.yaml"))
    a = gen(_sizes(550), (550, 550))
    p3 = a[: 69 * 69 * 3].reshape(69, 69, 3, 4)
    # column index varies fastest after the anchor index, then the row
    assert torch.allclose(p3[0, 1, 0, :2], torch.tensor([1.5 / 69, 0.5 / 69]))
    assert torch.allclose(p3[1, 0, 0, :2], torch.tensor([0.5 / 69, 1.5 / 69]))
    p4_first = a[69 * 69 * 3]
    assert torch.allclose(p4_first, torch.tensor([0.5 / 35, 0.5 / 35, 48 / 550, 48 / 550]))


def test_yolact_plus_rectangular_anchors():
    """Three scales x three real aspect ratios (w/h), scale-major (docs/MODEL.md §3.3, YOLACT++)."""
    scales = [[s * 2 ** (i / 3) for i in range(3)] for s in (24, 48, 96, 192, 384)]
    gen = YolactAnchorGenerator(scales=scales, aspect_ratios=[[1, 0.5, 2]], square_anchors=False)
    a = gen(_sizes(550), (550, 550))
    assert a.shape == (57744, 4)
    px = a[:9, 2:] * 550
    expected = [(24, 24), (16.97, 33.94), (33.94, 16.97), (30.24, 30.24), (21.38, 42.76), (42.76, 21.38),
                (38.10, 38.10), (26.94, 53.88), (53.88, 26.94)]
    assert torch.allclose(px, torch.tensor(expected), atol=0.01)


def test_non_square_input_keeps_pixel_sizes():
    gen = YolactAnchorGenerator(scales=[[24]], aspect_ratios=[[1, 0.5]], square_anchors=False)
    a = gen([(10, 20)], (80, 160))
    assert a.shape == (10 * 20 * 2, 4)
    assert torch.allclose(a[0], torch.tensor([0.5 / 20, 0.5 / 10, 24 / 160, 24 / 80]))
    assert torch.allclose(a[1, 2:] * torch.tensor([160.0, 80.0]), torch.tensor([24 * 0.5**0.5, 24 / 0.5**0.5]))


def test_mismatched_levels_raise():
    gen = YolactAnchorGenerator(yolact_cfg("Base-YOLACT.yaml"))
    with pytest.raises(ValueError, match="ANCHOR_SCALES"):
        gen([(10, 10)] * 3, (80, 80))
    with pytest.raises(ValueError, match="same number of anchors"):
        YolactAnchorGenerator(scales=[[24], [48, 60]], aspect_ratios=[[1]], square_anchors=True)


def test_anchor_generator_is_built_through_the_registry():
    from detectron2.modeling import build_model
    from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY

    from yolact_d2.modeling.anchor_generator import build_yolact_anchor_generator
    from yolact_d2.utils.errors import ConfigError

    cfg = yolact_cfg("Synthetic/yolact_R_18_FPN_synthetic.yaml")
    assert cfg.MODEL.ANCHOR_GENERATOR.NAME == "YolactAnchorGenerator"
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert type(model.anchor_generator) is YolactAnchorGenerator
    assert model.head.bbox_pred.out_channels == 4 * model.anchor_generator.num_anchors == 4 * 3

    @ANCHOR_GENERATOR_REGISTRY.register()
    class FiveAnchorsForTest(YolactAnchorGenerator):  # a derived generator is picked by name
        pass

    cfg.MODEL.ANCHOR_GENERATOR.NAME = "FiveAnchorsForTest"
    assert type(build_yolact_anchor_generator(cfg)) is FiveAnchorsForTest
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"  # Detectron2's default: a config without the key
    assert type(build_yolact_anchor_generator(cfg)) is YolactAnchorGenerator

    @ANCHOR_GENERATOR_REGISTRY.register()
    class OtherAnchorsForTest(torch.nn.Module):  # like the stock generators: other anchors
        def __init__(self, cfg, input_shape):
            super().__init__()

    cfg.MODEL.ANCHOR_GENERATOR.NAME = "OtherAnchorsForTest"
    with pytest.raises(ConfigError, match="MODEL.ANCHOR_GENERATOR.NAME 'OtherAnchorsForTest'"):
        build_yolact_anchor_generator(cfg)
