import os
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def yolact_cfg(config_file="Base-YOLACT.yaml", opts=()):
    """A frozen-free cfg with the yolact keys, merged from a file under configs/."""
    from detectron2.config import get_cfg

    from yolact_d2 import add_yolact_config

    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, config_file))
    cfg.MODEL.DEVICE = "cpu"
    cfg.merge_from_list(list(opts))
    return cfg


def tiny_cfg(num_classes=3, image_size=128, opts=()):
    """ResNet-18 YOLACT small enough for CPU unit tests."""
    return yolact_cfg(
        "Base-YOLACT.yaml",
        [
            "MODEL.RESNETS.DEPTH", 18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
            "MODEL.FPN.OUT_CHANNELS", 64,
            "MODEL.YOLACT.NUM_CLASSES", num_classes,
            "INPUT.IMAGE_SIZE", image_size,
            *opts,
        ],
    )


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
