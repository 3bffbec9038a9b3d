"""The LazyConfigs (configs/**/*.py) against their yaml twins: the same model (parameter names,
shapes, counts and outputs on the same weights), the same data, optimizer and LR schedule, and the
API path of Detectron2's stock tools/lazyconfig_train_net.py."""
import glob
import os
import runpy

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
    from yolact_d2.testing import condition_random_model

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
                 "max_detections_per_image", "mask_threshold", "truncate_boxes", "input_format"):
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


TWO = ["COCO-InstanceSegmentation/yolact_R_50_FPN_550", "Synthetic/yolact_R_18_FPN_synthetic"]


@pytest.mark.parametrize("name", TWO)
def test_lazy_and_yaml_have_the_same_lr_schedule(name):
    from yolact_d2.solver import build_lr_scheduler

    cfg, lazy = yolact_cfg(name + ".yaml"), load_lazy(name)
    assert lazy.train.max_iter == cfg.SOLVER.MAX_ITER and lazy.optimizer.lr == cfg.SOLVER.BASE_LR
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    yaml_scheduler = build_lr_scheduler(cfg, optimizer)  # ours: the original's arithmetic for the COCO configs
    lazy_multiplier = instantiate(lazy.lr_multiplier)
    n = cfg.SOLVER.MAX_ITER
    probes = sorted({0, 1, 250, 499, 500, 501, n // 2, n - 1, *cfg.SOLVER.STEPS, *(s - 1 for s in cfg.SOLVER.STEPS)})
    if name.startswith("COCO"):  # YolactWarmupMultiStepLR: the LR of any iteration from its position
        yaml_lrs = []
        for i in probes:
            yaml_scheduler.last_epoch = i
            yaml_lrs.append(yaml_scheduler.get_lr()[0])
        assert [lazy_multiplier(i / n) * cfg.SOLVER.BASE_LR for i in probes] == pytest.approx(yaml_lrs, rel=1e-12)
    else:  # Detectron2's WarmupMultiStepLR (SOLVER.REFERENCE_IMS_PER_BATCH 0)
        yaml_multiplier = yaml_scheduler._multiplier
        assert [lazy_multiplier(i / n) for i in probes] == [yaml_multiplier(i / n) for i in probes]
    if name.startswith("COCO"):  # the original's numbers: 1e-4 -> 1e-3 over 500 iterations, x0.1 at each step
        assert lazy_multiplier(0.0) == pytest.approx(0.1) and lazy_multiplier(500 / n) == 1.0
        assert lazy_multiplier(280000 / n) == pytest.approx(0.1) and lazy_multiplier((n - 1) / n) == pytest.approx(1e-4)


def test_scaled_schedule_is_the_originals_autoscale():
    from yolact_d2.solver import scaled_schedule

    assert scaled_schedule(8) == {
        "lr": 1e-3, "max_iter": 800000, "steps": (280000, 600000, 700000, 750000), "warmup_iters": 500,
        "warmup_factor": 0.1,
    }
    assert scaled_schedule(16) == {
        "lr": 2e-3, "max_iter": 400000, "steps": (140000, 300000, 350000, 375000), "warmup_iters": 500,
        "warmup_factor": 0.05,  # the warm-up still starts at 1e-4
    }
    got = scaled_schedule(6)  # f = 0.75: lr x 0.75, iterations // 0.75
    assert got["lr"] == pytest.approx(7.5e-4) and got["max_iter"] == 1066666 and got["steps"][0] == 373333
    with pytest.raises(ValueError):
        scaled_schedule(0)


def test_yolact_schedule_sets_the_lazy_config():
    cfg = load_lazy("COCO-InstanceSegmentation/yolact_R_101_FPN_550")
    namespace = runpy.run_path(os.path.join(CONFIG_DIR, "common", "schedule.py"))
    namespace["yolact_schedule"](cfg.optimizer, cfg.train, cfg.lr_multiplier, 32)
    assert cfg.optimizer.lr == pytest.approx(4e-3) and cfg.train.max_iter == 200000
    assert list(cfg.lr_multiplier.steps) == [70000, 150000, 175000, 187500]
    multiplier = instantiate(cfg.lr_multiplier)  # follows train.max_iter
    assert multiplier(70000 / 200000) == pytest.approx(0.1) and multiplier(69999 / 200000) == 1.0
    assert multiplier(0.0) * cfg.optimizer.lr == pytest.approx(1e-4)  # the original's warm-up start at any batch


@pytest.mark.parametrize("name", TWO)
def test_lazy_and_yaml_build_the_same_optimizer_and_mapper(name):
    from yolact_d2 import YolactTrainer
    from yolact_d2.engine.loaders import build_dataset_mapper

    cfg, lazy = yolact_cfg(name + ".yaml"), load_lazy(name)
    torch.manual_seed(0)
    model = YolactTrainer.build_model(cfg)
    expected = YolactTrainer.build_optimizer(cfg, model)
    lazy.optimizer.params.model = model
    got = instantiate(lazy.optimizer)
    assert type(got).__name__ == type(expected).__name__ and got.defaults == expected.defaults
    assert len(got.param_groups) == len(expected.param_groups)
    for a, b in zip(got.param_groups, expected.param_groups):
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
    for is_train, node in ((True, lazy.dataloader.train.mapper), (False, lazy.dataloader.test.mapper)):
        yaml_mapper, lazy_mapper = build_dataset_mapper(cfg, is_train), instantiate(node)
        assert str(lazy_mapper.augmentations) == str(yaml_mapper.augmentations)
        for attr in ("is_train", "image_format", "instance_mask_format", "degenerate_box_threshold",
                     "resample_if_empty", "skip_bad_images", "num_classes", "max_input_size", "box_source"):
            assert getattr(lazy_mapper, attr) == getattr(yaml_mapper, attr), attr
    assert lazy.dataloader.train.total_batch_size == cfg.SOLVER.IMS_PER_BATCH
    assert lazy.dataloader.train.num_workers == cfg.DATALOADER.NUM_WORKERS
    assert [lazy.dataloader.train.dataset.names] == list(cfg.DATASETS.TRAIN)
    assert [lazy.dataloader.test.dataset.names] == list(cfg.DATASETS.TEST)
