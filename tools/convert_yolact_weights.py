#!/usr/bin/env python
"""Convert an original YOLACT checkpoint to a yolact_d2 one (the code is ``yolact_d2/cli/convert_weights.py``;
installed, the same command is ``yolact-convert yolact``).

    python tools/convert_yolact_weights.py yolact_base_54_800000.pth yolact_base_d2.pth
"""
import sys

from yolact_d2.cli.convert_weights import AUTHOR, cli_main, main  # noqa: F401  (re-exported)

if __name__ == "__main__":
    sys.exit(cli_main())
