"""Training curves from metrics.json (yolact_d2/engine/plot_metrics.py, tools/plot_metrics.py)."""
import json
import os
import subprocess
import sys

import pytest

from yolact_d2.engine.plot_metrics import load_metrics, plot_training_curves, training_series
from yolact_d2.utils.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RECORDS = [
    {"iteration": 19, "total_loss": 9.0, "loss_cls": 4.0, "loss_mask": 5.0, "lr": 0.0002, "time": 0.5},
    {"iteration": 39, "total_loss": 6.0, "loss_cls": 2.5, "loss_mask": 3.5, "lr": 0.0004, "data_time": 0.01},
    {"iteration": 39, "bbox/AP": 12.5, "segm/AP": 11.0},  # an evaluation line: no losses, ignored
    {"iteration": 59, "total_loss": 4.0, "loss_cls": 1.5, "loss_mask": 2.5, "lr": 0.001},
]


def _write(tmp_path, lines):
    (tmp_path / "metrics.json").write_text("".join(line + "\n" for line in lines))
    return str(tmp_path)


def test_series_and_png(tmp_path):
    out_dir = _write(tmp_path, [json.dumps(r) for r in RECORDS])
    path, series = plot_training_curves(out_dir)
    assert path == os.path.join(out_dir, "training_curves.png")
    assert sorted(series) == ["loss_cls", "loss_mask", "lr", "total_loss"]  # no time, AP or data_time
    assert series["total_loss"] == ([19, 39, 59], [9.0, 6.0, 4.0])
    assert series["lr"] == ([19, 39, 59], [0.0002, 0.0004, 0.001])
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert (width, height) == (800, 700)  # figsize (8, 7) at 100 dpi
    assert os.path.getsize(path) > 10_000  # not an empty canvas


def test_resumed_run_keeps_the_last_value_of_an_iteration(tmp_path):
    records = RECORDS + [{"iteration": 39, "total_loss": 5.5, "loss_cls": 2.0, "loss_mask": 3.5, "lr": 0.0004}]
    series = training_series(records)
    assert series["total_loss"] == ([19, 39, 59], [9.0, 5.5, 4.0])


def test_missing_and_corrupt_metrics_name_the_file(tmp_path):
    with pytest.raises(DataError, match="metrics.json: no such file"):
        plot_training_curves(str(tmp_path))
    _write(tmp_path, [json.dumps(RECORDS[0]), '{"iteration": 39, "total_loss": '])
    with pytest.raises(DataError, match=r"metrics.json, line 2: not JSON"):
        load_metrics(str(tmp_path / "metrics.json"))
    _write(tmp_path, ["[1, 2]"])
    with pytest.raises(DataError, match="line 1: not a JSON object"):
        load_metrics(str(tmp_path / "metrics.json"))
    _write(tmp_path, [json.dumps({"iteration": 9, "segm/AP": 3.0})])
    with pytest.raises(DataError, match="no loss values"):
        plot_training_curves(str(tmp_path))


def test_cli_writes_png_and_reports_a_missing_file_in_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    script = os.path.join(REPO, "tools", "plot_metrics.py")
    out_dir = _write(tmp_path, [json.dumps(r) for r in RECORDS])
    ok = subprocess.run([sys.executable, script, out_dir], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "training_curves.png" in ok.stdout and "up to iteration 59" in ok.stdout
    assert os.path.isfile(os.path.join(out_dir, "training_curves.png"))
    bad = subprocess.run([sys.executable, script, str(tmp_path / "nope")], capture_output=True, text=True, env=env)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "metrics.json: no such file" in lines[0]
