#!/usr/bin/env python
"""yolact_d2: YOLACT / YOLACT++ real-time instance segmentation as a Detectron2 plugin.

Detectron2 itself is not on PyPI and is therefore not listed in ``install_requires``;
``tools/setup_env.sh`` (``make setup``) installs it when it is missing (see docs/INSTALL.md).
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(
    r'__version__ = "([^"]+)"', Path(__file__).with_name("yolact_d2").joinpath("__init__.py").read_text()
).group(1)

setup(
    name="yolact_d2",
    version=version,
    description="YOLACT real-time instance segmentation as a Detectron2 plugin",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(exclude=("tests", "tests.*", "tools", "demo", "configs")),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "pycocotools>=2.0.2",
        "opencv-python",
        "tqdm",
        "tensorboard",
        # detectron2's own runtime dependencies (needed because detectron2 is installed from
        # sources without dependency metadata; harmless when an official build is present)
        "yacs>=0.1.8",
        "omegaconf>=2.1,<2.4",
        "hydra-core>=1.1",
        "termcolor>=1.1",
        "tabulate",
        "cloudpickle",
        "matplotlib",
        "Pillow>=7.1",
        "setuptools<81",  # detectron2.model_zoo imports pkg_resources
    ],
    extras_require={
        # onnx / onnxscript / onnxruntime: the ONNX export test of the YOLACT++ deformable conv;
        # ruff: the linter (ruff.toml); faster-coco-eval: TEST.COCO_EVAL_BACKEND "auto" and its test;
        # playwright: the web demo's browser test (Python API only, it drives Debian's chromium: never run
        # `playwright install`); submitit: tests/test_submit.py (the cluster launcher, run locally)
        "dev": ["pytest>=7", "pytest-timeout", "onnx", "onnxscript", "onnxruntime", "ruff", "faster-coco-eval>=1.8",
                "playwright>=1.40", "submitit>=1.5"],
        # the web demo, demo/app.py (tested with gradio 6.31)
        "app": ["gradio>=6.0"],
        # tools/submit.py: training jobs on SLURM clusters (tested with submitit 1.5.4)
        "cluster": ["submitit>=1.5"],
    },
)
