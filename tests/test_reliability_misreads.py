"""No input is silently misread (docs/RELIABILITY.md, "Silent wrong results" and "Unclear failures"):
dataset names registered twice, eval-only without weights, 0..1 float images, json boxes that disagree
with their masks, class counts of every dataset, a full disk during a checkpoint write, YAML errors."""
import errno
import json
import os
import uuid

import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from yolact_d2.data.datasets import generate_synthetic_dataset, register_datasets_from_config
from yolact_d2.utils.errors import ConfigError

from conftest import captured, tiny_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.usefixtures("one_thread")


def _unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("misreads_synthetic"))
    json_file = generate_synthetic_dataset(root, "train", 4, seed=5, image_size=(48, 64))
    return json_file, os.path.join(root, "train")


def _entry_cfg(name, json_file, image_root, *opts):
    return tiny_cfg(num_classes=6, opts=["DATASETS.COCO_INSTANCES", [[name, json_file, image_root]], *opts])


# ------------------------------------------------------------------------------------------------
# 1. DATASETS.COCO_INSTANCES names that are already registered
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("existing", ["coco_2017_train", "yolact_synthetic_train"])
def test_entry_with_a_registered_name_is_an_error_naming_both_sources(synthetic, existing):
    import detectron2.data.datasets  # noqa: F401 (registers the built-ins)

    import yolact_d2.data.datasets  # noqa: F401 (registers yolact_synthetic_*)

    json_file, image_root = synthetic
    old_json = MetadataCatalog.get(existing).json_file
    with pytest.raises(ConfigError) as e:
        register_datasets_from_config(_entry_cfg(existing, json_file, image_root))
    message = str(e.value)
    assert message.startswith(f"DATASETS.COCO_INSTANCES[0]: the dataset name '{existing}' (json {json_file}")
    assert f"already registered with other data: {old_json}" in message
    assert f"DATASETS.COCO_INSTANCES_REPLACE \"['{existing}']\"" in message
    assert MetadataCatalog.get(existing).json_file == old_json  # nothing changed


def test_same_entry_twice_is_fine_and_replace_reregisters_with_a_warning(synthetic):
    json_file, image_root = synthetic
    name = _unique("dup")
    cfg = _entry_cfg(name, json_file, image_root)
    assert register_datasets_from_config(cfg) == [name]
    assert register_datasets_from_config(cfg) == [name]  # setup run twice in one process
    other_root = os.path.dirname(json_file)
    with pytest.raises(ConfigError, match=f"'{name}' .* already registered with other data: {json_file}"):
        register_datasets_from_config(_entry_cfg(name, json_file, other_root))
    with captured() as records:
        register_datasets_from_config(
            _entry_cfg(name, json_file, other_root, "DATASETS.COCO_INSTANCES_REPLACE", [name])
        )
    text = "\n".join(r.getMessage() for r in records)
    assert f"re-registering dataset '{name}'" in text and f"registered with {json_file} (images {image_root})" in text
    assert MetadataCatalog.get(name).image_root == other_root
    # the replaced registration is the one used
    assert DatasetCatalog.get(name)[0]["file_name"].startswith(other_root)


# ------------------------------------------------------------------------------------------------
# 4. json bbox vs mask extent
# ------------------------------------------------------------------------------------------------
def _box_mask_json(tmp_path):
    square = [[10, 10, 30, 10, 30, 30, 10, 30]]  # extent XYXY [10, 10, 30, 30]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "segmentation": square},
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [35, 5, 20, 30], "segmentation": square},
            {"id": 13, "image_id": 1, "category_id": 1, "bbox": [12, 12, 20, 20], "segmentation": square},
        ],
    }
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(data))
    (tmp_path / "imgs").mkdir()
    return str(path), str(tmp_path / "imgs")


def test_json_bbox_that_disagrees_with_its_mask_warns_once_with_counts(tmp_path):
    json_file, image_root = _box_mask_json(tmp_path)
    name = _unique("boxmask")
    register_datasets_from_config(_entry_cfg(name, json_file, image_root))
    with captured() as records:
        dicts = DatasetCatalog.get(name)
    warnings = [r.getMessage() for r in records if "disagrees with the extent" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{json_file}: 1 of 3 annotations have a bbox that disagrees")
    assert "image_id 1), annotation id 12: bbox [35, 5, 55, 35] vs mask extent [10, 10, 30, 30] (XYXY), IoU 0.00" \
        in warnings[0]
    assert "INPUT.GT_BOX_SOURCE 'mask'" in warnings[0]
    # the default keeps the json box (the original's behaviour)
    assert [a["bbox"] for a in dicts[0]["annotations"]] == [[10, 10, 20, 20], [35, 5, 20, 30], [12, 12, 20, 20]]


@pytest.mark.parametrize("source,expected", [
    ("json", [[10, 10, 30, 30], [35, 5, 55, 35]]),
    ("mask", [[10, 10, 30, 30], [10, 10, 30, 30]]),
])
def test_gt_box_source_chooses_the_training_boxes(tmp_path, source, expected):
    from detectron2.structures import BoxMode

    from yolact_d2.data.dataset_mapper import YolactDatasetMapper

    json_file, image_root = _box_mask_json(tmp_path)
    name = _unique("boxsrc")
    register_datasets_from_config(_entry_cfg(name, json_file, image_root))
    record = DatasetCatalog.get(name)[0]
    mapper = YolactDatasetMapper(tiny_cfg(num_classes=1, opts=["INPUT.GT_BOX_SOURCE", source]), is_train=True)
    kept = mapper._check_annotations(record["annotations"][:2], record, (40, 60))
    assert [a["bbox_mode"] for a in kept] == [BoxMode.XYXY_ABS] * 2
    assert [list(map(float, a["bbox"])) for a in kept] == expected


def test_gt_box_source_must_be_json_or_mask():
    from yolact_d2.data.dataset_mapper import YolactDatasetMapper

    with pytest.raises(ConfigError, match="INPUT.GT_BOX_SOURCE 'box': must be 'json' or 'mask'"):
        YolactDatasetMapper(tiny_cfg(opts=["INPUT.GT_BOX_SOURCE", "box"]), is_train=True)


# ------------------------------------------------------------------------------------------------
# 6. Full disk during a checkpoint write
# ------------------------------------------------------------------------------------------------
def _full_disk_save(wrapped_by_torch):
    def save(obj, f, *args, **kwargs):
        f.write(b"x" * 100)  # part of the file, then the disk is full
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            if not wrapped_by_torch:
                raise
            # what torch.save raises when the file's write fails (the OSError is the context)
            raise RuntimeError(  # noqa: B904 (torch chains it implicitly: the OSError is only the context)
                "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    return save


@pytest.mark.parametrize("wrapped_by_torch", [False, True], ids=["oserror", "torch_runtimeerror"])
def test_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_previous(tmp_path, monkeypatch,
                                                                                 wrapped_by_torch):
    import torch
    from torch import nn

    from yolact_d2.runtime import checkpointer as atomic
    from yolact_d2.runtime.reporting import format_user_error
    from yolact_d2.utils.errors import UserError

    model = nn.Linear(2, 2)
    checkpointer = atomic.AtomicDetectionCheckpointer(model, save_dir=str(tmp_path))
    checkpointer.save("model_0000001")
    before = (tmp_path / "last_checkpoint").read_text()
    monkeypatch.setattr(atomic.torch, "save", _full_disk_save(wrapped_by_torch))
    with pytest.raises(UserError) as e:
        checkpointer.save("model_0000002")
    monkeypatch.undo()
    line = format_user_error(e.value)
    target, previous = tmp_path / "model_0000002.pth", tmp_path / "model_0000001.pth"
    assert line.startswith(f"error: cannot write checkpoint {target}: No space left on device (ENOSPC); ")
    assert f" free on {tmp_path}; the previous checkpoint {previous} is kept (free some space" in line
    assert "\n" not in line
    assert (tmp_path / "last_checkpoint").read_text() == before == "model_0000001.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no partial file
    loaded = torch.load(str(previous), weights_only=True)
    assert torch.equal(loaded["model"]["weight"], model.state_dict()["weight"])


# ------------------------------------------------------------------------------------------------
# 3. Predictor inputs that would be misread
# ------------------------------------------------------------------------------------------------
def test_predictor_rejects_a_0_to_1_float_image_and_other_misreadable_inputs():
    import torch

    from yolact_d2.predictor import _as_bgr_image

    rng = np.random.default_rng(0)
    unit = rng.random((8, 10, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"looks like a 0\.\.1 image. Convert it first: \(image \* 255\)"
                                         r"\.astype\(np\.uint8\), or pass image \* 255"):
        _as_bgr_image(unit)
    assert _as_bgr_image(unit * 255).dtype == np.float32  # 0..255 floats are fine
    assert not _as_bgr_image(np.zeros((8, 10, 3), np.float64)).any()  # an all-black float image too
    assert _as_bgr_image(np.ones((8, 10, 3), np.uint8)).max() == 1  # uint8 is never rescaled
    with pytest.raises(ValueError, match=r"looks like C x H x W. Pass image.transpose\(1, 2, 0\)"):
        _as_bgr_image(np.zeros((3, 8, 10), np.uint8))
    with pytest.raises(ValueError, match=r"For a torch tensor, pass image.permute\(1, 2, 0\)"):
        _as_bgr_image(torch.zeros(3, 8, 10))


# ------------------------------------------------------------------------------------------------
# 2, 5, 7, 8. train_net.py: eval-only weights, class counts, YAML errors, multi-machine timeout
# ------------------------------------------------------------------------------------------------
SYNTHETIC_CONFIG = os.path.join(ROOT, "configs", "Synthetic", "yolact_R_18_FPN_synthetic.yaml")


def _train_net_module():
    import importlib.util
    import sys

    sys.path.insert(0, ROOT)
    try:
        spec = importlib.util.spec_from_file_location("train_net_misreads", os.path.join(ROOT, "train_net.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(ROOT)
    return module


def _train_net(*args, timeout=300):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_net.py"), *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env=dict(os.environ, PYTHONPATH=ROOT),
    )
    return proc.returncode, proc.stdout, proc.stderr


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_eval_only_without_weights_is_refused_unless_random_is_asked(tmp_path):
    from yolact_d2.utils.errors import ConfigError as CE

    train_net = _train_net_module()
    out = str(tmp_path / "out")

    def setup(*opts, resume=()):
        args = train_net.get_parser().parse_args(
            ["--config-file", SYNTHETIC_CONFIG, "--eval-only", *resume, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", out,
             *opts])
        return train_net.setup(args), args

    # the synthetic config says random (it trains from scratch): that is no choice to evaluate an untrained model
    cfg, args = setup()
    with pytest.raises(CE, match=r"^--eval-only: MODEL.WEIGHTS is random \(from .*yolact_R_18_FPN_synthetic.yaml\): "
                                 r"the model would be evaluated with random weights \(give MODEL.WEIGHTS .*"
                                 r"MODEL.WEIGHTS random on the command line evaluates an untrained model"):
        train_net.check_eval_weights(cfg, args)
    cfg, args = setup("MODEL.WEIGHTS", "")
    with pytest.raises(CE, match=r"^--eval-only: MODEL.WEIGHTS is empty: the model would be evaluated with random "
                                 r"weights \(give MODEL.WEIGHTS .*MODEL.WEIGHTS random on the command line evaluates "):
        train_net.check_eval_weights(cfg, args)
    cfg, args = setup("MODEL.WEIGHTS", "random")
    assert cfg.MODEL.WEIGHTS == "random" and args.random_weights
    train_net.check_eval_weights(cfg, args)  # explicit: allowed
    cfg, args = setup(resume=["--resume"])
    with pytest.raises(CE):  # --resume without a last_checkpoint: still nothing to load
        train_net.check_eval_weights(cfg, args)
    (tmp_path / "out" / "last_checkpoint").write_text("model_final.pth")
    train_net.check_eval_weights(*setup(resume=["--resume"]))
    # through the real entry point: one line, status 1, before any model is built
    rc, stdout, stderr = _train_net("--config-file", SYNTHETIC_CONFIG, "--eval-only", "MODEL.DEVICE", "cpu",
                                    "OUTPUT_DIR", str(tmp_path / "cli"))
    assert rc == 1 and len(_error_lines(stderr)) == 1, stderr[-3000:]
    assert _error_lines(stderr)[0].startswith("error: --eval-only: MODEL.WEIGHTS is random (from ")
    assert "Traceback" not in stdout + stderr and "copypaste" not in stdout + stderr  # the console: one line
    log = (tmp_path / "cli" / "log.txt").read_text()  # the traceback is kept in the log file, for bug reports
    assert "user error\nTraceback (most recent call last):" in log and "in check_eval_weights" in log


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    from yolact_d2.runtime.config_loading import UnknownConfigKeyError
    from yolact_d2.runtime.reporting import format_user_error

    train_net = _train_net_module()
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{SYNTHETIC_CONFIG}"\nSOLVER:\n  BASE_LR: 0.1\n   MAX_ITER: 3\n')
    with pytest.raises(ConfigError) as e:
        train_net.setup(train_net.get_parser().parse_args(["--config-file", str(bad)]))
    assert format_user_error(e.value) == (
        f"error: {bad}:4:12: invalid YAML: mapping values are not allowed here (check the quotes, brackets and "
        "indentation there)"
    )
    child = tmp_path / "child.yaml"  # the error is in the _BASE_ file: that file is named
    child.write_text(f'_BASE_: "{bad}"\n')
    with pytest.raises(ConfigError, match=f"^{bad}:4:12: invalid YAML"):
        train_net.setup(train_net.get_parser().parse_args(["--config-file", str(child)]))
    # unknown keys: a ConfigError and a KeyError (as yacs raises for files)
    args = train_net.get_parser().parse_args(["--config-file", SYNTHETIC_CONFIG, "SOLVER.BASE_LRR", "1"])
    with pytest.raises(UnknownConfigKeyError) as e:
        train_net.setup(args)
    assert isinstance(e.value, KeyError) and isinstance(e.value, ConfigError)
    assert str(e.value).startswith(
        "Non-existent config key: SOLVER.BASE_LRR (in the command line). Did you mean SOLVER.BASE_LR or ")


def test_class_count_of_a_test_set_is_checked_before_training(synthetic, tmp_path):
    from yolact_d2 import YolactTrainer

    json_file, image_root = synthetic
    one_class_json, one_class_root = _box_mask_json(tmp_path)
    train, test = _unique("cc_train"), _unique("cc_test")
    cfg = tiny_cfg(num_classes=6, opts=[
        "DATASETS.COCO_INSTANCES", [[train, json_file, image_root], [test, one_class_json, one_class_root]],
        "DATASETS.TRAIN", (train,), "DATASETS.TEST", (test,), "DATALOADER.NUM_WORKERS", 0,
        "SOLVER.IMS_PER_BATCH", 2, "OUTPUT_DIR", str(tmp_path / "out"),
    ])
    register_datasets_from_config(cfg)
    with pytest.raises(ConfigError, match=rf"^DATASETS.TEST: dataset '{test}' has 1 classes \(thing\) but "
                                          r"MODEL.YOLACT.NUM_CLASSES is 6. Set MODEL.YOLACT.NUM_CLASSES 1."):
        YolactTrainer(cfg)
    cfg.DATASETS.TEST = ("not_registered_anywhere",)
    with pytest.raises(ConfigError, match="^DATASETS.TEST: dataset 'not_registered_anywhere' is not registered"):
        YolactTrainer(cfg)
    cfg.DATASETS.TRAIN = ("misspelt_train",)  # before Detectron2's KeyError that lists every registered name
    with pytest.raises(ConfigError, match="^DATASETS.TRAIN: dataset 'misspelt_train' is not registered"):
        YolactTrainer(cfg)


def test_empty_train_set_and_unusable_batch_size_are_config_errors():
    from detectron2.config import CfgNode

    from yolact_d2.runtime.run_checks import check_train_batch

    cfg = CfgNode({"DATASETS": {"TRAIN": ("x",)}, "SOLVER": {"IMS_PER_BATCH": 4}})
    check_train_batch(cfg, 2)
    cfg.SOLVER.IMS_PER_BATCH = 0
    with pytest.raises(ConfigError, match=r"^SOLVER.IMS_PER_BATCH 0: must be a positive multiple of the 1 "):
        check_train_batch(cfg, 1)
    cfg.SOLVER.IMS_PER_BATCH = 3
    with pytest.raises(ConfigError, match=r"^SOLVER.IMS_PER_BATCH 3: must be a positive multiple of the 2 proc"):
        check_train_batch(cfg, 2)
    cfg.DATASETS.TRAIN = ()
    with pytest.raises(ConfigError, match=r"^DATASETS.TRAIN is empty \(name at least one registered dataset\)$"):
        check_train_batch(cfg, 1)


def test_unregistered_train_dataset_in_a_launch_worker_is_one_line_and_no_traceback(tmp_path):
    rc, stdout, stderr = _train_net(
        "--config-file", SYNTHETIC_CONFIG, "--num-gpus", "2", "MODEL.DEVICE", "cpu",
        "DATASETS.TRAIN", "('synthetic_trian',)", "OUTPUT_DIR", str(tmp_path / "out"),
    )
    assert rc == 1, stderr[-3000:]
    lines = _error_lines(stderr)
    assert 1 <= len(lines) <= 2 and set(lines) == {  # one line from each worker that hit it
        "error: DATASETS.TRAIN: dataset 'synthetic_trian' is not registered (register it with "
        "DATASETS.COCO_INSTANCES [[name, json, image_root]] or in code)"}, stderr[-3000:]
    assert "Traceback" not in stdout + stderr and "KeyError" not in stdout + stderr, (stdout + stderr)[-3000:]


def test_multi_machine_rendezvous_is_logged_and_times_out_with_one_line(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    rc, stdout, stderr = _train_net(
        "--config-file", SYNTHETIC_CONFIG, "--num-machines", "2", "--machine-rank", "0", "--dist-url", url,
        "--dist-timeout", "0.05", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "out"),
    )
    assert rc == 1, stderr[-3000:]
    assert (f"[yolact_d2 launch] waiting for the other machines at {url}: machine rank 0 of 2, world size 2 "
            "(1 process(es) per machine); missing: machine rank(s) 1") in stderr
    assert "timeout 0.05 min (--dist-timeout)" in stderr
    lines = _error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[0].startswith(f"error: --dist-url {url}: machine rank 0 of 2, world size 2 (1 process(es) per "
                               "machine): the other machines did not join within 0.05 min (")
    assert "1/2 clients joined" in lines[0] and "or raise --dist-timeout)" in lines[0]


def test_missing_checkpoint_file_is_one_line_naming_it(tmp_path, capsys):
    from torch import nn

    from yolact_d2.runtime.checkpointer import AtomicDetectionCheckpointer
    from yolact_d2.runtime.reporting import run_cli

    path = str(tmp_path / "no_such_model.pth")
    assert run_cli(lambda: AtomicDetectionCheckpointer(nn.Conv2d(3, 4, 1)).load(path), argv=[]) == 1
    assert capsys.readouterr().err == (
        f"error: Checkpoint {path}: no such file (check MODEL.WEIGHTS, or the last_checkpoint file in OUTPUT_DIR "
        "with --resume)\n")


def test_incompatible_checkpoint_is_one_line_through_run_cli(tmp_path, capsys):
    import torch
    from torch import nn

    from yolact_d2.runtime.checkpointer import AtomicDetectionCheckpointer, IncompatibleCheckpointError
    from yolact_d2.runtime.reporting import run_cli
    from yolact_d2.utils.errors import UserError

    path = str(tmp_path / "other.pth")
    torch.save({"model": {"head.weight": torch.zeros(4, 4)}}, path)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1))
    assert run_cli(lambda: AtomicDetectionCheckpointer(model).load(path), argv=[]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: Checkpoint {path} does not fit this model: only 0 of")
    assert issubclass(IncompatibleCheckpointError, UserError) and issubclass(IncompatibleCheckpointError, RuntimeError)


@pytest.mark.parametrize("pointer, cause", [
    ("", "is empty: --resume needs the name of the checkpoint to resume from (write the name of a model_*.pth"),
    ("model_0000999.pth", "names model_0000999.pth, which is not in {dir} (restore model_0000999.pth, write the name"),
])
def test_resume_with_a_broken_last_checkpoint_names_that_file(tmp_path, pointer, cause):
    import torch
    from torch import nn

    from yolact_d2.runtime.checkpointer import AtomicDetectionCheckpointer
    from yolact_d2.utils.errors import UserError

    (tmp_path / "last_checkpoint").write_text(pointer + "\n")
    model = nn.Conv2d(3, 4, 1)
    with pytest.raises(UserError) as info:
        AtomicDetectionCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert str(info.value).startswith(f"{tmp_path / 'last_checkpoint'}: {cause.format(dir=tmp_path)}"), str(info.value)
    # without --resume the stale pointer is ignored, and the next save replaces it
    AtomicDetectionCheckpointer(model, str(tmp_path)).resume_or_load("", resume=False)
    AtomicDetectionCheckpointer(model, str(tmp_path)).save("model_0000001")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert torch.equal(torch.load(tmp_path / "model_0000001.pth", weights_only=True)["model"]["weight"], model.weight)


@pytest.mark.parametrize("content", [b"x\n", b"\x89PNG\r\n\x1a\n" + bytes(64), b"PK\x03\x04 truncated zip"])
def test_bytes_that_are_no_checkpoint_are_not_called_unsafe(tmp_path, content):
    """A file neither torch nor pickle can parse (a truncated copy, an image named .pth) is reported
    as unreadable, not as a file holding code; a real payload still is (tests/test_safe_loading.py)."""
    from torch import nn

    from yolact_d2.runtime.checkpointer import AtomicDetectionCheckpointer, IncompatibleCheckpointError

    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(IncompatibleCheckpointError) as info:
        AtomicDetectionCheckpointer(nn.Conv2d(3, 4, 1)).load(str(path))
    assert str(info.value).startswith(f"Cannot load checkpoint {path}: "), str(info.value)
    assert "could run code" not in str(info.value) and "may be incomplete" in str(info.value)


@pytest.mark.parametrize("argv, message", [
    (["--num-gpus", "-1"], "--num-gpus must be >= 0, got -1"),
    (["--num-machines", "0"], "--num-machines must be >= 1, got 0"),
    (["--num-machines", "2", "--machine-rank", "2"], "--machine-rank must be in 0..1 for --num-machines 2, got 2"),
    (["--dist-url", "127.0.0.1:1234"], "--dist-url must be 'auto' or a URL such as tcp://HOST:PORT"),
    (["--dist-timeout", "0"], "--dist-timeout must be > 0 minutes, got 0.0"),
])
def test_launch_flags_that_would_hang_or_crash_are_usage_errors(capsys, argv, message):
    from detectron2.engine import default_argument_parser

    from yolact_d2.runtime.launch import add_dist_timeout_argument, check_launch_arguments

    parser = default_argument_parser()
    add_dist_timeout_argument(parser)
    with pytest.raises(SystemExit) as exit_:
        check_launch_arguments(parser, parser.parse_args(argv))
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    ok = parser.parse_args(["--num-gpus", "0", "--num-machines", "2", "--machine-rank", "1", "--dist-url", "auto"])
    check_launch_arguments(parser, ok)  # --num-gpus 0: one process, as in Detectron2


SHAPES = ["circle", "square", "triangle", "star", "ellipse", "hexagon"]  # yolact_synthetic_* classes


def test_class_names_of_training_and_evaluation_must_agree():
    from yolact_d2.runtime.run_checks import check_class_names

    check_class_names(SHAPES, "DATASETS.TRAIN 'x'", ["yolact_synthetic_val"])
    check_class_names(None, "a checkpoint without class names", ["yolact_synthetic_val"])  # converted weights
    swapped = SHAPES[:2][::-1] + SHAPES[2:]
    with pytest.raises(ConfigError) as info:
        check_class_names(swapped, "the checkpoint m.pth", ["yolact_synthetic_val"])
    assert str(info.value) == (
        "DATASETS.TEST: dataset 'yolact_synthetic_val' has the classes [circle, square, triangle, star, ellipse, "
        "hexagon], but the checkpoint m.pth has [square, circle, triangle, star, ellipse, hexagon]: the labels and "
        "the AP would be wrong (evaluate on data with the training classes in the same order (the same json "
        "categories))")


def test_checkpoints_record_the_training_classes_and_the_predictor_checks_them(tmp_path):
    import torch

    from detectron2.modeling import build_model

    from yolact_d2 import YolactPredictor
    from yolact_d2.runtime.checkpointer import AtomicDetectionCheckpointer

    cfg = tiny_cfg(num_classes=6, opts=["DATASETS.TEST", ("yolact_synthetic_val",), "MODEL.DEVICE", "cpu"])
    saver = AtomicDetectionCheckpointer(build_model(cfg), str(tmp_path))
    saver.class_names = SHAPES
    saver.save("same")
    assert torch.load(tmp_path / "same.pth", weights_only=True)["thing_classes"] == SHAPES
    saver.class_names = SHAPES[::-1]
    saver.save("reversed")
    cfg.MODEL.WEIGHTS = str(tmp_path / "same.pth")
    predictor = YolactPredictor(cfg)
    assert predictor.metadata.thing_classes == SHAPES and predictor.class_names == SHAPES
    # the demo's labels without a usable DATASETS.TEST: the checkpoint's names, else generic ids
    from yolact_d2.demo import resolve_metadata

    no_test = cfg.clone()
    no_test.DATASETS.TEST = ()
    assert resolve_metadata(no_test, predictor.class_names).thing_classes == SHAPES
    assert resolve_metadata(no_test).thing_classes == [f"class {i}" for i in range(6)]
    assert resolve_metadata(no_test, ["a", "b"]).thing_classes[0] == "class 0"  # another class count: not used
    cfg.MODEL.WEIGHTS = str(tmp_path / "reversed.pth")
    with pytest.raises(ConfigError, match=r"^DATASETS.TEST: dataset 'yolact_synthetic_val' has the classes \[circle, "
                                          rf".*but MODEL.WEIGHTS {tmp_path / 'reversed.pth'} has \[hexagon, ellipse"):
        YolactPredictor(cfg)
