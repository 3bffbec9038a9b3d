#!/usr/bin/env python
"""COCO evaluation of PyTorch weights and exported ONNX files on one dataset (the code is
``yolact_d2/cli/evaluate.py``; installed, the same command is ``yolact-evaluate``; ``--help`` gives the options).

    python tools/evaluate.py --config-file CONFIG --weights model_final.pth --onnx model.onnx
"""
import sys

from yolact_d2.cli.evaluate import build, cli_main, evaluate, main, parse_args, print_table  # noqa: F401

if __name__ == "__main__":
    sys.exit(cli_main())
