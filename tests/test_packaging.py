"""What the package declares (pyproject.toml) and how its commands dispatch, without building a wheel
(tests/test_wheel.py installs one): the console commands name existing functions, every shipped config
is package data, nothing imported needs pkg_resources, and ``python -m yolact_d2`` / ``yolact-convert``
dispatch their subcommands."""
import contextlib
import fnmatch
import importlib
import io
import os
import shlex
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


@pytest.fixture(scope="module")
def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_console_commands_name_existing_functions(pyproject):
    scripts = pyproject["project"]["scripts"]
    assert set(scripts) == {"yolact-train", "yolact-demo", "yolact-export", "yolact-convert", "yolact-evaluate",
                            "yolact-app", "yolact-submit"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_extras_say_what_they_are_for(pyproject):
    extras = pyproject["project"]["optional-dependencies"]
    assert extras["export"] == ["onnx", "onnxscript", "onnxruntime"]
    assert [r for r in extras["app"] if r.startswith("gradio")]
    assert [r for r in extras["cluster"] if r.startswith("submitit")]
    assert "yolact_d2[export,app,cluster]" in extras["dev"]  # the tests exercise all three
    assert not any(r.startswith(("onnx", "gradio")) for r in extras["dev"])
    assert not any(r.startswith("setuptools") for r in pyproject["project"]["dependencies"])  # no <81 pin


def test_every_shipped_config_is_package_data(pyproject):
    patterns = pyproject["tool"]["setuptools"]["package-data"]["yolact_d2"]
    package = os.path.join(ROOT, "yolact_d2")
    configs = os.path.join(package, "model_zoo", "configs")
    files = [os.path.relpath(os.path.join(d, f), package) for d, _, fs in os.walk(configs) for f in fs
             if "__pycache__" not in d]
    assert any(f.endswith(".yaml") for f in files)
    # fnmatch's "*" crosses "/", so each pattern is checked with the "**/" levels it can match
    def matched(path):
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.replace("**/", "")) for p in patterns)
    assert [f for f in files if not matched(f)] == []


def test_nothing_imported_needs_pkg_resources():
    """setuptools >= 82 has no pkg_resources (Detectron2's model_zoo imports it): every module of the
    package imports in a fresh interpreter where importing pkg_resources fails."""
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "pkg_resources":
                    raise ImportError("pkg_resources is blocked by the test")
        sys.meta_path.insert(0, Block())
        import yolact_d2
        names = [m.name for m in pkgutil.walk_packages(yolact_d2.__path__, "yolact_d2.")]
        for name in names:
            importlib.import_module(name)
        assert "pkg_resources" not in sys.modules and "detectron2.model_zoo" not in sys.modules
        print(len(names), "modules")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-2]) > 50  # the walk found the package's modules


def _call(function, *args, **kwargs):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = function(*args, **kwargs)
        except SystemExit as e:  # argparse's --help and usage errors
            code = e.code
    return code, out.getvalue(), err.getvalue()


def test_python_m_yolact_d2_dispatches_the_commands():
    from yolact_d2.__main__ import COMMANDS, main

    code, out, _ = _call(main, ["--help"])
    assert code == 0 and all(f"  {name}" in out for name in COMMANDS)
    code, _, err = _call(main, ["trian"])
    assert code == 2 and "error: unknown command 'trian'; choose one of train, demo" in err
    for name in COMMANDS:
        code, out, _ = _call(main, [name, "--help"])
        assert code == 0 and f"python -m yolact_d2 {name}" in out, name


def test_yolact_convert_dispatches_the_two_converters(tmp_path):
    from yolact_d2.cli.convert import cli_main

    code, out, _ = _call(cli_main, ["backbone", "--help"])
    assert code == 0 and out.startswith("usage: yolact-convert backbone") and "torchvision" in out
    code, out, _ = _call(cli_main, ["yolact", "--help"])
    assert code == 0 and out.startswith("usage: yolact-convert yolact") and "--unsafe-load" in out
    code, _, err = _call(cli_main, [])
    assert code == 2 and "no converter named; choose one of yolact, backbone" in err
    # a known error is one line and status 1, as from the repository's script
    code, _, err = _call(cli_main, ["yolact", str(tmp_path / "missing.pth"), str(tmp_path / "out.pth")])
    assert code == 1 and err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'missing.pth'}")


def test_resume_command_of_python_m_yolact_d2_train():
    from yolact_d2.runtime.interrupt import resume_command

    argv = ["/site/yolact_d2/__main__.py", "train", "--config-file", "my cfg.yaml", "SOLVER.MAX_ITER", "5"]
    assert resume_command(argv) == shlex.join([sys.executable, "-m", "yolact_d2", "train", "--resume",
                                               "--config-file", "my cfg.yaml", "SOLVER.MAX_ITER", "5"])
    assert resume_command(["/venv/bin/yolact-train", "--config-file", "c.yaml"]) == shlex.join(
        [sys.executable, "/venv/bin/yolact-train", "--resume", "--config-file", "c.yaml"])
