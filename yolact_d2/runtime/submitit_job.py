"""One training job on a cluster through submitit (docs/GETTING_STARTED.md, "Several processes or
machines"; the signals: docs/RELIABILITY.md, "Cluster jobs").

:class:`SubmititTrainingJob` is the picklable callable that submitit runs once per task (one task per GPU,
on every node). Each task is one rank: rank, world size and node come from submitit's ``JobEnvironment``;
rank 0 publishes a ``tcp://`` address in the shared folder and every rank joins it. Then the task runs
``main(args)`` (``yolact_d2/cli/train.py``) as one of Detectron2's ``launch()`` workers would.

Signals inside the job. submitit installs its handlers before the task starts: SIGUSR2 (its
``SUBMITIT_PREEMPT_SIGNAL``, which SLURM sends ``signal_delay_s`` before the time limit) calls the job's
:meth:`checkpoint` and requeues the job; SIGTERM is logged and ignored. While training runs, our
:class:`~yolact_d2.runtime.interrupt.InterruptHook` takes SIGINT, SIGTERM, SIGUSR1 and the requeue signal:
the iteration is finished, every rank stops after the same one and the checkpoint is written. Then

* after the requeue signal, rank 0 hands over to submitit's handler, which calls :meth:`checkpoint` (the
  same job with ``--resume`` and one more requeue counted) and requeues; the other ranks exit 0;
* after SIGTERM / SIGINT / SIGUSR1 alone (``scancel``, a preemption without the user signal) every rank
  exits 128 + signal and logs the command that continues the run. The job always trains with ``--resume``,
  so SLURM's own requeue of a preempted job continues from the checkpoint as well.

Outside the training iterations (setup, the final evaluation) submitit's handlers apply unchanged.
"""
import copy
import logging
import os
import shlex
import signal
import socket
import sys
import time
from datetime import timedelta
from typing import Callable, List

from ..utils.atomic_io import atomic_write_bytes
from ..utils.errors import UserError
from .interrupt import TrainingInterrupted, add_stop_signal, exit_status
from .peer_watch import PeerWatch

__all__ = ["SubmititTrainingJob", "RequeueLimitError", "requeue_signal", "attempt_folder"]

logger = logging.getLogger(__name__)


class RequeueLimitError(UserError):
    """The job was requeued as many times as allowed (``--max-requeues``)."""


def requeue_signal() -> int:
    """The signal on which submitit checkpoints and requeues a job: SIGUSR2 unless ``SUBMITIT_PREEMPT_SIGNAL``
    names another (submitit reads the same variable)."""
    import submitit

    name = "SIG" + submitit.JobEnvironment.USR_SIG
    if not hasattr(signal, name):
        raise UserError(f"SUBMITIT_PREEMPT_SIGNAL={submitit.JobEnvironment.USR_SIG}", "not a signal name",
                        fix="unset it (submitit's default is USR2) or give a name such as USR2")
    return int(getattr(signal, name))


def attempt_folder(shared_folder: str, job_id: str, requeues: int) -> str:
    """The folder of one start of the job (rendezvous address, heartbeats, failure notes). A requeue through
    :meth:`SubmititTrainingJob.checkpoint` counts one more in ``requeues``; SLURM's own requeue counts in
    ``SLURM_RESTART_COUNT``: each start gets a new folder, never a stale address."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    return os.path.join(shared_folder, "submitit", "attempts", f"{job_id}.{requeues}.{restarts}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def rendezvous_url(folder: str, rank: int, num_nodes: int, timeout_s: float, poll_s: float = 0.2) -> str:
    """Rank 0 picks a free port on its node and writes ``tcp://<its host>:<port>`` to ``folder/dist_url``
    (127.0.0.1 on one node); the other ranks wait for that file (at most ``timeout_s``)."""
    path = os.path.join(folder, "dist_url")
    if rank == 0:
        host = "127.0.0.1" if num_nodes == 1 else socket.gethostname()
        url = f"tcp://{host}:{_free_port()}"
        atomic_write_bytes(path, url.encode())
        return url
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with open(path) as f:
                return f.read().strip()
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise UserError(f"{path}", f"rank 0 did not publish its address within {timeout_s:g} s",
                                fix="check rank 0's log; raise --dist-timeout if it starts slowly") from None
            time.sleep(poll_s)


class SubmititTrainingJob:
    """Runs ``main(args)`` on every task of a submitit job (module docstring).

    ``submit_argv``: the command line that submitted the job (for the messages that say how to continue);
    ``gpus_per_node``: 0 for CPU processes (gloo); ``max_requeues``: how often the job may requeue itself;
    ``poll_s`` / ``dead_after_s``: the :class:`PeerWatch` of the ranks."""

    def __init__(self, main: Callable, args, submit_argv: List[str], shared_folder: str, gpus_per_node: int,
                 max_requeues: int, requeues: int = 0, poll_s: float = 10.0, dead_after_s: float = 180.0):
        self.main, self.args, self.submit_argv = main, args, list(submit_argv)
        self.shared_folder, self.gpus_per_node = shared_folder, gpus_per_node
        self.max_requeues, self.requeues = max_requeues, requeues
        self.poll_s, self.dead_after_s = poll_s, dead_after_s

    # ------------------------------------------------------------------ submitit's protocol
    def checkpoint(self, *args, **kwargs):
        """Called by submitit's requeue handler (rank 0): the same job with ``--resume``, one requeue more;
        None (no requeue, submitit says so) past ``max_requeues``."""
        from submitit.helpers import DelayedSubmission

        if self.requeues >= self.max_requeues:
            logger.error(self._limit_message())
            return None
        again = copy.copy(self)
        again.args = copy.copy(self.args)
        again.args.resume = True
        again.requeues = self.requeues + 1
        return DelayedSubmission(again)

    def __call__(self):
        import submitit

        env = submitit.JobEnvironment()
        usr_sig = requeue_signal()
        submitit_handler = signal.getsignal(usr_sig)  # submitit's checkpoint-and-requeue
        add_stop_signal(usr_sig)  # while training, our hook finishes the iteration and checkpoints first
        folder = attempt_folder(self.shared_folder, env.job_id, self.requeues)
        os.makedirs(folder, exist_ok=True)
        self._init_distributed(env, folder)
        watch = PeerWatch(folder, env.global_rank, env.num_tasks, self._log_description(env), poll_s=self.poll_s,
                          dead_after_s=self.dead_after_s).start()
        try:
            result = self.main(self.args)
        except TrainingInterrupted as stop:
            watch.exited()
            return self._after_stop(stop, env, usr_sig, submitit_handler)
        except (SystemExit, KeyboardInterrupt):
            watch.exited()
            raise
        except BaseException as e:
            watch.failed(e)
            peer = watch.first_failure()
            if peer and not peer.startswith(f"rank {env.global_rank} "):
                logger.error(f"Rank {env.global_rank} stopped after another rank: {peer}")
            raise
        watch.exited()
        return result

    # ------------------------------------------------------------------ helpers
    def _log_description(self, env) -> str:
        return f"{env.paths.stdout} and {env.paths.stderr}"

    def _init_distributed(self, env, folder: str) -> None:
        import torch
        import torch.distributed as dist

        from detectron2.utils import comm

        if env.num_tasks <= 1:
            return
        timeout_s = 60.0 * self.args.dist_timeout
        url = rendezvous_url(folder, env.global_rank, env.num_nodes, timeout_s)
        use_gpu = self.gpus_per_node > 0 and torch.cuda.is_available()
        if use_gpu:
            torch.cuda.set_device(env.local_rank)
        print(f"[yolact_d2 submitit] rank {env.global_rank} of {env.num_tasks} (node {env.node} of {env.num_nodes},"
              f" local rank {env.local_rank}) joining {url}", file=sys.stderr, flush=True)
        dist.init_process_group(backend="nccl" if use_gpu else "gloo", init_method=url, world_size=env.num_tasks,
                                rank=env.global_rank, timeout=timedelta(seconds=timeout_s))
        comm.create_local_process_group(env.num_tasks // env.num_nodes)
        comm.synchronize()

    def _continue_command(self) -> str:
        argv = [a for a in self.submit_argv if a != "--resume"]
        return shlex.join([sys.executable, *argv[:1], "--resume", *argv[1:]])

    def _limit_message(self) -> str:
        return (f"the job was requeued {self.requeues} times, --max-requeues {self.max_requeues}: not requeued "
                f"again. Continue with: {self._continue_command()}")

    def _after_stop(self, stop: TrainingInterrupted, env, usr_sig: int, submitit_handler):
        """After the interrupt checkpoint: requeue (the requeue signal) or exit 128 + signal."""
        rank = env.global_rank
        name = signal.Signals(stop.signum).name
        requeue = stop.signum == usr_sig or usr_sig in stop.received
        if rank != 0:
            logger.info(f"Rank {rank}: training stopped by {name} after iteration {stop.iteration}"
                        + ("; rank 0 requeues the job." if requeue else "."))
            raise SystemExit(0 if requeue else stop.exit_status)
        log = logging.getLogger("yolact_d2")
        log.warning(f"Training stopped by {name} after iteration {stop.iteration}. Checkpoint: {stop.checkpoint} "
                    "(last_checkpoint points at it).")
        if not requeue:
            log.warning(f"Not requeued ({name} is not {signal.Signals(usr_sig).name}). Continue from iteration "
                        f"{stop.iteration + 1} with: {self._continue_command()}")
            raise SystemExit(stop.exit_status)
        if self.requeues >= self.max_requeues:
            raise RequeueLimitError(f"job {env.job_id}", self._limit_message())
        log.warning(f"Requeueing job {env.job_id} ({self.requeues + 1} of at most {self.max_requeues} requeues): it "
                    f"continues from iteration {stop.iteration + 1} with --resume.")
        if callable(submitit_handler):
            submitit_handler(usr_sig, None)  # calls self.checkpoint(), requeues, exits
        raise SystemExit(exit_status(usr_sig))  # not under submitit's handler: stop like train_net.py

