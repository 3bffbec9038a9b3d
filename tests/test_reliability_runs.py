"""Nothing lost to a second run or a closed terminal (docs/RELIABILITY.md, "One run per output
folder" and "Interrupts and preemption"): real train_net.py processes on a tiny synthetic dataset."""
import json
import os
import signal
import subprocess
import sys

import pytest
from test_interrupt import SYNTHETIC_CONFIG, TRAIN_NET, _opts, _Run, _stopped

from yolact_d2.runtime import run_lock

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
from yolact_d2.runtime.run_lock import lock_output_dir
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


# ------------------------------------------------------------------------------------------------
# The web demo: bounded temporary files, removed on exit; a huge upload is "too large"
# ------------------------------------------------------------------------------------------------
def _png_header_only(path, width, height):
    """A PNG whose header says ``width`` x ``height`` (no pixel data: Pillow refuses it on open)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return str(path)


def test_web_demo_redraws_reuse_two_files_and_a_huge_upload_is_too_large(tmp_path):
    import cv2
    import numpy as np
    from test_web_app import FakePredictor, _app_module, _metadata

    app = _app_module().DemoApp(FakePredictor(), _metadata(), str(tmp_path / "work"))
    cv2.imwrite(str(tmp_path / "in.png"), np.full((60, 80, 3), 90, np.uint8))
    state, _ = app.analyse(str(tmp_path / "in.png"), "in.png")
    for k in range(6):  # slider moves
        _, rows, files, _ = app.redraw(state, 0.1 * k, [0, 1, 2], 0.5)
        assert len(json.load(open(files[1]))) == len(rows)
    written = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "work") for f in fs]
    assert sorted(os.path.basename(p) for p in written) == ["in_detections.json", "in_overlay.png"]
    state, _ = app.analyse(str(tmp_path / "in.png"), "other.png")  # another image replaces the pair
    app.redraw(state, 0.2, [0, 1, 2], 0.5)
    assert sorted(os.listdir(tmp_path / "work" / "downloads")) == ["other_detections.json", "other_overlay.png"]

    huge = _png_header_only(tmp_path / "huge.png", 30000, 30000)
    state, status = app.analyse(huge, "huge.png")
    assert state is None
    assert status.startswith("**Error:** 'huge.png': is too large (Image size (900000000 pixels) exceeds limit")
    assert "this demo accepts at most 40 megapixels (downscale it first)" in status


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_web_demo_removes_its_temporary_folder_when_stopped(tmp_path, stop):
    import importlib.util
    import socket
    import time
    import urllib.request

    from conftest import tiny_cfg

    if importlib.util.find_spec("gradio") is None:
        pytest.skip("gradio is not installed (pip install -e '.[app]')")
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(tiny_cfg(num_classes=6, opts=["DATASETS.TEST", ("yolact_synthetic_val",)]).dump())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tmp_path / "tmp"
    temp.mkdir()
    app = os.path.join(os.path.dirname(TRAIN_NET), "demo", "app.py")
    log = open(tmp_path / "app.log", "w+")
    proc = subprocess.Popen([sys.executable, app, "--config-file", str(cfg_file), "--port", str(port),
                             "--opts", "MODEL.WEIGHTS", "random"],  # untrained on purpose
                            env=dict(ENV, TMPDIR=str(temp)), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while f"running at http://127.0.0.1:{port}" not in (tmp_path / "app.log").read_text():
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "app.log").read_text()[-3000:]
            time.sleep(0.5)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read()
        folders = [f for f in os.listdir(temp) if f.startswith("yolact_app_")]
        assert len(folders) == 1 and os.listdir(temp / folders[0])  # the examples, at least
        proc.send_signal(stop)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "app.log").read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text and "temporary files are removed" in text
    assert os.listdir(temp) == [], os.listdir(temp)


def test_web_demo_max_pixels_must_be_positive(capsys):
    from test_web_app import _app_module

    with pytest.raises(SystemExit) as exit_:
        _app_module().main(["--config-file", SYNTHETIC_CONFIG, "--max-pixels", "0"])
    assert exit_.value.code == 2 and "--max-pixels must be >= 1, got 0" in capsys.readouterr().err


def test_benchmark_int8_work_files_follow_the_weights_content_and_the_config(tmp_path):
    import importlib.util

    from yolact_d2.runtime.config_loading import setup_cfg

    path = os.path.join(os.path.dirname(TRAIN_NET), "tools", "benchmark_int8.py")
    spec = importlib.util.spec_from_file_location("tool_benchmark_int8", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = tool.parse_args(["--config-file", SYNTHETIC_CONFIG, "--work-dir", str(tmp_path)])
    cfg = setup_cfg(SYNTHETIC_CONFIG, [])
    first, same, other = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "c.pth"
    first.write_bytes(b"weights one")
    same.write_bytes(b"weights one")
    other.write_bytes(b"weights two")
    files = tool.work_files(args, cfg, str(first))
    assert all(f.startswith(str(tmp_path)) for f in files) and files[0].endswith(".float32.onnx")
    assert tool.work_files(args, cfg, str(same)) == files  # the bytes count, not the name
    assert tool.work_files(args, cfg, str(other)) != files  # retrained weights: exported again
    first.write_bytes(b"weights one, changed in place")
    assert tool.work_files(args, cfg, str(first)) != files
    bigger = setup_cfg(SYNTHETIC_CONFIG, ["INPUT.IMAGE_SIZE", "256"])
    assert tool.work_files(args, bigger, str(same)) != files  # another input size: another graph
