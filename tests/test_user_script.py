"""A user's own script that builds the API objects itself (no train_net.py): a config that would build
another model is refused in one line, and DATASETS.COCO_INSTANCES is registered by whatever builds data
from the config (YolactTrainer's loaders and evaluator)."""
import os
import subprocess
import sys
import textwrap

import pytest

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY

from yolact_d2 import YolactPredictor, YolactTrainer, add_yolact_config
from yolact_d2.data.datasets.coco_from_config import DatasetNameConflictError
from yolact_d2.modeling import Yolact
from yolact_d2.runtime.reporting import format_user_error
from yolact_d2.runtime.run_checks import check_meta_architecture
from yolact_d2.utils.errors import ConfigError

from conftest import small_synthetic_coco, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bare_cfg():
    """What the issue's user wrote: Detectron2's defaults plus the YOLACT keys, no config file."""
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.mark.parametrize("build", [YolactTrainer, YolactPredictor, YolactTrainer.build_model],
                         ids=["trainer", "predictor", "build_model"])
def test_a_config_of_another_model_is_refused_in_one_line(build):
    with pytest.raises(ConfigError) as info:
        build(_bare_cfg())
    line = format_user_error(info.value)
    assert line.startswith("error: MODEL.META_ARCHITECTURE 'GeneralizedRCNN': is not YOLACT")
    assert "\n" not in line and "MODEL.META_ARCHITECTURE 'Yolact'" in line


def test_export_tool_refuses_a_config_of_another_model(tmp_path):
    cfg_file = tmp_path / "rcnn.yaml"
    cfg_file.write_text(_bare_cfg().dump())
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "export_model.py"), "--format", "torchscript",
         "--config-file", str(cfg_file), "--output", str(tmp_path / "m.pt")],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: MODEL.META_ARCHITECTURE 'GeneralizedRCNN': is not YOLACT")
    assert "Traceback" not in proc.stderr and not (tmp_path / "m.pt").exists()


def test_a_registered_subclass_of_yolact_is_accepted_and_an_unknown_name_refused():
    @META_ARCH_REGISTRY.register()
    class MyYolactForTheGuardTest(Yolact):
        pass

    cfg = tiny_cfg()
    cfg.MODEL.META_ARCHITECTURE = "MyYolactForTheGuardTest"
    check_meta_architecture(cfg)  # no error
    cfg.MODEL.META_ARCHITECTURE = "Yolcat"
    with pytest.raises(ConfigError, match="MODEL.META_ARCHITECTURE 'Yolcat': is not YOLACT"):
        check_meta_architecture(cfg)


@pytest.fixture(scope="module")
def coco_dirs(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 6, 3, seed=5)


def _cfg_with_own_data(coco_dirs, out, names=("us_train", "us_val")):
    (train_json, train_root), (val_json, val_root) = coco_dirs
    return tiny_cfg(num_classes=6, opts=[
        "DATASETS.COCO_INSTANCES", [[names[0], train_json, train_root], [names[1], val_json, val_root]],
        "DATASETS.TRAIN", (names[0],), "DATASETS.TEST", (names[1],),
        "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2, "SOLVER.STEPS", (),
        "SOLVER.WARMUP_ITERS", 1, "SOLVER.CHECKPOINT_PERIOD", 100, "OUTPUT_DIR", str(out),
    ])


def _unregister(*names):
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_trainer_registers_coco_instances_itself(coco_dirs, tmp_path):
    """In process: the trainer's loader registers the datasets, the final evaluation finds them, a
    second registration of the same entries (YolactTrainer.test) changes nothing, other data under a
    registered name is an error naming both."""
    _unregister("us_train", "us_val")
    cfg = _cfg_with_own_data(coco_dirs, tmp_path / "out")
    try:
        trainer = YolactTrainer(cfg)
        loader = DatasetCatalog["us_train"]
        trainer.resume_or_load(resume=False)
        trainer.train()
        assert trainer.iter == 2
        results = YolactTrainer.test(cfg, trainer.model)  # loaders + evaluator register again: same entries
        assert set(results) == {"bbox", "segm"} and 0.0 <= results["segm"]["AP"] <= 100.0
        assert DatasetCatalog["us_train"] is loader
        assert MetadataCatalog.get("us_val").thing_classes == MetadataCatalog.get("us_train").thing_classes

        (train_json, train_root), (val_json, val_root) = coco_dirs
        clash = cfg.clone()
        clash.DATASETS.COCO_INSTANCES = [["us_train", val_json, val_root]]  # the name, other data
        with pytest.raises(DatasetNameConflictError, match="'us_train' .* is already registered with other data"):
            YolactTrainer.build_train_loader(clash)
        with pytest.raises(DatasetNameConflictError):
            YolactTrainer.build_evaluator(clash, "us_val")
    finally:
        _unregister("us_train", "us_val")


def test_a_user_script_trains_and_evaluates_its_own_coco_data(coco_dirs, tmp_path):
    """The issue's user script, in its own process: a config file, DATASETS.COCO_INSTANCES, YolactTrainer.
    It failed with "dataset 'mine_train' is not registered"."""
    (train_json, train_root), (val_json, val_root) = coco_dirs
    script = tmp_path / "my_training.py"
    script.write_text(textwrap.dedent(f"""
        from detectron2.config import get_cfg
        from yolact_d2 import YolactTrainer, add_yolact_config

        cfg = get_cfg()
        add_yolact_config(cfg)
        cfg.merge_from_file({os.path.join(ROOT, "configs", "Synthetic", "yolact_R_18_FPN_synthetic.yaml")!r})
        cfg.merge_from_list([
            "DATASETS.COCO_INSTANCES", [["mine_train", {train_json!r}, {train_root!r}],
                                        ["mine_val", {val_json!r}, {val_root!r}]],
            "DATASETS.TRAIN", ("mine_train",), "DATASETS.TEST", ("mine_val",), "INPUT.IMAGE_SIZE", 128,
            "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2, "SOLVER.STEPS", (), "SOLVER.WARMUP_ITERS", 1,
            "OUTPUT_DIR", {str(tmp_path / "out")!r},
        ])
        trainer = YolactTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        print("segm AP", trainer.last_eval_results["segm"]["AP"])
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "segm AP" in proc.stdout and (tmp_path / "out" / "model_final.pth").is_file()
