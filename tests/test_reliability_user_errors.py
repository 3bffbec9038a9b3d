"""Known user errors end in one line naming the file, key or flag and the cause, and nothing waits
forever (docs/RELIABILITY.md, "Hangs and raw tracebacks"): through the real entry points
(train_net.py, tools/*.py) where the error is theirs, plus unit tests of the checks."""
import errno
import json
import os
import subprocess
import sys

import pytest

from conftest import small_synthetic_coco

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "train_net.py")
SYNTHETIC_CONFIG = os.path.join(ROOT, "configs", "Synthetic", "yolact_R_18_FPN_synthetic.yaml")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=ROOT)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return small_synthetic_coco(tmp_path_factory, 2, 2, seed=17)


def _run(args, timeout=300, env=ENV):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def _one_error_line(code, stdout, stderr, status=1):
    assert code == status, stdout[-2000:] + stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def _dataset_opts(coco, name):
    (_, _), (val_json, val_root) = coco
    return ["DATASETS.COCO_INSTANCES", str([[name, val_json, val_root]]), "DATASETS.TRAIN", f"('{name}',)",
            "DATASETS.TEST", f"('{name}',)", "INPUT.IMAGE_SIZE", "128"]


# A train_net.py whose torch.save fails as on a full disk (torch wraps the ENOSPC of the write).
FULL_DISK = '''
import errno, runpy, sys
sys.path.insert(0, {root!r})
import torch
def save(obj, f, *args, **kwargs):
    f.write(b"x" * 100)
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
torch.save = save
sys.argv[0] = {train_net!r}
runpy.run_path({train_net!r}, run_name="__main__")
'''


def test_full_disk_while_writing_evaluation_results_is_one_line(coco, tmp_path):
    wrapper = tmp_path / "full_disk_train_net.py"
    wrapper.write_text(FULL_DISK.format(root=ROOT, train_net=TRAIN_NET))
    out = tmp_path / "out"
    line = _one_error_line(*_run([str(wrapper), "--config-file", SYNTHETIC_CONFIG, "--eval-only",
                                  *_dataset_opts(coco, "full_disk"), "MODEL.WEIGHTS", "random",
                                  "OUTPUT_DIR", str(out)]))
    target = out / "inference" / "full_disk" / "instances_predictions.pth"
    # torch's "enforce fail" has the ENOSPC of the write as its context
    assert line.startswith(f"error: cannot write evaluation results {target}: No space left on device (ENOSPC); ")
    assert " free on " in line and "free some space" in line
    assert os.listdir(target.parent) == []  # no partial file, no staging folder left


def test_full_disk_error_names_the_json_and_the_errno(tmp_path, monkeypatch):
    import detectron2.evaluation.coco_evaluation as d2_coco_eval

    from yolact_d2.evaluation.atomic import ResultsWriteError, _write_error

    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "instances_predictions.pth").write_bytes(b"complete")
    (staging / "coco_instances_results.json").write_bytes(b"[{")
    error = _write_error(str(tmp_path), str(staging), OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(error, ResultsWriteError)
    assert str(error).startswith(f"cannot write evaluation results {tmp_path / 'coco_instances_results.json'}: "
                                 "No space left on device (ENOSPC); ")
    assert d2_coco_eval  # the module whose writes these are
