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

    from yolact_d2.runtime.results_files import ResultsWriteError, _write_error

    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "instances_predictions.pth").write_bytes(b"complete")
    (staging / "coco_instances_results.json").write_bytes(b"[{")
    error = _write_error(str(tmp_path), str(staging), OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(error, ResultsWriteError)
    assert str(error).startswith(f"cannot write evaluation results {tmp_path / 'coco_instances_results.json'}: "
                                 "No space left on device (ENOSPC); ")
    assert d2_coco_eval  # the module whose writes these are


# ------------------------------------------------------------------------------------------------
# tools/export_model.py: flags refused before the work
# ------------------------------------------------------------------------------------------------
EXPORT = os.path.join(ROOT, "tools", "export_model.py")
PLUS_CONFIG = os.path.join(ROOT, "configs", "COCO-InstanceSegmentation", "yolact_plus_R_50_FPN_550.yaml")


@pytest.mark.parametrize("case", ["opset_7", "keep_aspect_fixed_size", "plus_opset_17", "plus_opset_18"])
def test_export_flags_that_cannot_work_are_refused_before_the_export(tmp_path, case):
    from torch.onnx._constants import ONNX_MAX_OPSET

    out = tmp_path / "model.onnx"
    args = {
        "opset_7": ["--format", "onnx", "--opset", "7"],
        "keep_aspect_fixed_size": ["--format", "onnx", "INPUT.TEST_RESIZE_MODE", "keep_aspect"],
        "plus_opset_17": ["--format", "onnx", "--opset", "17"],
        "plus_opset_18": ["--format", "onnx", "--opset", "18"],
    }[case]
    config = PLUS_CONFIG if case.startswith("plus") else SYNTHETIC_CONFIG
    flags = [a for a in args if a.startswith("--")]
    opts = [a for a in args[len(flags) * 2:]]
    line = _one_error_line(*_run([EXPORT, *args[:len(flags) * 2], "--config-file", config, "--output", str(out),
                                  *opts, "MODEL.DEVICE", "cpu"]))
    expected = {
        "opset_7": f"error: --opset 7: this torch's ONNX exporter writes opsets 18 to {ONNX_MAX_OPSET} "
                   "(use --opset 19, the default)",
        "keep_aspect_fixed_size": "error: INPUT.TEST_RESIZE_MODE 'keep_aspect': a fixed-size onnx export takes "
                                  "192x192 squashed images only, so its predictor would refuse it (add --dynamic, "
                                  "or export with INPUT.TEST_RESIZE_MODE squash)",
        "plus_opset_17": f"error: --opset 17: this torch's ONNX exporter writes opsets 18 to {ONNX_MAX_OPSET} "
                         "(use --opset 19, the default)",
        "plus_opset_18": "error: --opset 18: this model has deformable convolutions (YOLACT++), whose ONNX "
                         "DeformConv needs opset >= 19 (use --opset 19)",
    }[case]
    assert line.startswith(expected), line
    assert not out.exists() and not os.listdir(tmp_path)


# ------------------------------------------------------------------------------------------------
# Files that hang or confuse: a FIFO, a symbolic-link loop, an EXIF rotation the json does not know,
# a json nested 200,000 levels deep
# ------------------------------------------------------------------------------------------------
def _broken_val_set(coco, tmp_path, case):
    """A copy of the val set whose first image (or json) is broken as ``case`` says."""
    import shutil

    from PIL import Image

    (_, _), (val_json, val_root) = coco
    data = json.load(open(val_json))
    images = tmp_path / "images"
    shutil.copytree(val_root, images)
    first = images / data["images"][0]["file_name"]
    json_file = tmp_path / "val.json"
    if case == "fifo":
        first.unlink()
        os.mkfifo(first)
    elif case == "link_loop":
        first.unlink()
        os.symlink(first.name + ".b", first)
        os.symlink(first.name, str(first) + ".b")
    elif case == "exif_rotated":
        image = Image.open(first)
        exif = Image.Exif()
        exif[0x0112] = 6  # rotated 90 degrees when read: the json has the size before the rotation
        first.unlink()
        image.save(first.with_suffix(".jpg"), exif=exif)
        data["images"][0]["file_name"] = first.with_suffix(".jpg").name
    if case == "deep_json":
        json_file.write_text("[" * 200_000 + "]" * 200_000)
    else:
        json_file.write_text(json.dumps(data))
    return str(json_file), str(images), str(first if case != "exif_rotated" else first.with_suffix(".jpg"))


@pytest.mark.parametrize("case", ["fifo", "link_loop", "exif_rotated", "deep_json"])
def test_broken_files_of_a_dataset_are_one_line_naming_them(coco, tmp_path, case):
    json_file, images, first = _broken_val_set(coco, tmp_path, case)
    opts = ["DATASETS.COCO_INSTANCES", str([["broken", json_file, images]]), "DATASETS.TEST", "('broken',)",
            "INPUT.IMAGE_SIZE", "128", "MODEL.WEIGHTS", "random", "OUTPUT_DIR", str(tmp_path / "out")]
    line = _one_error_line(*_run([TRAIN_NET, "--config-file", SYNTHETIC_CONFIG, "--eval-only", *opts],
                                 timeout=240))
    expected = {
        "fifo": f"error: Cannot read image {first}: it is a FIFO (named pipe), not a regular file: reading it would "
                "wait for a writer forever",
        "link_loop": f"error: Cannot read image {first}: it is a symbolic link loop (ELOOP",
        "exif_rotated": f"error: Image {first} (image_id ",
        "deep_json": f"error: {json_file}: is nested too deeply for Python's json reader",
    }[case]
    assert line.startswith(expected), line
    if case == "exif_rotated":
        assert "The file has EXIF orientation 6 (a 90-degree rotation)" in line


# ------------------------------------------------------------------------------------------------
# tools/evaluate.py: --json into a missing folder keeps the results; bad numbers are usage errors
# ------------------------------------------------------------------------------------------------
EVALUATE = os.path.join(ROOT, "tools", "evaluate.py")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    import torch

    from yolact_d2 import YolactTrainer
    from yolact_d2.runtime.config_loading import setup_cfg

    cfg = setup_cfg(SYNTHETIC_CONFIG, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save({"model": YolactTrainer.build_model(cfg).state_dict()}, str(path))
    return str(path)


def test_evaluate_json_into_a_missing_folder_is_written(coco, tmp_path, tiny_weights):
    out = tmp_path / "not" / "yet" / "results.json"
    code, stdout, stderr = _run([EVALUATE, "--config-file", SYNTHETIC_CONFIG, "--weights", tiny_weights,
                                 "--json", str(out), "--max-images", "1", *_dataset_opts(coco, "eval_json")])
    assert code == 0, stdout[-2000:] + stderr[-3000:]
    results = json.load(open(out))
    assert set(results["torch"]) >= {"bbox", "segm"} and "AP" in results["torch"]["segm"]
    assert "mask AP" in stdout  # the table was printed too
    assert "COCO evaluation of 'eval_json' against " in stdout and "none dropped at load" in stdout


def _tool_module(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tool_{name[:-3]}", os.path.join(ROOT, "tools", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluate_json_that_is_a_folder_is_refused_before_the_work(tmp_path, capsys):
    from yolact_d2.runtime.reporting import run_cli

    evaluate = _tool_module("evaluate.py")
    assert run_cli(lambda: evaluate.main(["--config-file", "missing.yaml", "--json", str(tmp_path)])) == 1
    assert capsys.readouterr().err.strip() == f"error: --json {tmp_path}: is a folder (give a file name)"


@pytest.mark.parametrize("tool, flags, message", [
    ("evaluate.py", ["--max-images", "-1"], "argument --max-images: must be an integer >= 1, got -1"),
    ("evaluate.py", ["--max-images", "0"], "argument --max-images: must be an integer >= 1, got 0"),
    ("evaluate.py", ["--threads", "0"], "argument --threads: must be an integer >= 1, got 0"),
    ("evaluate.py", ["--agreement-score", "nan"], "argument --agreement-score: must be a number in [0, 1], got 'nan'"),
    ("benchmark.py", ["--synthetic", "0"], "argument --synthetic: must be an integer >= 1, got 0"),
    ("benchmark.py", ["--repeat", "0"], "argument --repeat: must be an integer >= 1, got 0"),
    ("benchmark.py", ["--warmup", "-1"], "argument --warmup: must be an integer >= 0, got -1"),
    ("benchmark_int8.py", ["--synthetic", "0"], "argument --synthetic: must be an integer >= 1, got 0"),
    ("benchmark_int8.py", ["--calibration-images", "0"], "argument --calibration-images: must be an integer >= 1"),
    ("export_model.py", ["--format", "onnx", "--output", "x.onnx", "--calibration-images", "-5"],
     "argument --calibration-images: must be an integer >= 1, got -5"),
])
def test_numeric_flags_of_the_tools_are_range_checked(tool, flags, message, capsys):
    module = _tool_module(tool)
    with pytest.raises(SystemExit) as exit_:
        module.main(["--config-file", SYNTHETIC_CONFIG, *flags])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_benchmark_synthetic_0_through_the_command_line():
    code, stdout, stderr = _run([os.path.join(ROOT, "tools", "benchmark.py"), "--config-file", SYNTHETIC_CONFIG,
                                 "--synthetic", "0"])
    assert code == 2 and "Traceback" not in stderr, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last == "benchmark.py: error: argument --synthetic: must be an integer >= 1, got 0"


def test_num_vis_must_not_be_negative(capsys):
    from yolact_d2.cli.train import get_parser

    with pytest.raises(SystemExit):
        get_parser().parse_args(["--num-vis", "-1"])
    assert "argument --num-vis: must be an integer >= 0, got -1" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Converters never replace their input, nor an existing output without --force
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tool", ["convert_torchvision_backbone.py", "convert_yolact_weights.py"])
def test_converters_never_overwrite_their_input(tool, tmp_path):
    import torch
    import torchvision

    src = tmp_path / "in.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), src)
    original = src.read_bytes()
    line = _one_error_line(*_run([os.path.join(ROOT, "tools", tool), str(src), str(src), "--force"], timeout=120))
    assert line == (f"error: {src}: the output {src} is this input file: converting would replace the original "
                    "checkpoint (give another output path)"), line
    assert src.read_bytes() == original


def test_converter_output_rules(tmp_path, capsys):
    import torch
    import torchvision

    convert = _tool_module("convert_torchvision_backbone.py").main
    src = tmp_path / "in.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), src)
    original = src.read_bytes()
    os.symlink(src.name, tmp_path / "link.pth")
    os.link(src, tmp_path / "hard.pth")
    for output in (tmp_path / "link.pth", tmp_path / "." / "in.pth", tmp_path / "hard.pth"):
        assert convert([str(src), str(output), "--force"]) == 1
        assert capsys.readouterr().err.strip() == (
            f"error: {src}: the output {output} is this input file: converting would replace the original "
            "checkpoint (give another output path)")
    assert src.read_bytes() == original
    out = tmp_path / "out.pth"
    out.write_bytes(b"precious")
    assert convert([str(src), str(out)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {src}: the output {out} exists (pass --force to replace it, or give another output path)")
    assert out.read_bytes() == b"precious"
    assert convert([str(src), str(tmp_path)]) == 1
    assert f"the output {tmp_path} is a folder" in capsys.readouterr().err
    assert convert([str(src), str(out), "--force"]) == 0
    assert torch.load(out, weights_only=True)["model"]  # replaced by the converted checkpoint


def test_busy_dist_url_port_is_a_usage_error_naming_it():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        url = f"tcp://127.0.0.1:{port}"
        code, stdout, stderr = _run([TRAIN_NET, "--config-file", SYNTHETIC_CONFIG, "--num-gpus", "2",
                                     "--dist-url", url, "MODEL.DEVICE", "cpu"], timeout=120)
    assert code == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        f"train_net.py: error: --dist-url {url}: port {port} is already in use on 127.0.0.1 (another training, or "
        "any other program); choose another port, or --dist-url auto on one machine")
    from yolact_d2.runtime.launch import _busy_port

    assert _busy_port(url) == ""  # free again
    assert _busy_port("tcp://10.255.255.1:23456") == ""  # another machine's address: torch's to report


def test_export_keeps_an_existing_output_unless_forced(tmp_path):
    """A repeated export command does not silently replace the earlier model (nor, with --int8, the
    float32 twin it keeps next to it); --force replaces it."""
    out = tmp_path / "model.pt"
    out.write_bytes(b"an earlier export")
    base = [EXPORT, "--format", "torchscript", "--config-file", SYNTHETIC_CONFIG, "--weights", "random",
            "--output", str(out), "MODEL.DEVICE", "cpu"]
    line = _one_error_line(*_run(base))
    assert line == f"error: --output {out}: exists (pass --force to replace it, or give another path)"
    assert out.read_bytes() == b"an earlier export"

    onnx = tmp_path / "model.onnx"
    twin = tmp_path / "model.float32.onnx"
    twin.write_bytes(b"an earlier float32 model")
    line = _one_error_line(*_run([EXPORT, "--format", "onnx", "--int8", "--calibration-dataset",
                                  "yolact_synthetic_train", "--config-file", SYNTHETIC_CONFIG, "--weights", "random",
                                  "--output", str(onnx), "MODEL.DEVICE", "cpu"]))
    assert line == f"error: --output {twin}: exists (pass --force to replace it, or give another path)"
    assert twin.read_bytes() == b"an earlier float32 model" and not onnx.exists()

    returncode, stdout, stderr = _run([*base[:-2], "--force", *base[-2:]])
    assert returncode == 0, stderr
    assert out.read_bytes()[:2] == b"PK"  # a TorchScript archive (zip) replaced the earlier bytes
