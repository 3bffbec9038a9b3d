"""Ctrl-C and preemption during training (docs/RELIABILITY.md, "Interrupts and preemption"): a real
train_net.py gets SIGINT / SIGTERM (one process, and the launcher of 2 CPU processes), finishes the
iteration, checkpoints it, prints the --resume command and exits 128 + signal; the printed command
continues at the next iteration with the optimizer and LR schedule where they were."""
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from detectron2.solver import build_lr_scheduler

from yolact_d2.runtime import interrupt
from yolact_d2.runtime.config_loading import setup_cfg

from conftest import captured, small_synthetic_coco

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "train_net.py")
SYNTHETIC_CONFIG = os.path.join(ROOT, "configs", "Synthetic", "yolact_R_18_FPN_synthetic.yaml")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=ROOT)
READY = "Stop training with"  # logged once the handlers are installed on every process
# A process started in the background by a shell ignores SIGINT, and so would train_net.py: restore it.
DEFAULT_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
STOPPED = re.compile(r"Training stopped by (\w+) after iteration (\d+)\. Checkpoint: (\S+) \(last_checkpoint")
CONTINUE = re.compile(r"Continue from iteration (\d+) with: (.+)$", re.M)

# A train_net.py whose checkpoint writes take 3 s longer, so that a second signal surely comes during one.
SLOW_SAVE = '''
import sys, time
sys.path.insert(0, {root!r})
import torch
real_save = torch.save
torch.save = lambda *a, **k: (time.sleep(3), real_save(*a, **k))[1]
sys.argv[0] = {train_net!r}
import runpy
runpy.run_path({train_net!r}, run_name="__main__")
'''


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 8, 2, seed=11)


def _opts(coco, out, tag):
    (train_json, train_root), (val_json, val_root) = coco
    return [
        "DATASETS.COCO_INSTANCES", str([[f"{tag}_train", train_json, train_root], [f"{tag}_val", val_json, val_root]]),
        "DATASETS.TRAIN", f"('{tag}_train',)", "DATASETS.TEST", f"('{tag}_val',)",
        # a long warm-up: the LR differs at every iteration, a reset schedule would show
        "INPUT.IMAGE_SIZE", "128", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "100",
        "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "1000", "SOLVER.MAX_ITER", "500",
        "SEED", "5", "OUTPUT_DIR", str(out),
    ]


class _Run:
    """A train_net.py subprocess whose output is collected by a thread, to wait for log lines."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen([sys.executable, "-c", DEFAULT_SIGINT, *cmd], cwd=ROOT, env=ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines, self._new = [], threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    @property
    def log(self):
        return "".join(self.lines)

    def wait_for(self, text, timeout=300):
        deadline = time.time() + timeout
        with self._new:
            while text not in self.log:
                if self.proc.poll() is not None and text not in self.log:
                    self._new.wait(1)  # the last lines may still be on their way
                    if text in self.log:
                        break
                    raise AssertionError(f"train_net.py exited ({self.proc.returncode}) before {text!r}:\n"
                                         + self.log[-4000:])
                if time.time() > deadline:
                    raise AssertionError(f"no {text!r} within {timeout} s:\n" + self.log[-4000:])
                self._new.wait(1)

    def finish(self, timeout=300):
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.2)  # reader thread: the end of the output
        return code, self.log


def _train_net(args):
    return [TRAIN_NET, "--config-file", SYNTHETIC_CONFIG, *args]


def _stopped(log, signal_name):
    """(iteration, checkpoint path, resume argv) from the two lines of a stopped run."""
    assert "Traceback" not in log, log[-4000:]
    match = STOPPED.search(log)
    assert match, log[-4000:]
    assert match.group(1) == signal_name
    iteration = int(match.group(2))
    resume = CONTINUE.search(log)
    assert resume and int(resume.group(1)) == iteration + 1, log[-3000:]
    return iteration, match.group(3), shlex.split(resume.group(2))


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _check_checkpoint(out, path, iteration):
    assert os.path.dirname(path) == str(out)
    assert os.path.basename(path) == f"model_{iteration:07d}.pth"
    assert (out / "last_checkpoint").read_text() == os.path.basename(path)
    assert not [n for n in os.listdir(out) if ".tmp-" in n]  # no partial file
    saved = _load(path)
    assert saved["iteration"] == iteration
    assert saved["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == iteration + 1
    assert saved["trainer"]["bad_images_skipped"] == {"count": 0, "files": {}}  # the skipped-image count
    return saved


def _expected_lr(opts, steps):
    """The LR the schedule of these options gives after ``steps`` scheduler steps."""
    cfg = setup_cfg(SYNTHETIC_CONFIG, opts, freeze=False)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


def _optimizer(saved):
    return saved["trainer"]["_trainer"]["optimizer"]


def test_sigint_checkpoint_then_the_printed_command_resumes_and_a_second_signal_during_the_save(coco, tmp_path):
    out = tmp_path / "run"
    opts = _opts(coco, out, "int")
    run = _Run(_train_net(opts))
    run.wait_for(READY)
    run.proc.send_signal(signal.SIGINT)
    code, log = run.finish()
    assert code == 130, log[-4000:]
    assert "KeyboardInterrupt" not in log
    n, path, resume = _stopped(log, "SIGINT")
    assert resume == [sys.executable, TRAIN_NET, "--resume", *_train_net(opts)[1:]]
    first = _check_checkpoint(out, path, n)
    lr = _optimizer(first)["param_groups"][0]["lr"]
    assert lr == pytest.approx(_expected_lr(opts, n + 1), rel=1e-9)  # the LR of iteration n + 1

    # the printed command continues at n + 1 (run with checkpoint writes slowed down by 3 s); stopped
    # by SIGTERM after iteration m, with SIGUSR1 and SIGTERM again while that checkpoint is written
    launcher = tmp_path / "slow_save_train_net.py"
    launcher.write_text(SLOW_SAVE.format(root=ROOT, train_net=TRAIN_NET))
    run = _Run([str(launcher), *resume[2:]])
    run.wait_for(READY)
    assert f"Starting training from iteration {n + 1}" in run.log
    run.proc.send_signal(signal.SIGTERM)
    run.wait_for("Saving checkpoint to")  # then 3 s in torch.save
    run.proc.send_signal(signal.SIGUSR1)
    run.proc.send_signal(signal.SIGTERM)
    code, log = run.finish()
    assert code == 143, log[-4000:]  # the first signal's status
    assert "Received SIGUSR1 while writing the checkpoint: ignored" in log
    assert "Received SIGTERM while writing the checkpoint: ignored" in log
    m, path, _ = _stopped(log, "SIGTERM")
    assert m >= n + 1
    second = _check_checkpoint(out, path, m)  # complete, loads, last_checkpoint names it
    assert all(torch.isfinite(v).all() for v in second["model"].values() if v.is_floating_point())
    # optimizer state continued (AdamW's step count), LR schedule continued (not restarted)
    steps = {float(s["step"]) for s in _optimizer(second)["state"].values()}
    assert steps == {float(m + 1)}, steps
    assert {float(s["step"]) for s in _optimizer(first)["state"].values()} == {float(n + 1)}
    assert _optimizer(second)["param_groups"][0]["lr"] == pytest.approx(_expected_lr(opts, m + 1), rel=1e-9)
    assert _expected_lr(opts, m + 1) != pytest.approx(_expected_lr(opts, m - n), rel=1e-3)


def test_sigterm_to_the_launcher_of_two_processes(coco, tmp_path):
    out = tmp_path / "ddp"
    run = _Run(_train_net(["--num-gpus", "2", *_opts(coco, out, "ddp"), "MODEL.DEVICE", "cpu"]))
    run.wait_for(READY)
    run.proc.send_signal(signal.SIGTERM)  # the launcher only, as `kill` or SLURM would
    code, log = run.finish()
    assert code == 143, log[-4000:]
    assert "terminated with" not in log  # no ProcessExitedException / ProcessRaisedException
    n, path, resume = _stopped(log, "SIGTERM")
    assert "--num-gpus" in resume
    saved = _check_checkpoint(out, path, n)
    assert _optimizer(saved)["state"]
    # both ranks stopped after the same iteration (rank 1 logs to log.txt.rank1)
    rank1 = (out / "log.txt.rank1").read_text()
    assert "Traceback" not in rank1
    assert f"Rank 1: training stopped by SIGTERM after iteration {n}." in rank1


def test_resume_command_puts_resume_before_the_overrides():
    argv = ["train_net.py", "--config-file", "my cfg.yaml", "--resume", "SOLVER.MAX_ITER", "5"]
    assert shlex.split(interrupt.resume_command(argv)) == [
        sys.executable, "train_net.py", "--resume", "--config-file", "my cfg.yaml", "SOLVER.MAX_ITER", "5"]


def test_repeated_signals_outside_the_save_exit_at_once_on_the_third(monkeypatch):
    hook = interrupt.InterruptHook()
    hook.trainer = SimpleNamespace(iter=7)
    clock, exits, written = [100.0], [], []
    monkeypatch.setattr(interrupt, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    fake_os = SimpleNamespace(_exit=exits.append, write=lambda fd, data: written.append((fd, data)))
    monkeypatch.setattr(interrupt, "os", fake_os)
    with captured("yolact_d2") as records:
        hook._handle(signal.SIGINT, None)
        hook._handle(signal.SIGINT, None)  # Ctrl-C reaches a worker twice (terminal + launcher): once
        assert (hook._signum, hook._count) == (signal.SIGINT, 1)
        clock[0] += 1
        hook._handle(signal.SIGTERM, None)
        assert hook._count == 2 and not exits
        hook._saving, clock[0] = True, clock[0] + 1
        hook._handle(signal.SIGINT, None)  # during the save: ignored, not counted
        assert hook._count == 2 and not exits
        hook._saving, clock[0] = False, clock[0] + 1
        hook._handle(signal.SIGTERM, None)
        # nothing is logged inside a handler (a signal during a log write would make logging re-enter)
        assert records == []
        hook._flush_notices()  # what the training loop does after the iteration
    assert exits == [130]  # the status of the first signal
    messages = [r.getMessage() for r in records]
    assert messages[0] == "Received SIGINT: finishing iteration 7, then saving a checkpoint and stopping."
    assert "Received SIGTERM again: stopping after iteration 7; 1 more to exit at once" in messages[1]
    assert messages[2] == "Received SIGINT while writing the checkpoint: ignored, the save goes on."
    # the immediate exit cannot wait for the loop: one raw line on stderr
    assert len(written) == 1 and written[0][0] == 2
    assert written[0][1].decode().startswith("ERROR: Received SIGTERM 3 times: exiting now")
