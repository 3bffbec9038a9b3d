"""Nothing lost to a second run or a closed terminal (docs/RELIABILITY.md, "One run per output
folder" and "Interrupts and preemption"): real train_net.py processes on a tiny synthetic dataset."""
import json
import os
import signal
import subprocess
import sys

import pytest
from test_interrupt import SYNTHETIC_CONFIG, TRAIN_NET, _opts, _Run, _stopped

from yolact_d2.engine import run_lock

from conftest import small_synthetic_coco

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
           PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 8, 2, seed=13)


def _train_net(args, timeout=300):
    proc = subprocess.run([sys.executable, TRAIN_NET, "--config-file", SYNTHETIC_CONFIG, *args], env=ENV,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_run_in_one_output_dir_is_refused_sighup_checkpoints_and_resume_takes_a_stale_lock(coco, tmp_path):
    out = tmp_path / "run"
    opts = _opts(coco, out, "lock")
    first = _Run([TRAIN_NET, "--config-file", SYNTHETIC_CONFIG, *opts])
    try:
        first.wait_for("Stop training with SIGINT/SIGTERM/SIGHUP/SIGUSR1")
        holder = json.loads((out / ".lock").read_text())
        assert holder["pid"] == first.proc.pid and "train_net.py" in holder["command"]

        # a second training (here of two processes) in the same folder: one line naming the first
        code, stdout, stderr = _train_net(["--num-gpus", "2", *opts, "MODEL.DEVICE", "cpu"])
        assert code == 1, stdout[-2000:] + stderr[-3000:]
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
        assert f"error: OUTPUT_DIR {out}: another run is using it: pid {first.proc.pid} on " in errors[0]
        assert "train_net.py" in errors[0] and "another OUTPUT_DIR" in errors[0]
        assert "Starting training" not in stdout + stderr
        assert json.loads((out / ".lock").read_text())["pid"] == first.proc.pid  # untouched

        # the terminal closes: SIGHUP finishes the iteration, checkpoints and exits 128 + 1
        first.proc.send_signal(signal.SIGHUP)
    finally:
        code, log = first.finish()
    assert code == 129, log[-4000:]
    n, path, resume = _stopped(log, "SIGHUP")
    assert os.path.isfile(path) and (out / "last_checkpoint").read_text() == os.path.basename(path)
    assert (out / ".lock").read_text() == ""  # released

    # a holder killed without releasing it (SIGKILL, a crashed machine): taken over with a message
    dead = {"pid": _dead_pid(), "host": "elsewhere", "command": "python train_net.py (killed)"}
    (out / ".lock").write_text(json.dumps(dead))
    code, stdout, stderr = _train_net(["--resume", *opts[:-4], "SOLVER.MAX_ITER", str(n + 2), *opts[-2:]])
    log = stdout + stderr
    assert code == 0, log[-4000:]
    assert f"Took over the lock {out / '.lock'} of pid {dead['pid']} on elsewhere" in log
    assert f"Starting training from iteration {n + 1}" in log
    assert (out / ".lock").read_text() == ""


LOCK_HOLDER = """
import sys, time
from yolact_d2.engine.run_lock import lock_output_dir
lock_output_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_is_per_process_and_names_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)], env=ENV, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(run_lock.OutputDirInUseError, match=f"pid {holder.pid} on "):
            run_lock.lock_output_dir(str(tmp_path))
        assert str(tmp_path.resolve()) not in run_lock._held
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: the kernel released its lock, the file still names it
    message = run_lock.lock_output_dir(str(tmp_path))
    try:
        assert message and f"of pid {holder.pid} on " in message and "ended without releasing it" in message
        assert run_lock.lock_output_dir(str(tmp_path)) is None  # again in the same process: a no-op
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    finally:
        run_lock.unlock_output_dir(str(tmp_path))
    assert (tmp_path / ".lock").read_text() == ""
    assert run_lock.lock_output_dir(str(tmp_path)) is None  # a clean release leaves nothing to take over
    run_lock.unlock_output_dir(str(tmp_path))


def test_num_vis_names_are_unique_for_images_that_share_a_stem(coco, tmp_path):
    from PIL import Image

    (val_json, val_root), (_, _) = coco  # the training split: more images
    data = json.load(open(val_json))
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    names = ["a.png", "a.jpg", "sub/a.jpg"]
    for image, name in zip(data["images"], names):
        Image.open(os.path.join(val_root, image["file_name"])).save(folder / name)
        image["file_name"] = name
    data["images"] = data["images"][:3]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in {i["id"] for i in data["images"]}]
    (tmp_path / "val.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    dataset = str([["stems", str(tmp_path / "val.json"), str(folder)]])
    code, stdout, stderr = _train_net(["--eval-only", "--num-vis", "3", "DATASETS.COCO_INSTANCES", dataset,
                                       "DATASETS.TEST", "('stems',)", "MODEL.WEIGHTS", "random",
                                       "INPUT.IMAGE_SIZE", "128", "OUTPUT_DIR", str(out)])
    assert code == 0, stdout[-2000:] + stderr[-3000:]
    written = sorted(os.listdir(out / "visualizations"))
    assert written == ["a_jpg.png", "a_jpg_2.png", "a_png.png"], written
    sizes = {Image.open(out / "visualizations" / n).size for n in written}
    assert len(sizes) == 1  # three side-by-side drawings of the 96x128 images
