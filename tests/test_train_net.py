"""train_net.py end to end on a small generated COCO dataset registered from the command line:
train + checkpoint + evaluate, resume, --eval-only reproducing the AP, and 2 CPU processes."""
import json
import os
import subprocess
import sys

import pytest

from conftest import small_synthetic_coco

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def coco_dirs(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 16, 6, seed=3)


def _run(coco_dirs, output_dir, *args, opts=()):
    (train_json, train_root), (val_json, val_root) = coco_dirs
    cmd = [
        sys.executable, os.path.join(ROOT, "train_net.py"),
        "--config-file", os.path.join(ROOT, "configs", "Synthetic", "yolact_R_18_FPN_synthetic.yaml"),
        *args,
        "DATASETS.COCO_INSTANCES", str([["t_train", train_json, train_root], ["t_val", val_json, val_root]]),
        "DATASETS.TRAIN", "('t_train',)", "DATASETS.TEST", "('t_val',)",
        "INPUT.IMAGE_SIZE", "128", "SOLVER.IMS_PER_BATCH", "4", "SOLVER.WARMUP_ITERS", "2",
        "SOLVER.CHECKPOINT_PERIOD", "3", "SOLVER.STEPS", "()", "OUTPUT_DIR", str(output_dir), *opts,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def _final_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if "segm/AP" in r][-1]


def _eval_results(log):
    """The 'copypaste' lines Detectron2 prints after COCO evaluation."""
    return [line.split("copypaste: ")[1] for line in log.splitlines() if "copypaste: " in line]


def test_train_checkpoint_resume_and_eval_only(coco_dirs, tmp_path):
    out = tmp_path / "run"
    log = _run(coco_dirs, out, "--num-vis", "2", opts=["SOLVER.MAX_ITER", "6"])
    assert "Starting training from iteration 0" in log
    for name in ("model_0000002.pth", "model_0000005.pth", "model_final.pth", "last_checkpoint", "metrics.json"):
        assert (out / name).exists(), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))  # tensorboard
    metrics = _final_metrics(out)
    for key in ("bbox/AP", "segm/AP", "segm/AP50"):
        assert 0 <= metrics[key] <= 100
    assert len(os.listdir(out / "visualizations")) == 2
    trained = _eval_results(log)
    assert [line for line in trained if line.startswith("Task")] == ["Task: bbox", "Task: segm"]
    assert len(trained) == 6  # per task: name, header, values
    # stdout ends with the time, the APs (those of metrics.json) and the paths of the outputs
    lines = log.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith("Time taken (setup, training, evaluation, ")]
    assert len(at) == 1
    last = lines[at[0]:at[0] + 5]
    assert last[1] == f"mask AP {metrics['segm/AP']:.1f}, box AP {metrics['bbox/AP']:.1f} on t_val"
    assert last[2].endswith(str(out / "visualizations"))
    assert last[3] == f"Training curves: {out / 'training_curves.png'}" and (out / "training_curves.png").is_file()
    assert last[4] == f"Metrics: {out / 'metrics.json'}"

    # resume: continues at iteration 6 from last_checkpoint and runs to the new MAX_ITER
    log = _run(coco_dirs, out, "--resume", opts=["SOLVER.MAX_ITER", "8"])
    assert "Starting training from iteration 6" in log
    resumed = _eval_results(log)

    # --eval-only with the final checkpoint reproduces exactly the AP printed after training
    log = _run(coco_dirs, tmp_path / "eval", "--eval-only", opts=["MODEL.WEIGHTS", str(out / "model_final.pth")])
    assert _eval_results(log) == resumed


def test_two_cpu_processes(coco_dirs, tmp_path):
    out = tmp_path / "ddp"
    log = _run(coco_dirs, out, "--num-gpus", "2", opts=["SOLVER.MAX_ITER", "3", "MODEL.DEVICE", "cpu"])
    assert "Starting training from iteration 0" in log
    assert (out / "model_final.pth").exists()
    assert 0 <= _final_metrics(out)["segm/AP"] <= 100


def test_num_classes_mismatch_is_a_clear_error(coco_dirs, tmp_path):
    with pytest.raises(AssertionError, match="has 6 classes .* MODEL.YOLACT.NUM_CLASSES is 3"):
        _run(coco_dirs, tmp_path / "bad", opts=["SOLVER.MAX_ITER", "1", "MODEL.YOLACT.NUM_CLASSES", "3"])
