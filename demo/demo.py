#!/usr/bin/env python3
"""Run a YOLACT model on images, a video or a webcam and draw the instances (the code is
``yolact_d2/cli/demo.py``; installed, the same command is ``yolact-demo``; ``--help`` gives the options)."""
import os
import sys

try:
    import yolact_d2  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from yolact_d2.cli.demo import EPILOG, cli_main, get_parser, main, setup_cfg  # noqa: E402, F401  (re-exported)

if __name__ == "__main__":
    sys.exit(cli_main())
