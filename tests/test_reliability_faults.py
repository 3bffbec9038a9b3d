"""Reliability under faults (docs/RELIABILITY.md): non-finite losses, processes killed during
training or while writing a checkpoint, interrupted evaluations, and a failing worker of a
multi-process run. Tiny ResNet-18 runs on a small generated dataset; subprocesses use one thread.
"""
import ast
import glob
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import torch

from detectron2.engine import HookBase

from yolact_d2 import YolactTrainer
from yolact_d2.data.datasets import register_datasets_from_config
from yolact_d2.runtime import checkpointer as atomic_module
from yolact_d2.runtime.checkpointer import AtomicDetectionCheckpointer
from yolact_d2.runtime.config_loading import setup_cfg
from yolact_d2.runtime.finite_loss import NonFiniteLossError
from yolact_d2.utils.atomic_io import atomic_open

from conftest import captured, small_synthetic_coco, tiny_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC_CONFIG = os.path.join(ROOT, "configs", "Synthetic", "yolact_R_18_FPN_synthetic.yaml")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 8, 4, seed=7)


def _dataset_opts(coco, tag):
    (train_json, train_root), (val_json, val_root) = coco
    train, val = f"{tag}_train", f"{tag}_val"
    return [
        "DATASETS.COCO_INSTANCES", str([[train, train_json, train_root], [val, val_json, val_root]]),
        "DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{val}',)",
    ]


def _run_opts(coco, out, tag, extra=()):
    return [
        *_dataset_opts(coco, tag),
        "INPUT.IMAGE_SIZE", "128", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "2",
        "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "2", "SEED", "3", "OUTPUT_DIR", str(out), *extra,
    ]


def _cfg_like_train_net(opts):
    """The cfg train_net.py builds for these command-line options (without its logging setup)."""
    cfg = setup_cfg(SYNTHETIC_CONFIG, opts, freeze=False)
    register_datasets_from_config(cfg)
    return cfg


def _train_net(args, timeout=300):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", SYNTHETIC_CONFIG, *args],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _tiny_trainer_cfg(coco, out, *opts):
    tag = f"rel_{uuid.uuid4().hex[:8]}"
    cfg = tiny_cfg(num_classes=6, opts=[
        "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", 0.001,
        "SOLVER.WARMUP_ITERS", 0, "SOLVER.STEPS", (), "SOLVER.CHECKPOINT_PERIOD", 2,
        "TEST.EVAL_PERIOD", 0, "SEED", 1, "OUTPUT_DIR", str(out), "MODEL.YOLACT.SCORE_THRESH_TEST", 0.0,
    ])
    cfg.merge_from_list(_dataset_opts(coco, tag))
    register_datasets_from_config(cfg)
    cfg.merge_from_list(list(opts))
    return cfg


def _all_finite(state):
    return all(torch.isfinite(v).all() for v in state.values() if torch.is_floating_point(v))


# ------------------------------------------------------------------------------------------------
# Non-finite loss
# ------------------------------------------------------------------------------------------------
def _poison_losses(trainer, bad_iterations, term="loss_mask"):
    """``term`` becomes NaN at the given iterations."""

    def poison(module, args, output):
        if module.training and trainer.storage.iter in bad_iterations:
            output = dict(output, **{term: output[term] * float("nan")})
        return output

    trainer.model.register_forward_hook(poison)


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_a_non_finite_loss_skips_its_step_is_counted_and_training_goes_on(coco, tmp_path):
    """As the original: the optimizer step of that iteration is skipped, the next ones are taken."""
    cfg = _tiny_trainer_cfg(coco, tmp_path / "out", "SOLVER.MAX_ITER", 5)
    trainer = YolactTrainer(cfg)
    _poison_losses(trainer, {2})
    snapshots = {}

    class Snapshot(HookBase):
        def after_step(self):
            snapshots[self.trainer.iter] = _params(self.trainer.model)

    trainer.register_hooks([Snapshot()])
    with captured("yolact_d2") as records:
        trainer.train()
    assert trainer.iter == 5  # trained to the end
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(snapshots[1], snapshots[2])  # iteration 2 left the weights as they were
    assert not same(snapshots[2], snapshots[3]) and not same(snapshots[0], snapshots[1])
    assert _all_finite(trainer.model.state_dict())
    warning = [r.getMessage() for r in records if "optimizer step skipped" in r.getMessage()]
    assert len(warning) == 1
    for words in ("Non-finite loss at iteration 2", "loss_mask=nan", "loss_cls=", "(non-finite: loss_mask)",
                  "1 in a row", "1 in all"):
        assert words in warning[0], words
    with open(os.path.join(cfg.OUTPUT_DIR, "metrics.json")) as f:
        records = [json.loads(line) for line in f]
    skipped = {r["iteration"]: r.get("nonfinite_loss_skipped") for r in records}
    assert skipped[4] == 1
    assert trainer._trainer.state_dict()["nonfinite_loss_skipped"] == 1


def test_non_finite_losses_in_a_row_stop_with_iteration_terms_hints_and_a_loadable_checkpoint(coco, tmp_path):
    cfg = _tiny_trainer_cfg(coco, tmp_path / "out", "SOLVER.MAX_ITER", 8, "SOLVER.NONFINITE_LOSS.MAX_CONSECUTIVE", 3)
    trainer = YolactTrainer(cfg)
    _poison_losses(trainer, {2, 3, 4, 5, 6, 7})  # stops at the third in a row, iteration 4
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    assert isinstance(info.value, FloatingPointError)  # what Detectron2 raises, with more detail
    message = str(info.value)
    for words in ("Non-finite loss at iteration 4", "loss_mask=nan", "loss_cls=", "loss_box_reg=",
                  "loss_sem_seg=", "(non-finite: loss_mask)", "3 in a row (SOLVER.NONFINITE_LOSS.MAX_CONSECUTIVE 3)",
                  "SOLVER.BASE_LR", "SOLVER.IMS_PER_BATCH 2", "model_0000003.pth", "--resume"):
        assert words in message, words
    # no optimizer step was taken from the non-finite losses
    assert _all_finite(trainer.model.state_dict())
    # the last good checkpoint is complete and loadable
    out = cfg.OUTPUT_DIR
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_0000003.pth"
    saved = torch.load(os.path.join(out, "model_0000003.pth"), map_location="cpu", weights_only=False)
    assert saved["iteration"] == 3 and _all_finite(saved["model"])
    assert saved["trainer"]["_trainer"]["nonfinite_loss_skipped"] == 2
    resumed = YolactTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4 and resumed._trainer.nonfinite_skipped == 2


def test_too_many_skipped_steps_among_recent_ones_stop(coco, tmp_path):
    cfg = _tiny_trainer_cfg(coco, tmp_path / "out", "SOLVER.MAX_ITER", 8, "SOLVER.NONFINITE_LOSS.WINDOW", 4,
                            "SOLVER.NONFINITE_LOSS.MAX_SKIPPED_FRACTION", 0.25)
    trainer = YolactTrainer(cfg)
    _poison_losses(trainer, {1, 3})  # 2 of the last 4 > 0.25 x 4
    with pytest.raises(NonFiniteLossError, match=r"at iteration 3 .*2 of the last 4 iterations"):
        trainer.train()


def test_a_far_too_high_lr_still_stops_quickly(coco, tmp_path):
    cfg = _tiny_trainer_cfg(coco, tmp_path / "out", "SOLVER.MAX_ITER", 40, "SOLVER.BASE_LR", 1e12,
                            "SOLVER.NONFINITE_LOSS.MAX_CONSECUTIVE", 3)
    trainer = YolactTrainer(cfg)
    with pytest.raises(NonFiniteLossError, match="3 in a row"):
        trainer.train()
    assert trainer.iter < 10


# ------------------------------------------------------------------------------------------------
# Atomic checkpoints (deterministic crash in the middle of a write)
# ------------------------------------------------------------------------------------------------
def _small_checkpointer(folder):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(3, 4)).sum().backward()
    optimizer.step()
    return model, AtomicDetectionCheckpointer(model, str(folder), optimizer=optimizer)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    model, checkpointer = _small_checkpointer(tmp_path)
    checkpointer.save("model_0001", iteration=1)
    good = (tmp_path / "model_0001.pth").read_bytes()
    real_save = torch.save

    def half_then_crash(obj, f, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("No space left on device (simulated)")

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(OSError, match="simulated"):
        checkpointer.save("model_0003", iteration=3)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0001.pth"]  # no partial file left
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0001.pth")
    assert (tmp_path / "model_0001.pth").read_bytes() == good
    fresh, loader = _small_checkpointer(tmp_path)
    assert loader.resume_or_load("", resume=True)["iteration"] == 1
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_interrupted_last_checkpoint_update_keeps_the_old_pointer(tmp_path):
    _, checkpointer = _small_checkpointer(tmp_path)
    checkpointer.save("model_0001")
    with pytest.raises(RuntimeError):
        with atomic_open(str(tmp_path / "last_checkpoint"), "w") as f:
            f.write("model_00")
            raise RuntimeError("killed while writing (simulated)")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0001.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0001.pth"]


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_partial_files_of_a_killed_writer_are_removed_at_the_next_save(tmp_path):
    _, checkpointer = _small_checkpointer(tmp_path)
    stale = tmp_path / f".model_0003.pth.tmp-{_dead_pid()}-abcdef12"
    stale.write_bytes(b"PK\x03\x04 partial")
    with captured("fvcore.common.checkpoint") as records:  # the checkpointer's logger
        checkpointer.save("model_0005")
    assert not stale.exists()
    assert any("interrupted save" in r.getMessage() for r in records)
    assert atomic_module.remove_stale_temporary_files(str(tmp_path)) == []


# ------------------------------------------------------------------------------------------------
# A real training process killed with SIGKILL, during a checkpoint write, then --resume
# ------------------------------------------------------------------------------------------------
def _partial_files(folder):
    return sorted(glob.glob(os.path.join(folder, ".*.tmp-*")))


def test_sigkill_during_a_checkpoint_write_then_resume(coco, tmp_path):
    out = tmp_path / "run"
    opts = _run_opts(coco, out, "killed", ["SOLVER.MAX_ITER", "200"])
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", SYNTHETIC_CONFIG, *opts],
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    killed_mid_write = False
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            first_done = (out / "model_0000001.pth").exists()
            partial = [p for p in _partial_files(str(out)) if "model_0000001" not in p and "last_checkpoint" not in p]
            if first_done and partial:
                proc.send_signal(signal.SIGKILL)  # in the middle of writing a later checkpoint
                killed_mid_write = True
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert killed_mid_write, "the training process never wrote a second checkpoint"
    assert proc.returncode == -signal.SIGKILL

    # a partial temporary file is left; every visible checkpoint is complete
    assert _partial_files(str(out))
    tagged = (out / "last_checkpoint").read_text()
    for path in glob.glob(str(out / "*.pth")):
        torch.load(path, map_location="cpu", weights_only=False)
    saved = torch.load(str(out / tagged), map_location="cpu", weights_only=False)
    saved_iter = saved["iteration"]
    assert tagged == f"model_{saved_iter:07d}.pth" and saved_iter >= 1

    # --resume restores the iteration, the optimizer state (AdamW's moment estimates in this
    # config, SGD's momentum buffers otherwise) and the scheduler
    cfg = _cfg_like_train_net(opts)
    trainer = YolactTrainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == saved_iter + 1
    saved_optimizer = saved["trainer"]["_trainer"]["optimizer"]
    state = trainer.optimizer.state_dict()
    assert len(state["state"]) == len(saved_optimizer["state"]) > 0
    for key, buffers in saved_optimizer["state"].items():
        assert state["state"][key].keys() == buffers.keys()
        for name, value in buffers.items():
            assert torch.equal(torch.as_tensor(state["state"][key][name]), torch.as_tensor(value)), name
    assert any(
        v.abs().sum() > 0 for b in saved_optimizer["state"].values() for v in b.values() if v.numel() > 1
    )
    assert trainer.scheduler.state_dict() == saved["trainer"]["hooks"]["LRScheduler"]
    del trainer

    # the real command resumes at the saved iteration + 1 and cleans the partial file up
    code, log = _train_net(["--resume", *_run_opts(coco, out, "killed", ["SOLVER.MAX_ITER", str(saved_iter + 3)])])
    assert code == 0, log[-4000:]
    assert f"Starting training from iteration {saved_iter + 1}" in log
    assert "a partial file left by an interrupted save" in log
    assert not _partial_files(str(out))
    assert (out / "last_checkpoint").read_text() == "model_final.pth"


# ------------------------------------------------------------------------------------------------
# Evaluation interrupted while writing its result files, then run again
# ------------------------------------------------------------------------------------------------
def _result_files(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_interrupted_evaluation_leaves_no_partial_files_and_reruns_identically(coco, tmp_path, monkeypatch):
    import detectron2.evaluation.coco_evaluation as d2_coco_eval

    cfg = _tiny_trainer_cfg(coco, tmp_path / "out")
    torch.manual_seed(0)
    model = YolactTrainer.build_model(cfg).eval()
    name = cfg.DATASETS.TEST[0]
    folder = os.path.join(cfg.OUTPUT_DIR, "inference", name)

    first = YolactTrainer.test(cfg, model)
    files = _result_files(folder)
    assert sorted(files) == ["coco_instances_results.json", "instances_predictions.pth"]
    assert json.loads(files["coco_instances_results.json"])  # the random model does predict

    # interrupted while writing instances_predictions.pth, then while writing the json
    real_save = torch.save

    def half_then_crash(obj, f, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[:100])
        raise KeyboardInterrupt("simulated interruption")

    class _FailingJson:
        @staticmethod
        def dumps(obj, *args, **kwargs):
            raise KeyboardInterrupt("simulated interruption")

    for patch in (lambda: monkeypatch.setattr(torch, "save", half_then_crash),
                  lambda: monkeypatch.setattr(d2_coco_eval, "json", _FailingJson)):
        patch()
        with pytest.raises(KeyboardInterrupt):
            YolactTrainer.test(cfg, model)
        monkeypatch.undo()
        assert _result_files(folder) == files  # the previous complete files, no partial ones

    # a staging folder left by a killed evaluation is removed; the re-run gives the same results
    os.makedirs(os.path.join(folder, f".staging-{_dead_pid()}-x1"))
    again = YolactTrainer.test(cfg, model)
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)  # NaN-safe
    assert _result_files(folder) == files


# ------------------------------------------------------------------------------------------------
# Multi-process: a failing worker brings the job down with its error
# ------------------------------------------------------------------------------------------------
FAULTY_LAUNCHER = '''
import sys
sys.path.insert(0, {root!r})
import train_net
from detectron2.engine import launch
from detectron2.utils import comm


def main_with_fault(args):
    from yolact_d2 import YolactTrainer

    original = YolactTrainer.run_step

    def run_step(self):
        if comm.get_rank() == 1 and self.iter == 1:
            raise RuntimeError("injected failure on rank 1 at iteration 1")
        return original(self)

    YolactTrainer.run_step = run_step
    return train_net.main(args)


if __name__ == "__main__":
    args = train_net.get_parser().parse_args()
    launch(main_with_fault, args.num_gpus, num_machines=1, machine_rank=0, dist_url="auto", args=(args,))
'''


def test_a_failing_worker_stops_the_whole_multi_process_job(coco, tmp_path):
    launcher = tmp_path / "faulty_launch.py"
    launcher.write_text(FAULTY_LAUNCHER.format(root=ROOT))
    out = tmp_path / "ddp"
    args = ["--config-file", SYNTHETIC_CONFIG, "--num-gpus", "2",
            *_run_opts(coco, out, "ddp_fault", ["SOLVER.MAX_ITER", "50", "MODEL.DEVICE", "cpu"])]
    start = time.time()
    proc = subprocess.run([sys.executable, str(launcher), *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "injected failure on rank 1 at iteration 1" in log
    assert "Process 1 terminated with the following error" in log
    assert not (out / "model_final.pth").exists()
    assert time.time() - start < 300


NAN_ON_ONE_RANK_LAUNCHER = '''
import os
import sys
sys.path.insert(0, {root!r})
import train_net
from detectron2.engine import launch
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage


def main_with_nan(args):
    from yolact_d2 import YolactTrainer
    from yolact_d2.modeling.meta_arch import Yolact

    forward, train = Yolact.forward, YolactTrainer.train

    def nan_on_rank_1(self, batched_inputs):
        out = forward(self, batched_inputs)
        if self.training and comm.get_rank() == 1 and get_event_storage().iter == 1:
            out = dict(out, loss_cls=out["loss_cls"] * float("nan"))
        return out

    def train_and_record(self):
        result = train(self)
        total = sum(float(p.detach().double().sum()) for p in self.model.parameters())
        with open(os.path.join(self.cfg.OUTPUT_DIR, "params_rank%d.txt" % comm.get_rank()), "w") as f:
            f.write(repr((total, self._trainer.nonfinite_skipped)))
        return result

    Yolact.forward, YolactTrainer.train = nan_on_rank_1, train_and_record
    return train_net.main(args)


if __name__ == "__main__":
    args = train_net.get_parser().parse_args()
    launch(main_with_nan, args.num_gpus, num_machines=1, machine_rank=0, dist_url="auto", args=(args,))
'''


def test_a_non_finite_loss_on_one_process_skips_the_step_on_all(coco, tmp_path):
    """DDP: the ranks agree, so all skip the same step and stay identical (one stepping on its own would
    diverge or hang)."""
    launcher = tmp_path / "nan_launch.py"
    launcher.write_text(NAN_ON_ONE_RANK_LAUNCHER.format(root=ROOT))
    out = tmp_path / "ddp"
    args = ["--config-file", SYNTHETIC_CONFIG, "--num-gpus", "2",
            *_run_opts(coco, out, "ddp_nan", ["SOLVER.MAX_ITER", "3", "MODEL.DEVICE", "cpu", "DATASETS.TEST", "()"])]
    proc = subprocess.run([sys.executable, str(launcher), *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    main_log = (out / "log.txt").read_text()
    assert "Non-finite loss at iteration 1 (process rank(s) 1; here (rank 0): loss_cls=" in main_log
    assert "(process rank 1: loss_cls=nan" in (out / "log.txt.rank1").read_text()
    ranks = [ast.literal_eval((out / f"params_rank{r}.txt").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0][1] == 1
    with open(out / "metrics.json") as f:
        assert [json.loads(line).get("nonfinite_loss_skipped") for line in f][-1] == 1


def test_amp_grad_scaler_step_and_update_are_skipped_with_the_step():
    """FiniteAMPTrainer's scaler (AMP needs CUDA to train; the wrapper is checked with a CPU scaler)."""
    from yolact_d2.runtime.finite_loss import _StepSkippingGradScaler

    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([param], lr=0.5)
    trainer = type("Trainer", (), {"_skip_step": True})()
    scaler = _StepSkippingGradScaler(torch.amp.GradScaler("cpu", init_scale=4.0), trainer)
    scaler.scale(param.sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    assert torch.equal(param.detach(), torch.ones(3)) and scaler.get_scale() == 4.0
    trainer._skip_step = False
    optimizer.zero_grad()
    scaler.scale(param.sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    assert torch.equal(param.detach(), torch.full((3,), 0.5)) and "scale" in scaler.state_dict()
