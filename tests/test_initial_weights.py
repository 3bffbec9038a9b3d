"""The weights training starts from: an empty MODEL.WEIGHTS is refused in one line (the original always
starts from ImageNet), ``MODEL.WEIGHTS random`` trains from scratch on purpose and loads nothing."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import CONFIG_DIR, small_synthetic_coco, tiny_cfg

ROOT = os.path.dirname(CONFIG_DIR)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, num_train=4, num_val=2, seed=3)


def _trainer_cfg(data, tmp_path, weights):
    from yolact_d2.data.datasets import register_datasets_from_config

    (train_json, train_root), _ = data
    name = f"init_weights_{tmp_path.name}"
    cfg = tiny_cfg(num_classes=6, opts=[
        "DATASETS.COCO_INSTANCES", [[name, train_json, train_root]], "DATASETS.TRAIN", (name,), "DATASETS.TEST", (),
        "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 1,
        "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.WEIGHTS", weights,
    ])
    register_datasets_from_config(cfg)
    return cfg


def test_trainer_refuses_empty_weights_and_random_keeps_the_initialisation(data, tmp_path):
    from yolact_d2 import YolactTrainer
    from yolact_d2.utils.errors import ConfigError

    trainer = YolactTrainer(_trainer_cfg(data, tmp_path, ""))
    with pytest.raises(ConfigError) as info:
        trainer.resume_or_load(resume=False)
    assert str(info.value) == (
        "MODEL.WEIGHTS is empty: training would start from a random backbone (give MODEL.WEIGHTS "
        "yolact://ImageNetPretrained/torchvision/R-18 (ImageNet ResNet-18, downloaded once) or a checkpoint; "
        "MODEL.WEIGHTS random trains from scratch on purpose)")

    torch.manual_seed(7)
    trainer = YolactTrainer(_trainer_cfg(data, tmp_path, "random"))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing loaded, nothing re-drawn
    assert trainer.start_iter == 0


def test_train_net_refuses_a_coco_config_without_weights_in_one_line(tmp_path):
    config = os.path.join(CONFIG_DIR, "COCO-InstanceSegmentation", "yolact_R_50_FPN_550.yaml")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", config, "MODEL.WEIGHTS", "",
         "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=ROOT))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and errors == [
        "error: MODEL.WEIGHTS is empty: training would start from a random backbone (give MODEL.WEIGHTS "
        "yolact://ImageNetPretrained/R-50 (ImageNet ResNet-50, downloaded once) or a checkpoint; MODEL.WEIGHTS random "
        "trains from scratch on purpose)"], proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Starting training" not in proc.stdout + proc.stderr
