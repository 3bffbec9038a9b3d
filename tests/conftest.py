import contextlib
import logging
import os
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def yolact_cfg(config_file="Base-YOLACT.yaml", opts=()):
    """A frozen-free cfg with the yolact keys, merged from a file under configs/, on the CPU and with
    random weights on purpose (``MODEL.WEIGHTS random``) unless ``opts`` say otherwise."""
    from yolact_d2.runtime.config_loading import setup_cfg

    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "random", *opts]
    return setup_cfg(os.path.join(CONFIG_DIR, config_file), opts, freeze=False)


def tiny_cfg(num_classes=3, image_size=128, opts=()):
    """ResNet-18 YOLACT small enough for CPU unit tests; the schedule keys as written (not scaled to
    the batch by SOLVER.REFERENCE_IMS_PER_BATCH), so that tests say how many iterations they run."""
    return yolact_cfg(
        "Base-YOLACT.yaml",
        [
            "SOLVER.REFERENCE_IMS_PER_BATCH", 0,
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


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests with one torch thread (use with ``pytestmark = pytest.mark.usefixtures``):
    they start subprocesses or share the 2 cores with them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def captured(name="yolact_d2"):
    """Records logged to ``name`` (and below) inside the block, whatever the propagation settings
    (Detectron2's setup_logger turns propagation off, which defeats pytest's caplog)."""
    records = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    log = logging.getLogger(name)
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


def small_synthetic_coco(tmp_path_factory, num_train: int, num_val: int, seed: int):
    """A small synthetic COCO train/val pair (96x128 images) for end-to-end tests:
    ``((train_json, train_image_dir), (val_json, val_image_dir))``."""
    from yolact_d2.data.datasets import generate_synthetic_dataset

    root = str(tmp_path_factory.mktemp("synthetic"))
    train = generate_synthetic_dataset(root, "train", num_train, seed=seed, image_size=(96, 128))
    val = generate_synthetic_dataset(root, "val", num_val, seed=seed, image_size=(96, 128))
    return (train, os.path.join(root, "train")), (val, os.path.join(root, "val"))
