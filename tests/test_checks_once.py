"""Each check of a run runs once, from one place: a short training (one iteration and its final
evaluation) and an ``--eval-only`` run through ``yolact_d2.cli.train.cli_main``, with every call of a
check function counted (a profile hook sees the calls whatever name a module imported them under)."""
import collections
import contextlib
import pathlib
import sys

import pytest

import yolact_d2
from yolact_d2.cli.train import cli_main

from conftest import CONFIG_DIR, small_synthetic_coco

PACKAGE = pathlib.Path(yolact_d2.__file__).resolve().parent
SYNTHETIC_CONFIG = str(pathlib.Path(CONFIG_DIR) / "Synthetic" / "yolact_R_18_FPN_synthetic.yaml")

# The checks of a run, and how many times each runs in a training / an --eval-only run.
RUN_CHECKS = {
    "check_yolact_config": (1, 1),
    "check_meta_architecture": (1, 1),
    "_check_device": (1, 1),
    "check_output_dir": (1, 1),
    "check_training_config": (1, 0),
    "check_train_batch": (1, 0),
    "check_class_names": (1, 1),
}


@pytest.fixture(scope="module")
def coco_dirs(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 4, 2, seed=5)


@contextlib.contextmanager
def counted_checks():
    """Yields a Counter of the calls of yolact_d2's check functions inside the block, by name; for the
    dataset checks also by (name, key), and every key a ``check_value_ranges`` call checked."""
    calls = collections.Counter()
    package = str(PACKAGE)

    def profile(frame, event, arg):
        code = frame.f_code
        if event != "call" or not code.co_filename.startswith(package):
            return
        name = code.co_name
        if not (name.startswith("check_") or name.startswith("_check_")):
            return
        calls[name] += 1
        if name in ("check_num_classes", "check_datasets_registered"):
            calls[(name, frame.f_locals["key"])] += 1
        elif name == "check_value_ranges":
            for key in frame.f_locals["ranges"]:
                calls[(name, key)] += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(previous)


def _run(coco_dirs, out, *args):
    (train_json, train_root), (val_json, val_root) = coco_dirs
    argv = [
        "--config-file", SYNTHETIC_CONFIG, *args,
        "DATASETS.COCO_INSTANCES", str([["once_train", train_json, train_root], ["once_val", val_json, val_root]]),
        "DATASETS.TRAIN", "('once_train',)", "DATASETS.TEST", "('once_val',)", "INPUT.IMAGE_SIZE", "128",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "1", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "0",
        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out),
    ]
    with counted_checks() as calls:
        assert cli_main(argv) == 0
    return calls


def _assert_each_once(calls, mode: int):
    for name, expected in RUN_CHECKS.items():
        assert calls[name] == expected[mode], (name, calls[name])
    # the model is built once and checks its NMS type then, not per image
    assert calls["check_nms_type"] == 1
    # every numeric key is checked by one module, once (the model's modules, and the training's keys)
    ranges = {key: n for key, n in calls.items() if isinstance(key, tuple) and key[0] == "check_value_ranges"}
    assert ranges and all(n == 1 for n in ranges.values()), ranges
    assert ("check_value_ranges", "TEST.DETECTIONS_PER_IMAGE") in ranges
    assert (("check_value_ranges", "SOLVER.MAX_ITER") in ranges) == (mode == 0)


def test_a_training_runs_each_check_once(coco_dirs, tmp_path):
    calls = _run(coco_dirs, tmp_path / "train")
    assert (tmp_path / "train" / "model_final.pth").is_file()  # it trained and evaluated
    _assert_each_once(calls, 0)
    # each dataset key's classes once: DATASETS.TRAIN once loaded, DATASETS.TEST before training
    # (not again at the evaluation)
    assert calls["check_num_classes"] == 2
    assert calls[("check_num_classes", "DATASETS.TRAIN")] == calls[("check_num_classes", "DATASETS.TEST")] == 1
    assert calls[("check_datasets_registered", "DATASETS.TRAIN")] == 1
    assert calls[("check_datasets_registered", "DATASETS.TEST")] == 1


def test_eval_only_runs_each_check_once(coco_dirs, tmp_path):
    calls = _run(coco_dirs, tmp_path / "eval", "--eval-only", "MODEL.WEIGHTS", "random")
    assert (tmp_path / "eval" / "inference" / "once_val" / "coco_instances_results.json").is_file()
    _assert_each_once(calls, 1)
    assert calls["check_num_classes"] == calls[("check_num_classes", "DATASETS.TEST")] == 1
    assert calls["check_datasets_registered"] == calls[("check_datasets_registered", "DATASETS.TEST")] == 1
