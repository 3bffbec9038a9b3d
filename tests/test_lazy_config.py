"""The LazyConfigs (configs/**/*.py) against their yaml twins: the same model (parameter names,
shapes, counts and outputs on the same weights), the same data, optimizer and LR schedule, and the
API path of Detectron2's stock tools/lazyconfig_train_net.py."""
import glob
import os

import pytest
import torch

from detectron2.config import LazyConfig, instantiate

from conftest import CONFIG_DIR, yolact_cfg

PAIRS = sorted(
    os.path.relpath(p, CONFIG_DIR)[: -len(".py")]
    for p in glob.glob(os.path.join(CONFIG_DIR, "*", "*.py"))
    if not os.path.relpath(p, CONFIG_DIR).startswith("common")
)


def load_lazy(name, overrides=()):
    cfg = LazyConfig.load(os.path.join(CONFIG_DIR, name + ".py"))
    return LazyConfig.apply_overrides(cfg, list(overrides))


def test_every_yaml_has_a_lazy_twin():
    yamls = sorted(
        os.path.relpath(p, CONFIG_DIR)[: -len(".yaml")] for p in glob.glob(os.path.join(CONFIG_DIR, "*", "*.yaml"))
    )
    assert PAIRS == yamls and len(PAIRS) == 8


@pytest.mark.parametrize("name", PAIRS)
def test_lazy_and_yaml_build_the_same_model(name):
    from yolact_d2 import YolactTrainer
    from yolact_d2.utils.testing import condition_random_model

    torch.manual_seed(0)
    yaml_model = YolactTrainer.build_model(yolact_cfg(name + ".yaml"))
    torch.manual_seed(0)
    lazy_model = instantiate(load_lazy(name).model)
    yaml_state, lazy_state = yaml_model.state_dict(), lazy_model.state_dict()
    assert list(lazy_state) == list(yaml_state)  # names, in the same order
    assert {k: tuple(v.shape) for k, v in lazy_state.items()} == {k: tuple(v.shape) for k, v in yaml_state.items()}
    assert sum(p.numel() for p in lazy_model.parameters()) == sum(p.numel() for p in yaml_model.parameters())
    # built in the same order: the same random initialisation for a seed
    assert all(torch.equal(lazy_state[k], yaml_state[k]) for k in yaml_state)
    for attr in ("in_features", "bbox_variances", "score_threshold", "nms_type", "nms_threshold", "topk_candidates",
                 "max_detections_per_image", "mask_threshold", "truncate_boxes", "fast_postprocess", "input_format"):
        assert getattr(lazy_model, attr) == getattr(yaml_model, attr), attr
    assert lazy_model.anchor_generator.scales == yaml_model.anchor_generator.scales
    assert lazy_model.anchor_generator.square_anchors == yaml_model.anchor_generator.square_anchors
    assert vars(lazy_model.criterion)["loss_weights"] == vars(yaml_model.criterion)["loss_weights"]
    assert lazy_model.criterion.masks_to_train == yaml_model.criterion.masks_to_train

    # equal outputs on the same (conditioned, so that there are detections) weights, at a reduced size
    size = 256 if yaml_model.maskiou_net is not None else 128  # the mask re-scoring net needs 63-px prototypes
    image = torch.rand(3, size, size) * 255
    inputs = [{"image": image, "height": size, "width": size}]
    condition_random_model(yaml_model, [yaml_model.preprocess_image(inputs).tensor])
    lazy_model.load_state_dict(yaml_model.state_dict())
    yaml_model.eval()
    lazy_model.eval()
    with torch.no_grad():
        expected, got = yaml_model(inputs)[0]["instances"], lazy_model(inputs)[0]["instances"]
    assert len(expected) > 0
    for field in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
        a, b = got.get(field), expected.get(field)
        a, b = (a.tensor, b.tensor) if field == "pred_boxes" else (a, b)
        assert torch.equal(a, b), field
