"""Training and evaluation from a LazyConfig: train_net.py --config-file X.py against the yaml twin (the same
losses, iteration for iteration), --eval-only and --resume, override errors, the public API path of
Detectron2's stock tools/lazyconfig_train_net.py, and (when its path is given) that script itself."""
import json
import os
import subprocess
import sys

import pytest
import torch

from detectron2.config import instantiate

from conftest import CONFIG_DIR, small_synthetic_coco

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC_PY = os.path.join(CONFIG_DIR, "Synthetic", "yolact_R_18_FPN_synthetic.py")
SYNTHETIC_YAML = os.path.join(CONFIG_DIR, "Synthetic", "yolact_R_18_FPN_synthetic.yaml")
# Detectron2's tools/lazyconfig_train_net.py (not in the detectron2 package): the test that runs it is skipped
# unless this variable gives its path.
STOCK_SCRIPT_ENV = "YOLACT_D2_LAZYCONFIG_TRAIN_NET"
LOSSES = ("loss_cls", "loss_box_reg", "loss_mask", "loss_sem_seg", "total_loss", "lr")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def coco_dirs(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 8, 3, seed=5)


def lazy_overrides(coco_dirs, output_dir, max_iter=3):
    """The synthetic LazyConfig on the small dataset, at 128 px, a short warm-up and no steps."""
    (train_json, train_root), (val_json, val_root) = coco_dirs
    return [
        f"dataloader.train.dataset.coco_instances=[['t_train','{train_json}','{train_root}']]",
        "dataloader.train.dataset.names=t_train",
        f"dataloader.test.dataset.coco_instances=[['t_val','{val_json}','{val_root}']]",
        "dataloader.test.dataset.names=t_val",
        "dataloader.train.mapper.augmentations.image_size=128",
        "lr_multiplier.warmup_iters=2", "lr_multiplier.steps=[]", f"train.max_iter={max_iter}",
        "train.checkpointer.period=2", "train.log_period=1", f"train.output_dir={output_dir}",
    ]


def yaml_overrides(coco_dirs, output_dir, max_iter=3):
    (train_json, train_root), (val_json, val_root) = coco_dirs
    return [
        "DATASETS.COCO_INSTANCES", str([["t_train", train_json, train_root], ["t_val", val_json, val_root]]),
        "DATASETS.TRAIN", "('t_train',)", "DATASETS.TEST", "('t_val',)", "INPUT.IMAGE_SIZE", "128",
        "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()", "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", "2", "OUTPUT_DIR", str(output_dir),
    ]


def run(script, config_file, *args, opts=()):
    cmd = [sys.executable, script, "--config-file", config_file, *args, *opts]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def train_records(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [{k: r[k] for k in LOSSES} for r in records if "total_loss" in r]


def copypaste(log):
    return [line.split("copypaste: ")[1] for line in log.splitlines() if "copypaste: " in line]


def test_train_net_lazy_and_yaml_give_the_same_losses_and_eval_only_reproduces(coco_dirs, tmp_path):
    train_net = os.path.join(ROOT, "train_net.py")
    rc, yaml_log = run(train_net, SYNTHETIC_YAML, opts=yaml_overrides(coco_dirs, tmp_path / "yaml"))
    assert rc == 0, yaml_log[-4000:]
    rc, lazy_log = run(train_net, SYNTHETIC_PY, opts=lazy_overrides(coco_dirs, tmp_path / "lazy"))
    assert rc == 0, lazy_log[-4000:]
    # The yaml path logs every 20 iterations (the last one here), the LazyConfig every train.log_period: the
    # record of the last iteration holds the medians of the 3 iterations' losses in both.
    yaml_records, lazy_records = train_records(tmp_path / "yaml"), train_records(tmp_path / "lazy")
    assert len(lazy_records) == 3 and lazy_records[-1] == yaml_records[-1]
    assert lazy_records[0]["lr"] == pytest.approx(0.002 * 0.1) and lazy_records[2]["lr"] == pytest.approx(0.002)
    # same model, data order, optimizer and schedule: the same weights after 3 iterations, bit for bit
    yaml_final = torch.load(tmp_path / "yaml" / "model_final.pth", weights_only=True)["model"]
    lazy_final = torch.load(tmp_path / "lazy" / "model_final.pth", weights_only=True)["model"]
    assert list(lazy_final) == list(yaml_final) and all(torch.equal(lazy_final[k], yaml_final[k]) for k in yaml_final)
    assert copypaste(lazy_log) == copypaste(yaml_log) and len(copypaste(lazy_log)) == 6  # the same AP
    for name in ("model_0000001.pth", "model_final.pth", "last_checkpoint"):
        assert (tmp_path / "lazy" / name).is_file(), name
    summary = [line for line in lazy_log.splitlines() if line.startswith("mask AP ")]
    assert len(summary) == 1 and summary[0].endswith(" on t_val")

    # --eval-only with train.init_checkpoint reproduces the AP printed after training
    rc, log = run(train_net, SYNTHETIC_PY, "--eval-only", opts=[
        *lazy_overrides(coco_dirs, tmp_path / "eval"), f"train.init_checkpoint={tmp_path / 'lazy' / 'model_final.pth'}",
    ])
    assert rc == 0, log[-4000:]
    assert copypaste(log) == copypaste(lazy_log)

    # --resume continues from last_checkpoint up to the new train.max_iter
    rc, log = run(train_net, SYNTHETIC_PY, "--resume", opts=lazy_overrides(coco_dirs, tmp_path / "lazy", max_iter=4))
    assert rc == 0, log[-4000:]
    assert "Starting training from iteration 3" in log


@pytest.mark.parametrize("override, message", [
    ("train.max_iters=5", "error: override 'train.max_iters' on the command line: "),
    ("train.max_iter", "error: override 'train.max_iter' on the command line: a LazyConfig takes KEY=VALUE"),
])
def test_lazy_override_errors_are_one_line(tmp_path, override, message):
    rc, log = run(os.path.join(ROOT, "train_net.py"), SYNTHETIC_PY, opts=[override, f"train.output_dir={tmp_path}"])
    assert rc != 0
    lines = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(message), log[-2000:]
    if "max_iters" in override:
        assert "did you mean train.max_iter?" in lines[0]


def test_stock_lazyconfig_api_path(coco_dirs, tmp_path):
    """What Detectron2's tools/lazyconfig_train_net.py does with the config, through the same public API."""
    from detectron2.engine import SimpleTrainer, hooks
    from detectron2.evaluation import inference_on_dataset

    from yolact_d2.runtime.config_loading import load_lazy_config

    cfg = load_lazy_config(SYNTHETIC_PY, lazy_overrides(coco_dirs, tmp_path, max_iter=2))
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]
    trainer = SimpleTrainer(model, instantiate(cfg.dataloader.train), optimizer)
    trainer.register_hooks([hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier))])
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train(0, cfg.train.max_iter)
    assert trainer.iter == 2 and optimizer.param_groups[0]["lr"] == pytest.approx(0.002)  # warm-up done
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    assert set(results) == {"bbox", "segm"} and 0 <= results["segm"]["AP"] <= 100
    for key in ("output_dir", "init_checkpoint", "max_iter", "amp", "ddp", "checkpointer", "eval_period",
                "log_period", "device"):
        assert key in cfg.train, key


@pytest.mark.skipif(not os.environ.get(STOCK_SCRIPT_ENV), reason=f"{STOCK_SCRIPT_ENV} does not give the path of "
                    "Detectron2's tools/lazyconfig_train_net.py (not part of the detectron2 package)")
def test_stock_lazyconfig_train_net(coco_dirs, tmp_path):
    rc, log = run(os.environ[STOCK_SCRIPT_ENV], SYNTHETIC_PY, opts=lazy_overrides(coco_dirs, tmp_path, max_iter=2))
    assert rc == 0, log[-4000:]
    assert (tmp_path / "model_final.pth").is_file() and len(train_records(tmp_path)) == 2
    assert len(copypaste(log)) == 6  # bbox and segm AP of dataloader.evaluator


def test_lazy_num_classes_mismatch_is_one_line(coco_dirs, tmp_path):
    rc, log = run(os.path.join(ROOT, "train_net.py"), SYNTHETIC_PY,
                  opts=[*lazy_overrides(coco_dirs, tmp_path), "model.head.num_classes=4"])
    assert rc != 0
    lines = [line for line in log.splitlines() if line.startswith("error: ")]
    assert lines == [
        "error: dataloader.train.dataset.names: dataset 't_train' has 6 classes (circle, square, triangle, star, "
        "ellipse, hexagon) but model.head.num_classes is 4 (set model.head.num_classes=6)"
    ], log[-2000:]


def test_sigterm_checkpoints_a_lazy_config_run(coco_dirs, tmp_path):
    """The interrupt checkpoint of docs/RELIABILITY.md with a LazyConfig: SIGTERM finishes the iteration, writes
    model_<iteration>.pth and last_checkpoint, prints the --resume command and exits with 128 + 15."""
    import signal

    from test_interrupt import READY, TRAIN_NET, _Run, _stopped

    out = tmp_path / "run"
    opts = [*lazy_overrides(coco_dirs, out, max_iter=500), "train.checkpointer.period=1000", "train.log_period=20"]
    run = _Run([TRAIN_NET, "--config-file", SYNTHETIC_PY, *opts])
    run.wait_for(READY)
    run.proc.send_signal(signal.SIGTERM)
    code, log = run.finish()
    assert code == 128 + signal.SIGTERM, log[-3000:]
    iteration, path, resume = _stopped(log, "SIGTERM")
    assert path == str(out / f"model_{iteration:07d}.pth") and os.path.isfile(path)
    assert (out / "last_checkpoint").read_text() == os.path.basename(path)
    assert resume[1:3] == [TRAIN_NET, "--resume"] and SYNTHETIC_PY in resume
