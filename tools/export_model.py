#!/usr/bin/env python
"""Export YOLACT's tensor-only core to ONNX or TorchScript (the code is ``yolact_d2/cli/export.py``;
installed, the same command is ``yolact-export``; ``--help`` gives the options).

    python tools/export_model.py --format onnx --config-file CONFIG [--weights W.pth] --output yolact.onnx
"""
import sys

from yolact_d2.cli.export import cli_main, main, parse_args  # noqa: F401  (re-exported)

if __name__ == "__main__":
    sys.exit(cli_main())
