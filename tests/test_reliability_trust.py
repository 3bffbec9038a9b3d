"""Config files cannot run code, and weights that do not fit (or no weights) are never used silently
(docs/RELIABILITY.md, "Config files are data" and "Weights that fit, or an error"). Each class is
tried through the real entry points (train_net.py, demo/demo.py, demo/app.py, tools/export_model.py,
tools/evaluate.py as subprocesses) and in unit tests."""
import http.server
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from yolact_d2.runtime.checkpointer import AtomicDetectionCheckpointer, IncompatibleCheckpointError
from yolact_d2.runtime.config_loading import setup_cfg
from yolact_d2.runtime.reporting import format_user_error
from yolact_d2.utils.errors import ConfigError

from conftest import small_synthetic_coco, tiny_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC_CONFIG = os.path.join(ROOT, "configs", "Synthetic", "yolact_R_18_FPN_synthetic.yaml")
SHAPES = ["circle", "square", "triangle", "star", "ellipse", "hexagon"]  # yolact_synthetic_* classes

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(argv, env=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", **(env or {}))
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def _one_error_line(rc, stdout, stderr):
    """The one ``error:`` line of a run that must have failed with a known user error."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert rc == 1, (stdout + stderr)[-4000:]
    assert len(lines) == 1 and "Traceback" not in stdout + stderr, (stdout + stderr)[-4000:]
    return lines[0]


# ------------------------------------------------------------------------------------------------
# A. Config files are data
# ------------------------------------------------------------------------------------------------
def _payload_config(folder, base=SYNTHETIC_CONFIG):
    """A config whose only unusual line would create ``<folder>/MARKER`` if YAML tags were honoured."""
    marker = folder / "MARKER"
    path = folder / "payload.yaml"
    path.write_text(f'_BASE_: "{base}"\nSOLVER:\n  BASE_LR: !!python/object/apply:os.system ["touch {marker}"]\n')
    return str(path), marker


def _bomb(folder):
    """A 'billion laughs': 9^8 strings from ~400 bytes."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 8):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    lines.append("MODEL:\n  PIXEL_MEAN: *l7")
    path = folder / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_tagged_config_or_base_is_refused_naming_file_and_tag(tmp_path):
    path, marker = _payload_config(tmp_path)
    with pytest.raises(ConfigError) as info:
        setup_cfg(path)
    assert format_user_error(info.value) == (
        f"error: {path}:3:12: the tag !!python/object/apply:os.system is not allowed: config files hold plain YAML "
        "data only (a Python tag would run code while the file is read), so it was not loaded (remove the tag; "
        "write the value as a plain string, number, list or mapping)")
    child = tmp_path / "child.yaml"  # the tag is in the _BASE_: that file is named
    child.write_text('_BASE_: "payload.yaml"\n')
    with pytest.raises(ConfigError, match=f"^{path}:3:12: the tag !!python/object/apply:os.system is not allowed"):
        setup_cfg(str(child))
    for tag in ("!!python/name:os.system", "!!python/object/new:subprocess.Popen", "!custom"):
        other = tmp_path / "other.yaml"
        other.write_text(f"SOLVER:\n  BASE_LR: {tag} [1]\n")
        with pytest.raises(ConfigError, match=f"the tag {tag} is not allowed"):
            setup_cfg(str(other))
    assert not marker.exists()


def test_alias_bomb_cycle_and_self_reference_are_short_lines(tmp_path):
    with pytest.raises(ConfigError) as info:
        setup_cfg(_bomb(tmp_path))
    line = format_user_error(info.value)
    assert "expand to more than 100,000 values" in line and len(line) < 300
    (tmp_path / "a.yaml").write_text('_BASE_: "b.yaml"\n')
    (tmp_path / "b.yaml").write_text('_BASE_: "a.yaml"\n')
    with pytest.raises(ConfigError) as info:
        setup_cfg(str(tmp_path / "a.yaml"))
    assert str(info.value) == (f"{tmp_path / 'a.yaml'}: its _BASE_ chain is a cycle (a.yaml -> b.yaml -> a.yaml) "
                               "(remove the _BASE_ that names a file already in the chain)")
    (tmp_path / "self.yaml").write_text("MODEL:\n  PIXEL_MEAN: &m [1, *m]\n")
    with pytest.raises(ConfigError, match="an alias .* refers to itself"):
        setup_cfg(str(tmp_path / "self.yaml"))
    # a few aliases in a real config stay fine
    (tmp_path / "ok.yaml").write_text(f'_BASE_: "{SYNTHETIC_CONFIG}"\nMODEL:\n  PIXEL_MEAN: &m [1.0, 2.0, 3.0]\n'
                                      "  PIXEL_STD: *m\n")
    cfg = setup_cfg(str(tmp_path / "ok.yaml"))
    assert list(cfg.MODEL.PIXEL_STD) == [1.0, 2.0, 3.0] and cfg.MODEL.YOLACT.NUM_CLASSES == 6


def test_error_lines_are_bounded():
    line = format_user_error(ConfigError("x" * 100_000, "y"))
    assert len(line) < 2100 and line.endswith("(100,003 characters in all)")


class _Server(http.server.ThreadingHTTPServer):
    def __init__(self, files):
        self.files, self.requests = files, []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler):  # noqa: N805
                self.requests.append(handler.path)
                body = self.files.get(handler.path, b"")
                handler.send_response(200 if body else 404)
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args):  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def server():
    files = {
        "/base.yaml": b"SOLVER:\n  BASE_LR: 0.123\n",
        "/tagged.yaml": b"SOLVER:\n  BASE_LR: !!python/object/apply:os.getpid []\n",
    }
    srv = _Server(files)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", srv
    srv.shutdown()
    srv.server_close()


def test_remote_base_is_refused_unless_opted_in_and_then_read_as_data(tmp_path, server, monkeypatch):
    url, srv = server
    config = tmp_path / "remote.yaml"
    config.write_text(f'_BASE_: "{url}/base.yaml"\n')
    monkeypatch.delenv("YOLACT_D2_ALLOW_REMOTE_CONFIG", raising=False)
    with pytest.raises(ConfigError) as info:
        setup_cfg(str(config))
    assert str(info.value).startswith(f"{config}: _BASE_ {url}/base.yaml: is a URL; remote config files are not "
                                      "loaded by default (download it and name the local file, or set "
                                      "YOLACT_D2_ALLOW_REMOTE_CONFIG=1")
    assert srv.requests == []  # nothing was fetched
    monkeypatch.setenv("YOLACT_D2_ALLOW_REMOTE_CONFIG", "1")
    assert setup_cfg(str(config)).SOLVER.BASE_LR == pytest.approx(0.123)
    config.write_text(f'_BASE_: "{url}/tagged.yaml"\n')
    with pytest.raises(ConfigError, match=rf"^{url}/tagged.yaml:2:12: the tag !!python/object/apply:os.getpid is "):
        setup_cfg(str(config))
    config.write_text(f'_BASE_: "{url}/missing.yaml"\n')
    with pytest.raises(ConfigError, match=rf"^_BASE_ {url}/missing.yaml: cannot be downloaded \(HTTP Error 404"):
        setup_cfg(str(config))


def test_entry_points_do_not_run_a_config_payload(tmp_path):
    path, marker = _payload_config(tmp_path)
    image = tmp_path / "in.png"
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(image)
    child = tmp_path / "child.yaml"  # the payload in the _BASE_ of the file given
    child.write_text(f'_BASE_: "{path}"\n')
    runs = {
        "train_net.py": ["train_net.py", "--config-file", path, "OUTPUT_DIR", str(tmp_path / "out")],
        "demo.py": ["demo/demo.py", "--config-file", str(child), "--input", str(image), "--output",
                    str(tmp_path / "vis.png"), "--opts", "MODEL.DEVICE", "cpu"],
        "export_model.py": ["tools/export_model.py", "--format", "torchscript", "--config-file", path,
                            "--output", str(tmp_path / "m.ts")],
    }
    for name, argv in runs.items():
        line = _one_error_line(*_run(argv))
        assert "the tag !!python/object/apply:os.system is not allowed" in line and path in line, (name, line)
    assert not marker.exists()
    # the alias bomb and the _BASE_ cycle through train_net.py: one short line each
    line = _one_error_line(*_run(["train_net.py", "--config-file", _bomb(tmp_path)]))
    assert "billion laughs" in line and len(line) < 300
    (tmp_path / "a.yaml").write_text('_BASE_: "b.yaml"\n')
    (tmp_path / "b.yaml").write_text('_BASE_: "a.yaml"\n')
    line = _one_error_line(*_run(["tools/export_model.py", "--format", "onnx", "--config-file",
                                  str(tmp_path / "a.yaml"), "--output", str(tmp_path / "m.onnx")]))
    assert line.endswith("its _BASE_ chain is a cycle (a.yaml -> b.yaml -> a.yaml) (remove the _BASE_ that names "
                         "a file already in the chain)")


# ------------------------------------------------------------------------------------------------
# B. Weights that fit, or an error
# ------------------------------------------------------------------------------------------------
def _synthetic_cfg(*opts):
    return setup_cfg(SYNTHETIC_CONFIG, ["MODEL.DEVICE", "cpu", *opts], freeze=False)


def _save(cfg, path, class_names=None, transform=None):
    """The model of ``cfg`` with random weights saved as a trainer checkpoint (``thing_classes``)."""
    from detectron2.modeling import build_model

    model = build_model(cfg)
    if transform is not None:
        with torch.no_grad():
            transform(model)
    saver = AtomicDetectionCheckpointer(model, os.path.dirname(path))
    saver.class_names = class_names
    saver.save(os.path.splitext(os.path.basename(path))[0])
    return path


@pytest.fixture(scope="module")
def three_class(tmp_path_factory):
    """A checkpoint of the synthetic config's model trained on 3 classes (as a run with
    ``MODEL.YOLACT.NUM_CLASSES 3`` on other data writes it), with and without recorded names."""
    folder = tmp_path_factory.mktemp("three")
    cfg = _synthetic_cfg("MODEL.YOLACT.NUM_CLASSES", "3", "MODEL.WEIGHTS", "random")
    named = _save(cfg, str(folder / "named.pth"), ["cat", "dog", "bird"])
    bare = _save(cfg, str(folder / "bare.pth"))
    return named, bare


def test_inference_refuses_a_checkpoint_that_leaves_layers_random(three_class):
    from yolact_d2 import YolactPredictor

    named, bare = three_class
    # the class count given on the command line: the checkpoint's 3 do not fit, both counts named
    for path in (named, bare):
        with pytest.raises(IncompatibleCheckpointError) as info:
            YolactPredictor(_synthetic_cfg("MODEL.WEIGHTS", path, "MODEL.YOLACT.NUM_CLASSES", "6"))
        assert str(info.value) == (
            f"Checkpoint {path} does not fit this model: 4 tensors have another shape in it (layers head.cls_score, "
            "sem_seg_head.predictor; 3 classes in the checkpoint, MODEL.YOLACT.NUM_CLASSES 6 in the config); those "
            "layers would keep their random initialisation (use the config the checkpoint was trained with (its "
            "run's OUTPUT_DIR/config.yaml), or set MODEL.YOLACT.NUM_CLASSES to the checkpoint's count)")
    # training (fine-tuning) keeps Detectron2's skip of the class-dependent layers
    from detectron2.modeling import build_model

    model = build_model(_synthetic_cfg("MODEL.WEIGHTS", "random"))
    head = model.head.cls_score.weight.detach().clone()
    AtomicDetectionCheckpointer(model).load(named)
    assert torch.equal(model.head.cls_score.weight, head)  # skipped, kept its initialisation
    # a missing layer is named too
    partial = torch.load(named, weights_only=True)
    del partial["model"]["head.coeff_pred.weight"]
    torch.save(partial, named + ".partial.pth")
    with pytest.raises(IncompatibleCheckpointError, match=r"1 are missing from it \(layers head.coeff_pred\)"):
        YolactPredictor(_synthetic_cfg("MODEL.WEIGHTS", named + ".partial.pth", "MODEL.YOLACT.NUM_CLASSES", "3"))
    # the training-only semantic-segmentation head may be missing (converted original checkpoints)
    partial = torch.load(named, weights_only=True)
    for key in [k for k in partial["model"] if k.startswith("sem_seg_head.")]:
        del partial["model"][key]
    torch.save(partial, named + ".no_sem_seg.pth")
    YolactPredictor(_synthetic_cfg("MODEL.WEIGHTS", named + ".no_sem_seg.pth", "MODEL.YOLACT.NUM_CLASSES", "3"))


def test_inference_takes_the_class_count_and_names_from_the_checkpoint(three_class):
    from yolact_d2 import YolactPredictor
    from yolact_d2.demo import VisualizationDemo

    named, bare = three_class
    # the config file says 6 classes and a test set of the 6 shapes; the command line says neither
    predictor = YolactPredictor(_synthetic_cfg("MODEL.WEIGHTS", named))
    assert predictor.cfg.MODEL.YOLACT.NUM_CLASSES == 3 and predictor.class_names == ["cat", "dog", "bird"]
    assert predictor.metadata.thing_classes == ["cat", "dog", "bird"]
    assert predictor.model.head.cls_score.out_channels == 3 * 4  # 3 anchors x (3 classes + background)
    assert VisualizationDemo(_synthetic_cfg("MODEL.WEIGHTS", named), 0.3).metadata.thing_classes == ["cat", "dog",
                                                                                                       "bird"]
    # DATASETS.TEST given on the command line with other classes: the labels would be wrong
    with pytest.raises(ConfigError, match=r"^DATASETS.TEST: dataset 'yolact_synthetic_val' has the classes \[circle"):
        YolactPredictor(_synthetic_cfg("MODEL.WEIGHTS", named, "DATASETS.TEST", "('yolact_synthetic_val',)"))
    # without recorded classes nothing can be taken: the config's count, and the load names both
    with pytest.raises(IncompatibleCheckpointError, match="3 classes in the checkpoint, MODEL.YOLACT.NUM_CLASSES 6"):
        YolactPredictor(_synthetic_cfg("MODEL.WEIGHTS", bare))


def test_random_weights_need_an_explicit_opt_in():
    from yolact_d2 import YolactPredictor

    with pytest.raises(ConfigError) as info:
        YolactPredictor(tiny_cfg(opts=["MODEL.WEIGHTS", ""]))
    assert str(info.value) == (
        "MODEL.WEIGHTS is empty: the model would run with random weights (give MODEL.WEIGHTS (or --weights) "
        "path/to/model_final.pth; MODEL.WEIGHTS random runs an untrained model on purpose)")
    assert YolactPredictor(tiny_cfg(opts=["MODEL.WEIGHTS", "random"])).class_names is None


def test_non_finite_weights_are_refused_in_every_mode(tmp_path):
    cfg = tiny_cfg()
    path = _save(cfg, str(tmp_path / "nan.pth"), transform=lambda m: m.head.bbox_pred.bias.fill_(float("nan")))
    from detectron2.modeling import build_model

    for strict in (True, False):
        with pytest.raises(IncompatibleCheckpointError) as info:
            AtomicDetectionCheckpointer(build_model(cfg), strict=strict).load(path)
        assert str(info.value) == (
            f"Checkpoint {path}: holds NaN or Inf values in 1 tensors (model.head.bbox_pred.bias); a model loaded "
            "from it would predict nothing useful (use an earlier checkpoint of the run (a model_*.pth in its "
            "OUTPUT_DIR))")
    _save(cfg, str(tmp_path / "inf.pth"), transform=lambda m: m.backbone.fpn_lateral3.weight.fill_(float("inf"))
          if hasattr(m.backbone, "fpn_lateral3") else next(m.parameters()).view(-1)[0].fill_(float("inf")))
    with pytest.raises(IncompatibleCheckpointError, match="holds NaN or Inf values in 1 tensors"):
        AtomicDetectionCheckpointer(build_model(cfg)).load(str(tmp_path / "inf.pth"))


def _optimizer_checkpoint(cfg, path, model_cfg=None):
    """A resumable checkpoint (model + optimizer state after one step) of ``model_cfg``'s model,
    whose optimizer state is that of ``cfg``'s model when ``model_cfg`` is given."""
    from detectron2.modeling import build_model

    from yolact_d2.solver import build_optimizer

    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    # the layout of a DefaultTrainer's checkpoint
    state = {"model": build_model(model_cfg or cfg).state_dict(),
             "trainer": {"iteration": 1, "hooks": {}, "_trainer": {"optimizer": optimizer.state_dict()}}}
    torch.save(state, path)
    return path


def test_resume_checks_model_and_optimizer_shapes_before_loading(tmp_path):
    from detectron2.modeling import build_model

    from yolact_d2.solver import build_optimizer

    ours = _synthetic_cfg("MODEL.WEIGHTS", "random", "INPUT.IMAGE_SIZE", "128")
    three = _synthetic_cfg("MODEL.WEIGHTS", "random", "INPUT.IMAGE_SIZE", "128", "MODEL.YOLACT.NUM_CLASSES", "3")
    model = build_model(ours)

    class Trainer:  # what the checkpointer reads of a DefaultTrainer
        optimizer = build_optimizer(ours, model)

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            self.loaded = state

    checkpointer = AtomicDetectionCheckpointer(model, str(tmp_path), trainer=Trainer())
    path = _optimizer_checkpoint(three, str(tmp_path / "three.pth"))
    with pytest.raises(IncompatibleCheckpointError) as info:
        checkpointer.load(path)
    assert str(info.value).startswith(
        f"--resume: checkpoint {path}: was written for another model: 4 tensors differ in shape, 0 are missing and "
        "0 are not in this model (head.cls_score.weight is (12, 64, 3, 3) there and (21, 64, 3, 3) here; 3 classes "
        "in the checkpoint, MODEL.YOLACT.NUM_CLASSES 6 in the config) (resume with the config of that run")
    # the model fits but the optimizer state is another model's
    path = _optimizer_checkpoint(three, str(tmp_path / "mixed.pth"), model_cfg=ours)
    with pytest.raises(IncompatibleCheckpointError, match=r"its optimizer state '(exp_avg|exp_avg_sq)' of "
                                                          r"head.cls_score.weight is \(12, 64, 3, 3\), the parameter "
                                                          r"is \(21, 64, 3, 3\)"):
        checkpointer.load(path)
    # another backbone depth: other parameter counts
    r34 = _synthetic_cfg("MODEL.WEIGHTS", "random", "INPUT.IMAGE_SIZE", "128", "MODEL.RESNETS.DEPTH", "34")
    path = _optimizer_checkpoint(r34, str(tmp_path / "r34.pth"))
    with pytest.raises(IncompatibleCheckpointError, match=r"was written for another model: 0 tensors differ in shape, "
                                                          r"0 are missing and [1-9]\d* are not in this model"):
        checkpointer.load(path)
    path = _optimizer_checkpoint(ours, str(tmp_path / "same.pth"))
    checkpointer.load(path)  # the same model: resumes
    # loading only the model (fine-tuning: MODEL.WEIGHTS, no --resume) is not a resume
    checkpointer.load(str(tmp_path / "three.pth"), checkpointables=[])


@pytest.fixture(scope="module")
def coco_dirs(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 4, 2, seed=11)


def _train_net_args(coco_dirs, out, *args):
    (train_json, train_root), (val_json, val_root) = coco_dirs
    return [
        "train_net.py", "--config-file", SYNTHETIC_CONFIG, *args,
        "DATASETS.COCO_INSTANCES", str([["t_train", train_json, train_root], ["t_val", val_json, val_root]]),
        "DATASETS.TRAIN", "('t_train',)", "DATASETS.TEST", "('t_val',)", "MODEL.DEVICE", "cpu",
        "INPUT.IMAGE_SIZE", "128", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "DATALOADER.NUM_WORKERS",
        "0", "OUTPUT_DIR", str(out),
    ]


def test_train_net_eval_only_refuses_nan_weights_and_resume_refuses_another_class_count(coco_dirs, tmp_path):
    cfg = _synthetic_cfg("MODEL.WEIGHTS", "random", "INPUT.IMAGE_SIZE", "128")
    nan = _save(cfg, str(tmp_path / "nan.pth"), SHAPES, transform=lambda m: m.head.cls_score.weight.fill_(float("nan")))
    line = _one_error_line(*_run(_train_net_args(coco_dirs, tmp_path / "eval", "--eval-only", "MODEL.WEIGHTS", nan)))
    assert line.startswith(f"error: Checkpoint {nan}: holds NaN or Inf values in 1 tensors "
                           "(model.head.cls_score.weight)")
    # --eval-only is inference: a checkpoint of another class count is refused, not evaluated with a random head
    three = _save(_synthetic_cfg("MODEL.WEIGHTS", "random", "INPUT.IMAGE_SIZE", "128", "MODEL.YOLACT.NUM_CLASSES",
                                 "3"), str(tmp_path / "three.pth"), ["a", "b", "c"])
    line = _one_error_line(*_run(_train_net_args(coco_dirs, tmp_path / "eval3", "--eval-only", "MODEL.WEIGHTS",
                                                 three)))
    assert line.startswith(f"error: Checkpoint {three} does not fit this model: 4 tensors have another shape in it "
                           "(layers head.cls_score, sem_seg_head.predictor; 3 classes in the checkpoint, "
                           "MODEL.YOLACT.NUM_CLASSES 6 in the config)"), line
    out = tmp_path / "resume"
    out.mkdir()
    three = _synthetic_cfg("MODEL.WEIGHTS", "random", "INPUT.IMAGE_SIZE", "128", "MODEL.YOLACT.NUM_CLASSES", "3")
    _optimizer_checkpoint(three, str(out / "model_0000001.pth"))
    (out / "last_checkpoint").write_text("model_0000001.pth")
    line = _one_error_line(*_run(_train_net_args(coco_dirs, out, "--resume")))
    assert line.startswith(f"error: --resume: checkpoint {out / 'model_0000001.pth'}: was written for another model")
    assert "3 classes in the checkpoint, MODEL.YOLACT.NUM_CLASSES 6 in the config" in line
    assert not (out / "model_final.pth").exists()


NO_WEIGHTS_FROM_CONFIG = "error: MODEL.WEIGHTS random (from the config file): inference would run an untrained model"


def test_demo_export_evaluate_and_app_refuse_misfit_or_missing_weights(three_class, tmp_path):
    named, bare = three_class
    image = tmp_path / "in.png"
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(image)
    # demo.py: a checkpoint of 3 classes with the bundled 6-class config works (classes from the checkpoint)
    rc, stdout, stderr = _run(["demo/demo.py", "--config-file", SYNTHETIC_CONFIG, "--input", str(image), "--output",
                               str(tmp_path / "ok.png"), "--opts", "MODEL.WEIGHTS", named])
    assert rc == 0 and (tmp_path / "ok.png").is_file(), (stdout + stderr)[-3000:]
    assert "MODEL.YOLACT.NUM_CLASSES 6 (config file) -> 3: the classes recorded in" in stdout + stderr
    # ... and is refused when the class count is given and does not fit, or the checkpoint records none
    line = _one_error_line(*_run(["demo/demo.py", "--config-file", SYNTHETIC_CONFIG, "--input", str(image),
                                  "--output", str(tmp_path / "bad.png"), "--opts", "MODEL.WEIGHTS", bare]))
    assert line.startswith(f"error: Checkpoint {bare} does not fit this model: 4 tensors have another shape")
    assert "3 classes in the checkpoint, MODEL.YOLACT.NUM_CLASSES 6 in the config" in line
    assert not (tmp_path / "bad.png").exists()
    # export_model.py: without weights, only with --weights random
    line = _one_error_line(*_run(["tools/export_model.py", "--format", "torchscript", "--config-file",
                                  SYNTHETIC_CONFIG, "--output", str(tmp_path / "m.ts")]))
    # (the synthetic config trains from scratch: its own MODEL.WEIGHTS random is no opt-in for inference)
    assert line.startswith(NO_WEIGHTS_FROM_CONFIG), line
    line = _one_error_line(*_run(["tools/export_model.py", "--format", "torchscript", "--config-file",
                                  SYNTHETIC_CONFIG, "--weights", bare, "--output", str(tmp_path / "m.ts")]))
    assert "3 classes in the checkpoint, MODEL.YOLACT.NUM_CLASSES 6 in the config" in line
    assert not (tmp_path / "m.ts").exists()
    # evaluate.py: the checkpoint's classes against the evaluated data
    line = _one_error_line(*_run(["tools/evaluate.py", "--config-file", SYNTHETIC_CONFIG, "--weights", named,
                                  "--dataset", "yolact_synthetic_val"]))
    assert line.startswith("error: --dataset: dataset 'yolact_synthetic_val' has 6 classes (circle, square, "
                           "triangle, star, ellipse, hexagon) but MODEL.YOLACT.NUM_CLASSES is 3"), line
    six = _save(_synthetic_cfg("MODEL.WEIGHTS", "random"), str(tmp_path / "reversed.pth"), SHAPES[::-1])
    line = _one_error_line(*_run(["tools/evaluate.py", "--config-file", SYNTHETIC_CONFIG, "--weights", six,
                                  "--dataset", "yolact_synthetic_val"]))
    assert line.startswith("error: --dataset: dataset 'yolact_synthetic_val' has the classes [circle, square, "
                           f"triangle, star, ellipse, hexagon], but the checkpoint {six} has [hexagon, ellipse"), line
    # the web demo: no weights is one line before serving
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    line = _one_error_line(*_run(["demo/app.py", "--config-file", SYNTHETIC_CONFIG, "--port", str(port)]))
    assert line.startswith(NO_WEIGHTS_FROM_CONFIG), line
