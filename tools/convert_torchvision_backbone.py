#!/usr/bin/env python
"""Convert a torchvision ImageNet ResNet to yolact_d2 backbone weights (the code is
``yolact_d2/cli/convert_backbone.py``; installed, the same command is ``yolact-convert backbone``).

    python tools/convert_torchvision_backbone.py resnet101-5d3b4d8f.pth R-101_torchvision.pth
"""
import sys

from yolact_d2.cli.convert_backbone import AUTHOR, cli_main, main  # noqa: F401  (re-exported)

if __name__ == "__main__":
    sys.exit(cli_main())
