"""Stopping training cleanly on Ctrl-C and preemption (docs/RELIABILITY.md, "Interrupts and preemption").

SIGINT, SIGTERM, SIGHUP (the terminal or ssh session closed) or SIGUSR1 during training (one process or
``launch()`` workers) does not stop the current iteration: :class:`InterruptHook` lets it finish, every process
agrees to stop after the same iteration, the main process writes an atomic checkpoint of it through the
trainer's checkpointer (``last_checkpoint`` points at it) and :class:`TrainingInterrupted` ends training.
:func:`launch_stoppable` (used by ``train_net.py``) turns that into two log lines, the checkpoint and the
``--resume`` command, and exit status 128 + signal number (130, 143, 129, 138) without a traceback.
In a multi-process run the launching process forwards the signals it gets to its workers. A signal that comes while the
checkpoint is written is logged and otherwise ignored: the save always completes. The third signal outside the
save exits at once (the previous checkpoints stay complete: writes are atomic). A script that calls Detectron2's
``launch()`` itself gets the checkpoint too, but a traceback of :class:`TrainingInterrupted`: use
:func:`launch_stoppable` instead.

Inside a submitit job (runtime/submitit_job.py) :func:`add_stop_signal` adds submitit's requeue signal
(SIGUSR2) to these, and :attr:`TrainingInterrupted.received` tells the job which signals came.
"""
import logging
import os
import shlex
import signal
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from detectron2.engine import HookBase
from detectron2.utils import comm

from ..utils.detectron2_internals import global_gloo_group
from .reporting import run_in_worker

__all__ = [
    "InterruptHook", "TrainingInterrupted", "STOP_SIGNALS", "add_stop_signal", "exit_status", "resume_command",
    "launch_stoppable",
]

logger = logging.getLogger(__name__)

# The signals that stop training with a checkpoint: Ctrl-C, kill / SLURM preemption, the terminal or ssh
# session closing (SIGHUP; a run under nohup ignores it, and keeps ignoring it), SLURM --signal=USR1.
STOP_SIGNALS = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None), getattr(signal, "SIGUSR1", None))
    if s is not None
)
_extra_stop_signals: List[int] = []  # add_stop_signal: e.g. submitit's requeue signal inside a submitit job


def add_stop_signal(signum: int) -> None:
    """Make ``signum`` stop training with a checkpoint too, in this process (for the hooks created from
    now on). The submitit job (runtime/submitit_job.py) adds its requeue signal, SIGUSR2 by default."""
    if signum not in STOP_SIGNALS and signum not in _extra_stop_signals:
        _extra_stop_signals.append(signum)


# A stop signal received this many times (outside the save) exits at once, for a step that takes too long.
FORCE_AFTER = 3
REPEAT_WINDOW_S = 0.5  # signals closer than this count as one


def exit_status(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + the signal number."""
    return 128 + int(signum)


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def resume_command(argv: Optional[List[str]] = None) -> str:
    """The command line that continues this run: ``--resume`` goes right after the script, before the
    ``KEY VALUE`` overrides (which take the rest of the command line)."""
    argv = list(sys.argv if argv is None else argv)
    head = [sys.executable, argv[0]]
    if os.path.basename(argv[0]) == "__main__.py" and argv[1:2] == ["train"]:  # python -m yolact_d2 train
        head, argv = [sys.executable, "-m", "yolact_d2", "train"], argv[1:]
    rest = [a for a in argv[1:] if a != "--resume"]
    return shlex.join([*head, "--resume", *rest])


class TrainingInterrupted(BaseException):
    """Training was stopped by a signal after ``iteration``, saved to ``checkpoint`` (main process).

    A BaseException, like KeyboardInterrupt: it is not an error, and Detectron2's training loop logs
    every ``Exception`` with its traceback."""

    def __init__(self, signum: int, iteration: int, checkpoint: Optional[str], received=()):
        super().__init__(signum, iteration, checkpoint)
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint
        self.received = frozenset(received)  # every stop signal this process got (a submitit job requeues on one)

    @property
    def exit_status(self) -> int:
        return exit_status(self.signum)

    def __str__(self) -> str:
        return f"training stopped by {_name(self.signum)} after iteration {self.iteration}"


class InterruptHook(HookBase):
    """Installs the stop handlers for the training loop (main thread only) and, after the iteration in
    which a stop signal came, saves ``model_<iteration>.pth`` and raises :class:`TrainingInterrupted`.

    Register it last, so that the LR scheduler, the periodic checkpointer and the metrics writers have
    done that iteration. With several processes the stop flag is summed over the ranks once per
    iteration (max of one int on a gloo group), so all stop after the same iteration."""

    def __init__(self, signals=None):
        self.signals = tuple(STOP_SIGNALS + tuple(_extra_stop_signals) if signals is None else signals)
        self.received = set()
        self._previous: Dict[int, object] = {}
        self._signum = 0  # the first stop signal received, 0 if none
        self._count, self._last = 0, -REPEAT_WINDOW_S  # signals (a burst counts once), time of the last
        self._saving = False
        self._stopping = False
        self._group = None
        self._notices: List[Tuple[int, str]] = []

    # ------------------------------------------------------------------ signal handling
    def _handle(self, signum, frame):
        # No logging here: the signal can arrive while a log handler is writing, and logging again
        # from inside that write fails (a re-entrant flush). Messages wait for _flush_notices.
        self.received.add(signum)
        if self._saving:
            self._notice(logging.WARNING, f"Received {_name(signum)} while writing the checkpoint: ignored, the save "
                                          "goes on.")
            return
        if self._stopping:
            return  # the checkpoint is written, the process is exiting
        now = time.monotonic()
        if now - self._last >= REPEAT_WINDOW_S:  # Ctrl-C reaches a worker directly and forwarded: once
            self._count += 1
        self._last = now
        if not self._signum:
            self._signum = signum
            self._notice(logging.WARNING, f"Received {_name(signum)}: finishing iteration {self.trainer.iter}, then "
                                          "saving a checkpoint and stopping.")
        elif self._count >= FORCE_AFTER:
            message = (f"Received {_name(signum)} {self._count} times: exiting now, without a checkpoint of this "
                       "iteration (the last complete checkpoint is still there).")
            os.write(2, f"ERROR: {message}\n".encode())  # a raw write is safe in a handler; logging is not
            os._exit(exit_status(self._signum))
        elif self._count > 1:
            self._notice(logging.WARNING, f"Received {_name(signum)} again: stopping after iteration "
                                          f"{self.trainer.iter}; {FORCE_AFTER - self._count} more to exit at once "
                                          "without that checkpoint.")

    def _notice(self, level: int, message: str) -> None:
        self._notices.append((level, message))

    def _flush_notices(self) -> None:
        """Log what the signal handler had to say (called from the training loop, where logging is safe)."""
        while self._notices:
            level, message = self._notices.pop(0)
            logger.log(level, message)

    def _install(self):
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Training runs outside the main thread: signals stop it without a checkpoint.")
            return
        for s in self.signals:
            if signal.getsignal(s) is not signal.SIG_IGN:  # e.g. SIGINT of a background job stays ignored
                self._previous[s] = signal.signal(s, self._handle)

    def _restore(self):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous = {}

    # ------------------------------------------------------------------ hook
    def before_train(self):
        self._install()
        if comm.get_world_size() > 1:
            self._group = global_gloo_group()  # CPU collectives whatever the backend
            dist.barrier(group=self._group)  # every rank has its handlers before we say so
        if comm.is_main_process() and self._previous:
            names = "/".join(_name(s) for s in self._previous)
            logger.info(f"Stop training with {names} (Ctrl-C): the current iteration is finished and checkpointed.")

    def _agreed_signal(self) -> int:
        if self._group is None:
            return self._signum
        flag = torch.tensor([self._signum], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag.item())

    def after_step(self):
        self._flush_notices()
        signum = self._agreed_signal()
        if not signum:
            if self.trainer.iter + 1 >= self.trainer.max_iter:
                self._restore()  # the final evaluation can be interrupted as usual
            return
        self._signum = self._signum or signum
        iteration = self.trainer.iter
        checkpointer = self.trainer.checkpointer
        self._saving = True
        try:
            checkpointer.save(f"model_{iteration:07d}", iteration=iteration)  # on the main process only
            if self._group is not None:
                dist.barrier(group=self._group)  # no rank exits before the checkpoint is complete
        finally:
            self._saving = False
            self._stopping = True
            self._flush_notices()
        path = checkpointer.get_checkpoint_file() if comm.is_main_process() else None
        raise TrainingInterrupted(signum, iteration, path, self.received)

    def after_train(self):
        self._flush_notices()
        if not self._stopping:
            self._restore()


# ---------------------------------------------------------------------- command-line side
def _stoppable_main(main: Callable, *args):
    """Runs ``main`` (in the launching process or in a ``launch()`` worker): a stop becomes two log
    lines on the main process and ``SystemExit(128 + signal)``, which torch's workers pass on as
    their exit status. In a worker, a known user error is printed there as its one line (the
    process exits 1 and the launching process adds no traceback)."""
    try:
        if comm.get_world_size() > 1:
            return run_in_worker(main, *args)
        return main(*args)
    except TrainingInterrupted as stop:
        if comm.is_main_process():
            log = logging.getLogger("yolact_d2")
            log.warning(
                f"Training stopped by {_name(stop.signum)} after iteration {stop.iteration}. Checkpoint: "
                f"{stop.checkpoint} (last_checkpoint points at it)."
            )
            log.warning(f"Continue from iteration {stop.iteration + 1} with: {resume_command()}")
        else:
            logger.info(f"Rank {comm.get_rank()}: {stop}.")
        raise SystemExit(stop.exit_status) from None
    except KeyboardInterrupt:
        if comm.is_main_process():
            logging.getLogger("yolact_d2").warning(
                "Interrupted (SIGINT) outside the training iterations: no new checkpoint was written."
            )
        raise SystemExit(exit_status(signal.SIGINT)) from None


class _ForwardSignals:
    """In the launching process of a multi-process run: pass the stop signals on to the workers
    (``kill`` and SLURM signal that process only) and remember the first one."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum = 0
        self._previous = {}

    def _forward(self, signum, frame):
        import multiprocessing

        self.signum = self.signum or signum
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signum)
            except OSError:
                pass  # already gone

    def __enter__(self):
        if self.enabled:
            ignored = [s for s in STOP_SIGNALS if signal.getsignal(s) is signal.SIG_IGN]  # the workers inherit it
            self._previous = {s: signal.signal(s, self._forward) for s in STOP_SIGNALS if s not in ignored}
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        return False


def launch_stoppable(main: Callable, num_gpus_per_machine: int, num_machines: int = 1, args=(), launch_fn=None,
                     **kwargs) -> int:
    """Detectron2's ``launch(main, ...)`` (or ``launch_fn``, a function with its signature) in which a stop
    signal ends the run with its exit status, the checkpoint and the ``--resume`` command logged, and no
    traceback (module docstring)."""
    from detectron2.engine import launch as d2_launch
    launch = launch_fn or d2_launch
    from torch.multiprocessing import ProcessExitedException

    codes = {exit_status(s): s for s in STOP_SIGNALS}
    with _ForwardSignals(num_gpus_per_machine * num_machines > 1) as forwarded:
        try:
            launch(_stoppable_main, num_gpus_per_machine, num_machines=num_machines,
                   args=(main, *args), **kwargs)
        except ProcessExitedException as e:  # a worker stopped (its lines are logged) or was killed
            code = e.exit_code
            if code in codes:
                return code
            if code is not None and code < 0 and -code in STOP_SIGNALS:
                return exit_status(-code)
            raise
    if forwarded.signum:
        return exit_status(forwarded.signum)  # the workers ended on the signal before training
    return 0
