#!/usr/bin/env python3
"""Local web demo of a YOLACT model (Gradio; the code is ``yolact_d2/cli/app.py``; installed with the
``[app]`` extra, the same command is ``yolact-app``; ``--help`` gives the options).

    pip install -e ".[app]"
    python demo/app.py --config-file configs/Synthetic/yolact_R_18_FPN_synthetic.yaml \\
        --opts MODEL.WEIGHTS output/synthetic/model_final.pth MODEL.DEVICE cpu
"""
import os
import sys

try:
    import yolact_d2  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from yolact_d2.cli.app import DemoApp, build_ui, cli_main, get_parser, main, write_examples  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(cli_main())
