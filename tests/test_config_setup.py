"""One way to build a config (setup_cfg), one-line errors for malformed KEY VALUE overrides, and one
dataset-mapper selection for the training and the test loader."""
import os
import subprocess
import sys

import pytest

from yolact_d2.runtime.config_loading import merge_config_list, setup_cfg
from yolact_d2.runtime.reporting import format_user_error
from yolact_d2.utils.errors import ConfigError

from conftest import CONFIG_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC_CONFIG = os.path.join(CONFIG_DIR, "Synthetic", "yolact_R_18_FPN_synthetic.yaml")


def test_setup_cfg_merges_file_then_overrides_and_freezes():
    cfg = setup_cfg(SYNTHETIC_CONFIG, ["SOLVER.MAX_ITER", "7"])
    assert cfg.is_frozen() and cfg.SOLVER.MAX_ITER == 7
    assert cfg.MODEL.YOLACT.NUM_CLASSES == 6  # from the file
    plain = setup_cfg(freeze=False)
    assert not plain.is_frozen() and plain.MODEL.YOLACT.NUM_CLASSES == 80  # the defaults


def test_odd_number_of_overrides_is_a_one_line_config_error():
    cfg = setup_cfg(freeze=False)
    with pytest.raises(ConfigError) as info:  # one shell argument holding a key and its value
        merge_config_list(cfg, ["SOLVER.MAX_ITER", "5", "SOLVER.STEPS (1120,)"])
    line = format_user_error(info.value)
    assert "'SOLVER.STEPS (1120,)'" in line and "KEY VALUE pairs" in line and "\n" not in line
    with pytest.raises(ConfigError, match=r"'SOLVER.BASE_LR': no value: overrides are KEY VALUE pairs, got 3"):
        merge_config_list(cfg, ["SOLVER.MAX_ITER", "5", "SOLVER.BASE_LR"])
    assert cfg.SOLVER.MAX_ITER != 5  # nothing merged from a malformed list


def test_value_of_the_wrong_type_is_a_config_error_naming_key_value_and_type():
    cfg = setup_cfg(freeze=False)
    with pytest.raises(ConfigError) as info:
        merge_config_list(cfg, ["SOLVER.BASE_LR", "abc"])
    assert str(info.value) == ("SOLVER.BASE_LR abc (in the command line): type str, but the key holds type float "
                               "(currently 0.001)")
    assert cfg.SOLVER.BASE_LR == 0.001
    with pytest.raises(ConfigError, match=r"^SOLVER.MAX_ITER 1.5 \(in the command line\): type float, but the "
                                          r"key holds type int \(currently 40000\)$"):
        merge_config_list(cfg, ["SOLVER.MAX_ITER", "1.5"])


@pytest.mark.parametrize("device, available, count, message", [
    ("cuda", False, 0, "MODEL.DEVICE cuda: CUDA is not available to this torch"),
    ("cuda:3", True, 1, "MODEL.DEVICE cuda:3: only 1 CUDA device(s)"),
    ("gpu", True, 1, "MODEL.DEVICE 'gpu': not a device ("),
])
def test_unusable_model_device_is_a_config_error_before_the_model_is_built(monkeypatch, device, available, count,
                                                                           message):
    import torch

    from yolact_d2.runtime.run_checks import check_yolact_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    cfg = setup_cfg(SYNTHETIC_CONFIG, ["MODEL.DEVICE", device])
    with pytest.raises(ConfigError) as info:
        check_yolact_config(cfg)
    assert str(info.value).startswith(message), str(info.value)
    check_yolact_config(setup_cfg(SYNTHETIC_CONFIG, ["MODEL.DEVICE", "cpu"]))  # cpu is always usable


@pytest.mark.parametrize("key, value, start", [
    ("SOLVER.OPTIMIZER", "ADAM", "error: SOLVER.OPTIMIZER: must be 'SGD' or 'ADAMW', got 'ADAM'"),
    ("INPUT.YOLACT_AUGMENTATIONS", "['mirrror']", "error: INPUT.YOLACT_AUGMENTATIONS: unknown ['mirrror']"),
    ("MODEL.RESNETS.DEPTH", "19", "error: MODEL.RESNETS.DEPTH: must be one of [18, 34, 50, 101, 152], got 19"),
])
def test_train_net_rejects_an_unusable_config_value_in_one_line(tmp_path, key, value, start):
    """A value the model, the mapper or the optimizer cannot use: one line on stderr, no traceback on
    either stream (Detectron2's logger prints to stdout)."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", SYNTHETIC_CONFIG, key, value,
         "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(start), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_train_net_odd_overrides_one_line_on_stderr():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", SYNTHETIC_CONFIG, "SOLVER.STEPS (1120,)"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr  # one line
    assert proc.stderr.startswith("error: the command line: 'SOLVER.STEPS (1120,)'")
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "torch.jit.script" not in proc.stderr  # the deprecation warning of detectron2's imports


@pytest.mark.parametrize("loader", ["train", "test"])
def test_misspelt_dataset_mapper_name_is_an_error_for_both_loaders(loader):
    from yolact_d2 import YolactTrainer

    cfg = setup_cfg(SYNTHETIC_CONFIG, ["INPUT.DATASET_MAPPER_NAME", "yolcat"])
    with pytest.raises(ConfigError) as info:
        if loader == "train":
            YolactTrainer.build_train_loader(cfg)
        else:
            YolactTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])
    assert format_user_error(info.value) == (
        "error: INPUT.DATASET_MAPPER_NAME 'yolcat': unknown mapper (use one of 'yolact', 'detectron2')"
    )


def test_stock_mapper_for_evaluation_when_asked_for():
    from detectron2.data import DatasetMapper

    from yolact_d2.data.dataset_mapper import YolactDatasetMapper
    from yolact_d2.engine import build_dataset_mapper

    cfg = setup_cfg(SYNTHETIC_CONFIG, ["INPUT.DATASET_MAPPER_NAME", "detectron2"])
    assert type(build_dataset_mapper(cfg, is_train=False)) is DatasetMapper
    assert isinstance(build_dataset_mapper(setup_cfg(SYNTHETIC_CONFIG), is_train=False), YolactDatasetMapper)


@pytest.mark.parametrize("text, message", [
    ("", "{f}: holds nothing (an empty file), not a mapping of config keys such as MODEL: ..."),
    ("- MODEL\n- SOLVER\n", "{f}: holds a list, not a mapping of config keys such as MODEL: ..."),
    ("42\n", "{f}: holds an int, not a mapping of config keys such as MODEL: ..."),
    ("_BASE_: missing_base.yaml\n", "{f}: its _BASE_ chain names {d}/missing_base.yaml, which does not exist"),
    ("_BASE_: listed.yaml\n", "{d}/listed.yaml: holds a list, not a mapping of config keys such as MODEL: ..."),
    ("MODEL:\n  YOLACT: 5\n", "MODEL.YOLACT (in {f}): given 5, but it is a group of keys (MODEL.YOLACT.*) (check the "
                              "indentation there)"),
    ("SOLVER:\n  BASE_LR:\n    X: 1\n", "SOLVER.BASE_LR (in {f}): given a group of keys, but it is a value (0.001)"),
])
def test_config_file_that_is_not_a_mapping_of_keys_is_a_config_error(tmp_path, text, message):
    (tmp_path / "listed.yaml").write_text("- a\n")
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        setup_cfg(str(path))
    assert str(info.value).startswith(message.format(f=path, d=tmp_path)), str(info.value)


def test_group_of_keys_given_a_value_on_the_command_line():
    with pytest.raises(ConfigError, match=r"^MODEL.YOLACT \(in the command line\): given 5, but it is a group of keys "
                                          r"\(MODEL.YOLACT.\*\) \(set MODEL.YOLACT.KEY VALUE\)$"):
        setup_cfg(None, ["MODEL.YOLACT", "5"])
