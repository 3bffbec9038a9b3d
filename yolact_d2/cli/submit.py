"""Submit one training job across nodes of a SLURM cluster through submitit (``tools/submit.py``).

    python tools/submit.py --shared-folder /checkpoint/$USER/yolact --nodes 2 --gpus-per-node 8 \\
        --partition learn --time 4320 --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml \\
        OUTPUT_DIR yolact_R_101

``train_net.py``'s arguments (``--config-file``, ``--resume``, ``--eval-only``, ``--dist-timeout``,
``--num-vis``, ``KEY VALUE`` overrides last) plus the cluster's: nodes, GPUs per node, partition, time
limit, account, QoS, extra ``#SBATCH`` parameters. A relative ``OUTPUT_DIR`` is put under the shared
folder; submitit's logs go to ``<shared folder>/submitit/<job id>/``. Preemption and the time limit
checkpoint the current iteration and requeue the job (``yolact_d2/runtime/submitit_job.py``). Needs the
``cluster`` extra: ``pip install "yolact_d2[cluster]"``.
"""
import argparse
import functools
import os
import sys
import time

from ..runtime.config_loading import setup_cfg
from ..runtime.reporting import run_cli
from ..runtime.submitit_job import SubmititTrainingJob
from ..utils.errors import ConfigError, UserError
from . import train as train_command

__all__ = ["get_parser", "cli_main", "submit_training", "build_executor", "load_submitit"]

# train_net.py's own launch flags: inside a job the ranks come from submitit
_LAUNCH_FLAGS = ("--num-gpus", "--num-machines", "--machine-rank", "--dist-url")
DEFAULT_MAX_REQUEUES = 20


def load_submitit():
    """submitit, or one line that names the extra."""
    try:
        import submitit
    except ImportError:
        raise UserError("tools/submit.py", "submitit is not installed",
                        fix='pip install "yolact_d2[cluster]" (or: pip install "submitit>=1.5")') from None
    return submitit


def _slurm_param(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (an #SBATCH option without its dashes), got {text!r}")
    return key.lstrip("-").replace("-", "_"), value


def get_parser():
    parser = train_command.get_parser()
    parser.description = "Submit one training job across the nodes of a SLURM cluster through submitit."
    parser.epilog = ("example: python tools/submit.py --shared-folder /shared/$USER/yolact --nodes 2 --gpus-per-node 8 "
                     "--partition P --time 4320 --config-file CONFIG OUTPUT_DIR run1 (docs/GETTING_STARTED.md)")
    group = parser.add_argument_group("cluster (before the KEY VALUE overrides)")
    group.add_argument("--shared-folder", required=True, metavar="DIR",
                       help="a folder every node sees: submitit's logs and pickles, the rendezvous, OUTPUT_DIR")
    group.add_argument("--nodes", type=int, default=1, help="number of machines (default %(default)s)")
    group.add_argument("--gpus-per-node", type=int, default=1,
                       help="GPUs per machine, one process each; 0 with MODEL.DEVICE cpu (default %(default)s)")
    group.add_argument("--tasks-per-node", type=int, default=None,
                       help="processes per machine (default: --gpus-per-node, 1 without GPUs)")
    group.add_argument("--cpus-per-task", type=int, default=None, help="CPU cores per process (SLURM)")
    group.add_argument("--mem-gb", type=float, default=None, help="memory per machine in GB (SLURM)")
    group.add_argument("--partition", default=None, help="SLURM partition")
    group.add_argument("--time", type=int, default=24 * 60, metavar="MINUTES",
                       help="time limit of one run of the job; it requeues itself (default %(default)s)")
    group.add_argument("--account", default=None, help="SLURM account")
    group.add_argument("--qos", default=None, help="SLURM QoS")
    group.add_argument("--slurm-param", type=_slurm_param, action="append", default=[], metavar="KEY=VALUE",
                       help="any other #SBATCH option, e.g. constraint=volta32gb (repeatable)")
    group.add_argument("--signal-delay", type=int, default=120, metavar="SECONDS",
                       help="SLURM sends the requeue signal (SIGUSR2) this long before the time limit "
                       "(default %(default)s)")
    group.add_argument("--max-requeues", type=int, default=DEFAULT_MAX_REQUEUES,
                       help="the job requeues itself at most this many times (default %(default)s)")
    group.add_argument("--peer-timeout", type=float, default=180.0, metavar="SECONDS",
                       help="a rank without a heartbeat for this long is dead and the job ends (default %(default)s)")
    group.add_argument("--job-name", default="yolact_d2", help="the job's name (default %(default)s)")
    group.add_argument("--cluster", choices=("slurm", "local"), default=None,
                       help="submitit's executor: slurm, or local processes on this machine (default: slurm "
                       "where sbatch exists, local otherwise)")
    group.add_argument("--wait", action="store_true", help="wait for the job to end and exit with its status")
    return parser


def _check_arguments(parser, args, argv) -> None:
    flags = [a for a in argv if a.split("=")[0] in _LAUNCH_FLAGS]
    if flags:
        parser.error(f"{flags[0].split('=')[0]} is train_net.py's launch flag; with tools/submit.py give --nodes and "
                     "--gpus-per-node (the ranks come from the job)")
    for name in ("nodes", "max_requeues", "time"):
        value = getattr(args, name)
        if value < (0 if name == "max_requeues" else 1):
            parser.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'max_requeues' else 1}, got {value}")
    if args.gpus_per_node < 0:
        parser.error(f"--gpus-per-node must be >= 0, got {args.gpus_per_node}")
    if args.tasks_per_node is None:
        args.tasks_per_node = max(1, args.gpus_per_node)
    if args.tasks_per_node < 1:
        parser.error(f"--tasks-per-node must be >= 1, got {args.tasks_per_node}")
    if not args.dist_timeout > 0 or not args.peer_timeout > 0:
        parser.error("--dist-timeout and --peer-timeout must be > 0")


def _output_dir(args) -> str:
    """OUTPUT_DIR on the shared folder (a requeued job may start on other nodes and must find its checkpoints);
    the cfg is also checked here, before anything is submitted."""
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    shared = os.path.abspath(args.shared_folder)
    out = cfg.OUTPUT_DIR
    if not out:
        raise ConfigError("OUTPUT_DIR is empty", "a cluster job needs its checkpoints",
                          fix="give OUTPUT_DIR, relative to --shared-folder")
    out = os.path.abspath(os.path.join(shared, out))  # an absolute OUTPUT_DIR stays what it is
    if os.path.commonpath([out, shared]) != shared:
        raise ConfigError(f"OUTPUT_DIR {cfg.OUTPUT_DIR}", f"not inside --shared-folder {shared}",
                          fix="every node must find the checkpoints: give a relative OUTPUT_DIR or one under the "
                          "shared folder")
    return out


def build_executor(args):
    """submitit's executor for ``args`` (a usage error for what the chosen executor cannot do)."""
    submitit = load_submitit()
    folder = os.path.join(os.path.abspath(args.shared_folder), "submitit", "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster=args.cluster, slurm_max_num_timeout=args.max_requeues,
                                     local_max_num_timeout=args.max_requeues)
    if executor.cluster not in ("slurm", "local"):
        raise UserError(f"submitit executor {executor.cluster!r}", "not supported", fix="give --cluster slurm or local")
    if executor.cluster == "local" and args.nodes > 1:
        raise UserError(f"--nodes {args.nodes}", "the local executor runs on this machine only",
                        fix="submit from a SLURM login node (sbatch on the PATH), or give --nodes 1")
    params = dict(name=args.job_name, timeout_min=args.time, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                  tasks_per_node=args.tasks_per_node, cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb,
                  slurm_signal_delay_s=args.signal_delay)
    slurm = dict(partition=args.partition, account=args.account, qos=args.qos)
    params.update({f"slurm_{k}": v for k, v in slurm.items() if v is not None})
    if args.slurm_param:
        params["slurm_additional_parameters"] = dict(args.slurm_param)
    executor.update_parameters(**params)
    return executor


def submit_training(args, argv, executor=None, poll_s: float = 10.0):
    """Submit the training job described by ``args`` (parsed by :func:`get_parser`; ``argv`` the command line
    for the messages); returns submitit's job. Training always runs with ``--resume`` (a requeue, ours or
    SLURM's, continues from ``last_checkpoint``): a first submission into an OUTPUT_DIR that already has a
    checkpoint needs ``--resume`` given."""
    executor = executor or build_executor(args)
    out = _output_dir(args)
    if not args.eval_only and not args.resume and os.path.isfile(os.path.join(out, "last_checkpoint")):
        raise UserError(f"OUTPUT_DIR {out}", "already has a checkpoint (last_checkpoint)",
                        fix="give --resume to continue that run, or another OUTPUT_DIR")
    job_args = argparse.Namespace(**vars(args))
    job_args.opts = [*args.opts, "OUTPUT_DIR", out]
    job_args.resume = args.resume or not args.eval_only
    job = SubmititTrainingJob(train_command.main, job_args, ["tools/submit.py", *argv],
                              os.path.abspath(args.shared_folder), gpus_per_node=args.gpus_per_node,
                              max_requeues=args.max_requeues, poll_s=min(poll_s, args.peer_timeout / 3),
                              dead_after_s=args.peer_timeout)
    return executor.submit(job), out


def task_logs(job, num_tasks: int):
    """(stdout, stderr) of each task of a submitted job."""
    from submitit.core.utils import JobPaths

    paths = [JobPaths(job.paths.folder, job.job_id, task) for task in range(num_tasks)]
    return [(str(p.stdout), str(p.stderr)) for p in paths]


def job_outcome(job, shared_folder: str, num_tasks: int) -> int:
    """After the job ended: 0 if it finished, else 1 with one line (the failed rank and its log)."""
    try:
        job.results()  # every task's; raises the first task's error
        return 0
    except Exception as e:  # submitit's FailedJobError / UncompletedJobError: find the rank that failed first
        failure = _first_failure_note(shared_folder, job.job_id)
        logs = task_logs(job, num_tasks)
        cause = failure or f"{type(e).__name__} (see {logs[0][1]})"
        print(f"error: job {job.job_id} failed: {cause}", file=sys.stderr, flush=True)
        return 1


def _first_failure_note(shared_folder: str, job_id: str):
    root = os.path.join(shared_folder, "submitit", "attempts")
    attempts = sorted((d for d in os.listdir(root) if d.split(".")[0] == str(job_id)) if os.path.isdir(root) else (),
                      key=lambda d: [int(p) for p in d.split(".")[1:] if p.isdigit()])
    for attempt in reversed(attempts):
        notes = sorted(f for f in os.listdir(os.path.join(root, attempt)) if f.endswith(".failed"))
        notes.sort(key=lambda f: int(f[len("rank"):-len(".failed")]))
        if notes:
            with open(os.path.join(root, attempt, notes[0])) as f:
                return f"rank {notes[0][len('rank'):-len('.failed')]}: {f.read().strip()}"
    return None


def _submit(args, argv) -> int:
    job, out = submit_training(args, argv)
    num_tasks = args.nodes * args.tasks_per_node
    logs = task_logs(job, num_tasks)
    print(f"Submitted job {job.job_id} ({type(job).__name__}): {args.nodes} node(s) x "
          f"{args.tasks_per_node} process(es), {args.gpus_per_node} GPU(s) per node", flush=True)
    print(f"submitit logs: {logs[0][0]} (rank 0; rank k: {os.path.basename(logs[0][0]).replace('_0_', '_k_')}) and "
          f"the same .err files", flush=True)
    print(f"Training log: {os.path.join(out, 'log.txt')}; checkpoints and metrics.json in {out}", flush=True)
    if not args.wait:
        return 0
    while not job.done():
        time.sleep(5)
    status = job_outcome(job, os.path.abspath(args.shared_folder), num_tasks)
    if status == 0:
        print(f"Job {job.job_id} finished: {out}", flush=True)
    return status


def cli_main(argv=None, prog=None) -> int:
    """Parse the command line, submit the job, print its id and logs; with --wait, its outcome."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = get_parser()
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    _check_arguments(parser, args, argv[:len(argv) - len(args.opts)])
    return run_cli(functools.partial(_submit, args, argv), argv)
