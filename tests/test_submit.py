"""Cluster training through submitit (tools/submit.py, yolact_d2/runtime/submitit_job.py), without a
cluster: submitit's LocalExecutor runs the job's tasks as local processes with the environment a SLURM
task gets (rank, world size, job id), CPU and gloo.

submitit's ``LocalJob._interrupt()`` sends the requeue signal to its controller process, which does not
handle it and dies (submitit 1.5.4), leaving the tasks running. The tests send SIGUSR2 where the
controller sends it at the time limit, and where SLURM sends it: to every task of the job."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from yolact_d2.runtime.interrupt import TrainingInterrupted

from conftest import small_synthetic_coco

submitit = pytest.importorskip("submitit", reason="the cluster extra: pip install submitit")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
SUBMIT = os.path.join(ROOT, "tools", "submit.py")
SYNTHETIC_CONFIG = os.path.join(ROOT, "configs", "Synthetic", "yolact_R_18_FPN_synthetic.yaml")
READY = "Stop training with"  # logged once every rank has its stop handlers
TIMEOUT_S = 600  # generous: other tests share the 2 cores (pytest.ini's timeout, 900 s, bounds a test)


@pytest.fixture(autouse=True)
def _job_env(monkeypatch):
    """The job's processes inherit this environment: this checkout's yolact_d2 (and this folder, for the
    test mains below), one thread each."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, TESTS]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 8, 2, seed=11)


def _opts(coco, tag, max_iter):
    (train_json, train_root), (val_json, val_root) = coco
    return [
        "DATASETS.COCO_INSTANCES", str([[f"{tag}_train", train_json, train_root], [f"{tag}_val", val_json, val_root]]),
        "DATASETS.TRAIN", f"('{tag}_train',)", "DATASETS.TEST", f"('{tag}_val',)",
        # a long warm-up: the LR differs at every iteration, a restarted schedule would show
        "INPUT.IMAGE_SIZE", "128", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "100",
        "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "1000", "SOLVER.MAX_ITER", str(max_iter),
        "SEED", "5", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", "run",
        "SOLVER.REFERENCE_WORLD_SIZE", "0",  # MAX_ITER and the LR as given (not rescaled for 2 processes)
    ]


def _cluster_args(shared, *extra):
    return ["--shared-folder", str(shared), "--cluster", "local", "--gpus-per-node", "0", "--tasks-per-node", "2",
            "--time", "15", "--peer-timeout", "60", *extra]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _metrics_iterations(out):
    with open(os.path.join(out, "metrics.json")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r["iteration"] for r in records if "total_loss" in r]


def _adamw_steps(saved):
    return {float(s["step"]) for s in saved["trainer"]["_trainer"]["optimizer"]["state"].values()}


def _expected_lr(opts, steps):
    from detectron2.solver import build_lr_scheduler

    from yolact_d2.runtime.config_loading import setup_cfg

    cfg = setup_cfg(SYNTHETIC_CONFIG, opts, freeze=False)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


def _tasks(job):
    """The task processes of a local job (children of its controller)."""
    pid = job._process.pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _wait_for(path, text, job, timeout=TIMEOUT_S):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.isfile(path) and text in open(path).read():
            return
        assert not job.done(), f"the job ended before {text!r}:\n{job.stderr() or ''}"[-4000:]
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} in {path} within {timeout} s")


def _wait_done(job, timeout=TIMEOUT_S):
    deadline = time.time() + timeout
    while not job.done():
        if time.time() > deadline:
            job.cancel()
            raise AssertionError(f"job not done within {timeout} s:\n{(job.stderr() or '')[-4000:]}")
        time.sleep(0.5)


@pytest.mark.slow
def test_two_cpu_tasks_train_to_the_end_and_evaluate(coco, tmp_path):
    shared = tmp_path / "shared"
    max_iter = 4
    cmd = [sys.executable, SUBMIT, *_cluster_args(shared, "--wait"), "--config-file", SYNTHETIC_CONFIG,
           *_opts(coco, "sub", max_iter)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    out = shared / "run"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    job_id = lines[0].split()[2]
    assert lines[0] == f"Submitted job {job_id} (LocalJob): 1 node(s) x 2 process(es), 0 GPU(s) per node"
    log0 = shared / "submitit" / job_id / f"{job_id}_0_log.out"
    assert f"submitit logs: {log0}" in proc.stdout
    assert f"Training log: {out / 'log.txt'}" in proc.stdout
    assert lines[-1] == f"Job {job_id} finished: {out}"
    # two ranks (world size 2 in Detectron2's log), all iterations, then the evaluation of both tasks
    log = (out / "log.txt").read_text()
    assert "Rank of current process: 0. World size: 2" in log
    assert "Rank of current process: 1. World size: 2" in (out / "log.txt.rank1").read_text()
    assert _metrics_iterations(out)[-1] == max_iter - 1
    final = _load(out / "model_final.pth")
    assert final["iteration"] == max_iter - 1 and _adamw_steps(final) == {float(max_iter)}
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert "Evaluation results for segm" in log
    assert "mask AP" in log0.read_text()  # print_summary of rank 0
    results = (out / "inference" / "sub_val" / "coco_instances_results.json")
    assert results.is_file()


@pytest.mark.slow
def test_preempted_job_checkpoints_requeues_and_finishes_each_iteration_once(coco, tmp_path):
    from yolact_d2.cli import submit

    shared = tmp_path / "shared"
    max_iter = 40  # about 5 s of training on a quiet 2-core machine: the signal below lands mid-training
    opts = _opts(coco, "req", max_iter)
    argv = [*_cluster_args(shared), "--config-file", SYNTHETIC_CONFIG, *opts]
    args = submit.get_parser().parse_args(argv)
    args.tasks_per_node = 2
    job, out = submit.submit_training(args, argv, poll_s=2)
    out = str(out)
    _wait_for(os.path.join(out, "log.txt"), READY, job)
    time.sleep(0.5)  # into the first iterations (12 iterations took under 2 s on a quiet machine)
    for pid in _tasks(job):  # SLURM's --signal (and the local controller at the time limit) reach every task
        os.kill(pid, signal.SIGUSR2)
    _wait_done(job)
    rank0 = job.stdout() + job.stderr()
    result = job.results()[0]  # rank 0's
    assert "segm" in result and "AP" in result["segm"], result

    log = open(os.path.join(out, "log.txt")).read()
    first, second = log.split("Requeueing job", 1)
    assert "Received SIGUSR2: finishing iteration" in first
    stop = first[first.index("Training stopped by SIGUSR2 after iteration"):].split()
    n = int(stop[6].rstrip("."))
    assert n < max_iter - 1
    assert f"continues from iteration {n + 1} with --resume" in second
    assert f"Starting training from iteration {n + 1}" in second
    assert "Requeued job" in rank0  # submitit's local requeue (exit 144, the controller starts the tasks again)
    rank1 = open(os.path.join(out, "log.txt.rank1")).read()
    assert f"Rank 1: training stopped by SIGUSR2 after iteration {n}; rank 0 requeues the job." in rank1

    # the interrupt checkpoint: iteration n, its LR and AdamW's step count; last_checkpoint named it
    saved = _load(os.path.join(out, f"model_{n:07d}.pth"))
    assert saved["iteration"] == n and _adamw_steps(saved) == {float(n + 1)}
    assert saved["trainer"]["_trainer"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        _expected_lr(opts, n + 1), rel=1e-9)
    # the end: exactly max_iter optimizer steps, LR schedule not restarted, each iteration logged once
    final = _load(os.path.join(out, "model_final.pth"))
    assert final["iteration"] == max_iter - 1 and _adamw_steps(final) == {float(max_iter)}
    assert final["trainer"]["_trainer"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        _expected_lr(opts, max_iter), rel=1e-9)
    iterations = _metrics_iterations(out)
    assert iterations == sorted(set(iterations)), iterations  # nothing trained twice
    assert n in iterations and iterations[-1] == max_iter - 1
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_final.pth"


# ---------------------------------------------------------------------- failures (mains that misbehave)
def fails_on_rank_1(args):
    """Rank 1 raises; rank 0 is stuck (as in a collective NCCL never ends)."""
    from detectron2.utils import comm

    if comm.get_rank() == 1:
        raise RuntimeError("rank 1 fails on purpose")
    time.sleep(600)


def killed_on_rank_1(args):
    """Rank 1 dies without a word (the OOM killer) while rank 0 waits for it in collectives."""
    import torch.distributed as dist

    from detectron2.utils import comm

    if comm.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    for _ in range(600):
        dist.barrier()
        time.sleep(1)


def always_preempted(args):
    """Every run stops as the interrupt hook does after the requeue signal."""
    raise TrainingInterrupted(signal.SIGUSR2, 3, "model_0000003.pth", {signal.SIGUSR2})


def _submit_main(main, shared, tasks, max_requeues=5, dead_after_s=60.0):
    from yolact_d2.cli import submit
    from yolact_d2.runtime.submitit_job import SubmititTrainingJob

    argv = [*_cluster_args(shared, "--max-requeues", str(max_requeues)), "--config-file", SYNTHETIC_CONFIG]
    args = submit.get_parser().parse_args(argv)
    args.tasks_per_node = tasks
    executor = submit.build_executor(args)
    job = SubmititTrainingJob(main, args, ["tools/submit.py", *argv], str(shared), gpus_per_node=0,
                              max_requeues=max_requeues, poll_s=0.5, dead_after_s=dead_after_s)
    return executor.submit(job)


def _rank1_logs(job, folder):
    return (f"(host {os.uname().nodename}, log {folder}/submitit/{job.job_id}/{job.job_id}_1_log.out and "
            f"{folder}/submitit/{job.job_id}/{job.job_id}_1_log.err)")


def test_a_rank_that_raises_ends_a_stuck_survivor_naming_the_rank_and_its_log(tmp_path, capsys):
    from yolact_d2.cli.submit import job_outcome

    job = _submit_main(fails_on_rank_1, tmp_path, 2)
    start = time.time()
    _wait_done(job, timeout=240)
    assert time.time() - start < 200  # not the 30 minutes of the process group's timeout, nor rank 0's 600 s
    rank0 = open(job.paths.stderr).read()
    cause = f"rank 1 failed: RuntimeError: rank 1 fails on purpose {_rank1_logs(job, tmp_path)}"
    assert f"ERROR: Rank 0: ending this rank because {cause}" in rank0, rank0[-3000:]
    assert job_outcome(job, str(tmp_path), 2) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: job {job.job_id} failed: rank 1: RuntimeError: rank 1 fails on purpose {_rank1_logs(job, tmp_path)}"]


def test_a_killed_rank_is_named_not_the_survivor_that_lost_its_connection(tmp_path, capsys):
    from yolact_d2.cli.submit import job_outcome

    job = _submit_main(killed_on_rank_1, tmp_path, 2)
    start = time.time()
    _wait_done(job, timeout=240)
    assert time.time() - start < 200
    assert job_outcome(job, str(tmp_path), 2) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: job {job.job_id} failed: rank 1: died without an error (killed, out of memory): "
                             "its process "), err
    assert err[0].endswith(f" is gone {_rank1_logs(job, tmp_path)}"), err


def test_a_heartbeat_that_stops_on_another_machine_is_a_dead_rank(tmp_path):
    from yolact_d2.runtime.peer_watch import PeerWatch

    problems = []
    watch = PeerWatch(str(tmp_path), 0, 3, "rank0.log", poll_s=0.1, dead_after_s=1.0, on_peer_failure=problems.append)
    (tmp_path / "rank1.alive").write_text("7\nothernode\n123\nhost othernode, log rank1.log\n")
    (tmp_path / "rank2.alive").write_text("3\nothernode\n124\nhost othernode, log rank2.log\n")
    (tmp_path / "rank2.exited").write_text("")  # ended normally: its heartbeat stops, nobody minds
    watch.start()
    time.sleep(0.6)
    assert problems == [] and int((tmp_path / "rank0.alive").read_text().split()[0]) > 1  # beating
    (tmp_path / "rank1.alive").write_text("8\nothernode\n123\nhost othernode, log rank1.log\n")  # alive
    deadline = time.time() + 20
    while not problems and time.time() < deadline:
        time.sleep(0.1)
    assert len(problems) == 1, problems
    assert problems[0].startswith("rank 1 died without an error (killed, out of memory or its machine lost): no "
                                  "heartbeat for ")
    assert problems[0].endswith(" s (host othernode, log rank1.log)")
    seconds = float(problems[0].split("no heartbeat for ")[1].split(" s ")[0])
    assert 1.0 <= seconds < 10
    # its note, for --wait and the other ranks
    assert (tmp_path / "rank1.failed").read_text() == problems[0][len("rank 1 "):]
    assert watch.first_failure() == "rank 1 failed: " + problems[0][len("rank 1 "):]


def test_requeues_stop_at_the_limit_with_a_message(tmp_path):
    job = _submit_main(always_preempted, tmp_path, 1, max_requeues=1)
    _wait_done(job, timeout=240)
    with pytest.raises(Exception) as error:
        job.results()
    text = str(error.value)
    assert "RequeueLimitError" in text
    assert "the job was requeued 1 times, --max-requeues 1: not requeued again. Continue with: " in text
    assert "tools/submit.py --resume --shared-folder" in text
    assert job.stdout().count(f"Requeued job {job.job_id}") == 1, job.stdout()[-3000:]  # once, then the limit


def test_without_submitit_submission_is_one_line_naming_the_extra(monkeypatch, capsys, tmp_path):
    from yolact_d2.cli import submit

    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    status = submit.cli_main(["--shared-folder", str(tmp_path), "--config-file", SYNTHETIC_CONFIG])
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: tools/submit.py: submitit is not installed (pip install "yolact_d2[cluster]" (or: pip '
                   'install "submitit>=1.5"))'], err


def test_train_net_launch_flags_are_usage_errors(capsys, tmp_path):
    from yolact_d2.cli import submit

    with pytest.raises(SystemExit) as e:
        submit.cli_main(["--shared-folder", str(tmp_path), "--num-gpus", "2", "--config-file", SYNTHETIC_CONFIG])
    assert e.value.code == 2
    assert "--num-gpus is train_net.py's launch flag; with tools/submit.py give --nodes" in capsys.readouterr().err


def test_what_each_stop_signal_does_after_the_checkpoint():
    """SIGUSR2 (alone, or after SIGTERM as in a preemption) hands over to submitit's requeue on rank 0 and
    exits 0 on the others; SIGTERM alone exits 143 with the command that continues the run."""
    from types import SimpleNamespace

    from yolact_d2.runtime.submitit_job import SubmititTrainingJob

    argv = ["tools/submit.py", "--shared-folder", "s", "--resume", "A", "1"]
    job = SubmititTrainingJob(None, SimpleNamespace(), argv, "s", gpus_per_node=0, max_requeues=2)
    usr2, term = signal.SIGUSR2, signal.SIGTERM
    calls = []

    def submitit_handler(signum, frame):  # submitit's: checkpoint(), requeue, exit
        calls.append(signum)
        raise SystemExit(144)

    def after(signum, received, rank=0):
        stop = TrainingInterrupted(signum, 6, "out/model_0000006.pth", received)
        with pytest.raises(SystemExit) as e:
            job._after_stop(stop, SimpleNamespace(global_rank=rank, job_id="7"), usr2, submitit_handler)
        return e.value.code

    assert after(term, {term, usr2}) == 144 and calls == [usr2]
    assert after(usr2, {usr2}) == 144 and len(calls) == 2
    assert after(usr2, {usr2}, rank=1) == 0 and len(calls) == 2
    assert after(term, {term}, rank=1) == 143
    assert after(term, {term}) == 143 and len(calls) == 2
    assert job._continue_command().endswith("tools/submit.py --resume --shared-folder s A 1")
    # the requeued job: --resume, one requeue more; past the limit no requeue
    job.args.resume = False
    again = job.checkpoint().function
    assert (again.requeues, again.args.resume, job.args.resume) == (1, True, False)
    job.requeues = 2
    assert job.checkpoint() is None
    with pytest.raises(Exception, match="requeued 2 times, --max-requeues 2: not requeued again"):
        job._after_stop(TrainingInterrupted(usr2, 6, "c", {usr2}), SimpleNamespace(global_rank=0, job_id="7"), usr2,
                        submitit_handler)
