"""Numeric config values out of range, pixel statistics that do not fit INPUT.FORMAT, GroupNorm widths,
an unusable OUTPUT_DIR and empty datasets: each one ConfigError / DataError naming the key or dataset,
before training, instead of a crash deep in the run (some only at the evaluation after training).
The model's keys are checked by the modules that read them, as the model is built."""
import math
import os
import subprocess
import sys

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from yolact_d2.engine.loaders import build_train_loader
from yolact_d2.modeling.config_checks import ValueRange
from yolact_d2.runtime.config_loading import setup_cfg
from yolact_d2.runtime.run_checks import (
    check_num_classes,
    check_output_dir,
    check_training_config,
    check_yolact_config,
)
from yolact_d2.utils.errors import ConfigError, DataError

from conftest import CONFIG_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC_CONFIG = os.path.join(CONFIG_DIR, "Synthetic", "yolact_R_18_FPN_synthetic.yaml")


def build_on_meta(cfg):
    """The model of ``cfg`` with its tensors on the meta device: every module's from_config (and its
    checks) runs, no weight is allocated or initialised."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        return build_model(cfg)


def test_range_bounds_inclusive_open_and_integer():
    fraction, count = ValueRange(0, 1), ValueRange(1, integer=True)
    assert [fraction.admits(v) for v in (0, 0.0, 0.5, 1, 1.0001, -1e-9)] == [True, True, True, True, False, False]
    assert [count.admits(v) for v in (1, 2, 0, 1.5, 3.0, True)] == [True, True, False, False, True, False]
    positive, below_one = ValueRange(0, open_low=True), ValueRange(0, 1, open_high=True)
    assert [positive.admits(v) for v in (0, 1e-12, 5)] == [False, True, True]
    assert [below_one.admits(v) for v in (0, 0.999, 1)] == [True, True, False]
    assert not fraction.admits(math.nan) and not fraction.admits("0.5") and not ValueRange(0).admits(None)
    assert (str(fraction), str(count), str(positive), str(below_one)) == (
        "a number in [0, 1]", "an integer >= 1", "a number > 0", "a number in [0, 1)")


@pytest.mark.parametrize("key, value, message", [
    ("TEST.DETECTIONS_PER_IMAGE", "0", "TEST.DETECTIONS_PER_IMAGE 0: must be an integer >= 1"),
    ("MODEL.YOLACT.SCORE_THRESH_TEST", "1.5", "MODEL.YOLACT.SCORE_THRESH_TEST 1.5: must be a number in [0, 1]"),
    ("MODEL.YOLACT.NMS_THRESH_TEST", "-0.1", "MODEL.YOLACT.NMS_THRESH_TEST -0.1: must be a number in [0, 1]"),
    ("MODEL.YOLACT.NUM_PROTOTYPES", "0", "MODEL.YOLACT.NUM_PROTOTYPES 0: must be an integer >= 1"),
    ("MODEL.YOLACT.BBOX_VARIANCES", "[0.1, 0.0]",
     "MODEL.YOLACT.BBOX_VARIANCES [0.1, 0.0]: must be a number > 0 (entry 0.0)"),
    ("MODEL.YOLACT.LOSS_MASK_WEIGHT", "-1.0", "MODEL.YOLACT.LOSS_MASK_WEIGHT -1.0: must be a number >= 0"),
    ("MODEL.FPN.OUT_CHANNELS", "0", "MODEL.FPN.OUT_CHANNELS 0: must be an integer >= 1"),
    ("MODEL.FPN.OUT_CHANNELS", "48", "MODEL.FPN.OUT_CHANNELS 48: is not a multiple of the 32 groups of "
                                     "MODEL.FPN.NORM 'GN' (use a multiple of 32, or another MODEL.FPN.NORM)"),
    ("MODEL.PIXEL_MEAN", "[1.0]", "MODEL.PIXEL_MEAN [1.0]: has 1 values but INPUT.FORMAT 'RGB' has 3 channel(s) "
                                  "(give one value per channel, in INPUT.FORMAT order)"),
    ("MODEL.PIXEL_STD", "[1.0, 0.0, 1.0]", "MODEL.PIXEL_STD [1.0, 0.0, 1.0]: must be a number > 0 (entry 0.0)"),
    ("INPUT.FORMAT", "L", "MODEL.PIXEL_MEAN [123.68, 116.78, 103.94]: has 3 values but INPUT.FORMAT 'L' has 1"),
])
def test_model_value_out_of_range_is_a_config_error(key, value, message):
    cfg = setup_cfg(SYNTHETIC_CONFIG, [key, value])
    with pytest.raises(ConfigError) as info:
        build_on_meta(cfg)
    assert str(info.value).startswith(message), str(info.value)


def test_group_norm_width_and_grey_input_that_fit_are_accepted():
    build_on_meta(setup_cfg(SYNTHETIC_CONFIG, ["MODEL.RESNETS.NORM", "GN", "MODEL.RESNETS.STEM_OUT_CHANNELS",
                                               "32", "MODEL.RESNETS.RES2_OUT_CHANNELS", "32"]))
    build_on_meta(setup_cfg(SYNTHETIC_CONFIG, ["INPUT.FORMAT", "L", "MODEL.PIXEL_MEAN", "[100.0]",
                                               "MODEL.PIXEL_STD", "[50.0]"]))
    with pytest.raises(ConfigError, match=r"^MODEL.RESNETS.STEM_OUT_CHANNELS 48: is not a multiple of the 32 groups "
                                          r"of MODEL.RESNETS.NORM 'GN'"):
        build_on_meta(setup_cfg(SYNTHETIC_CONFIG, ["MODEL.RESNETS.NORM", "GN",
                                                   "MODEL.RESNETS.STEM_OUT_CHANNELS", "48"]))


@pytest.mark.parametrize("opts, message", [
    (["SOLVER.BASE_LR", "-1.0"], "SOLVER.BASE_LR -1.0: must be a number >= 0"),
    (["SOLVER.MAX_ITER", "0"], "SOLVER.MAX_ITER 0: must be an integer >= 1"),
    (["SOLVER.CHECKPOINT_PERIOD", "0"], "SOLVER.CHECKPOINT_PERIOD 0: must be an integer >= 1"),
    (["DATALOADER.NUM_WORKERS", "-1"], "DATALOADER.NUM_WORKERS -1: must be an integer >= 0"),
    (["SOLVER.GAMMA", "0.0"], "SOLVER.GAMMA 0.0: must be a number > 0"),
    (["SOLVER.STEPS", "(-1,)"], "SOLVER.STEPS (-1,): must be an integer >= 0 (entry -1)"),
    (["SOLVER.MAX_ITER", "100", "SOLVER.STEPS", "(100,)"],
     "SOLVER.STEPS (100,): must increase and lie below SOLVER.MAX_ITER 100"),
    (["SOLVER.STEPS", "(900, 800)"], "SOLVER.STEPS (900, 800): must increase and lie below SOLVER.MAX_ITER 1600"),
    (["MODEL.YOLACT.NEGATIVE_IOU_THRESHOLD", "0.6"],
     "MODEL.YOLACT.NEGATIVE_IOU_THRESHOLD 0.6: is above MODEL.YOLACT.POSITIVE_IOU_THRESHOLD 0.5"),
])
def test_training_value_out_of_range_is_a_config_error(opts, message):
    with pytest.raises(ConfigError) as info:
        check_training_config(setup_cfg(SYNTHETIC_CONFIG, opts))
    assert str(info.value).startswith(message), str(info.value)


def test_every_shipped_config_passes_the_value_checks():
    for folder, _, files in os.walk(CONFIG_DIR):
        for name in files:
            if name.endswith(".yaml"):
                cfg = setup_cfg(os.path.join(folder, name), ["MODEL.DEVICE", "cpu"])
                check_yolact_config(cfg)
                build_on_meta(cfg)
                check_training_config(cfg)
    # Detectron2 drops steps after MAX_ITER with a warning: still allowed
    check_training_config(setup_cfg(SYNTHETIC_CONFIG, ["SOLVER.MAX_ITER", "10", "SOLVER.STEPS", "(5, 20)"]))


def test_output_dir_that_is_a_file_is_a_config_error(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("keep me")
    with pytest.raises(ConfigError, match=rf"^OUTPUT_DIR {path}: cannot be created \(File exists\)$"):
        check_output_dir(setup_cfg(SYNTHETIC_CONFIG, ["OUTPUT_DIR", str(path)]))
    assert path.read_text() == "keep me"
    check_output_dir(setup_cfg(SYNTHETIC_CONFIG, ["OUTPUT_DIR", str(tmp_path / "new" / "dir")]))
    assert (tmp_path / "new" / "dir").is_dir()


@pytest.fixture
def registered():
    """Registers in-memory datasets for one test and removes them afterwards."""
    names = []

    def register(name, records, classes=("a",)):
        DatasetCatalog.register(name, lambda: records)
        if classes is not None:
            MetadataCatalog.get(name).set(thing_classes=list(classes))
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _train_cfg(name):
    return setup_cfg(SYNTHETIC_CONFIG, ["DATASETS.TRAIN", f"('{name}',)", "MODEL.YOLACT.NUM_CLASSES", "1",
                                        "SOLVER.IMS_PER_BATCH", "1"])


def test_training_set_without_images_is_a_data_error(registered):
    name = registered("_cv_empty", [])
    with pytest.raises(DataError, match=r"^DATASETS.TRAIN: dataset '_cv_empty': has no images$"):
        build_train_loader(_train_cfg(name))


def test_training_set_without_usable_annotations_is_a_data_error(registered, tmp_path):
    crowd = {"bbox": [0, 0, 4, 4], "bbox_mode": 1, "category_id": 0, "iscrowd": 1}
    records = [{"file_name": str(tmp_path / "x.png"), "image_id": 1, "height": 8, "width": 8, "annotations": []},
               {"file_name": str(tmp_path / "y.png"), "image_id": 2, "height": 8, "width": 8,
                "annotations": [crowd]}]
    name = registered("_cv_no_annotations", records)
    with pytest.raises(DataError, match=r"^DATASETS.TRAIN: no image of '_cv_no_annotations' has an annotation to "
                                        r"train on \(all have none or only crowd ones\)"):
        build_train_loader(_train_cfg(name))


def test_test_set_without_images_is_found_when_its_classes_are_read(registered):
    name = registered("_cv_empty_test", [], classes=None)  # like a json registered by DATASETS.COCO_INSTANCES
    with pytest.raises(DataError, match=r"^DATASETS.TEST: dataset '_cv_empty_test': has no images$"):
        check_num_classes(_train_cfg(name), [name], "DATASETS.TEST")


@pytest.mark.parametrize("opts, start", [
    (["TEST.DETECTIONS_PER_IMAGE", "0"], "error: TEST.DETECTIONS_PER_IMAGE 0: must be an integer >= 1"),
    (["OUTPUT_DIR", "{file}"], "error: OUTPUT_DIR {file}: cannot be created"),
])
def test_train_net_reports_a_bad_value_in_one_line_before_training(tmp_path, opts, start):
    """Through a real train_net.py: one line on stderr, no traceback, no training started (without the
    check, DETECTIONS_PER_IMAGE 0 crashed in the evaluation after the whole training)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    opts = [o.replace("{file}", str(blocker)) for o in opts]
    out = ["OUTPUT_DIR", str(tmp_path / "out")] if "OUTPUT_DIR" not in opts else []
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", SYNTHETIC_CONFIG, *out, *opts],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(start.replace("{file}", str(blocker))), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Starting training" not in proc.stdout + proc.stderr
    assert blocker.read_text() == "x"
