#!/usr/bin/env python
"""Train and evaluate YOLACT with Detectron2 (the code is ``yolact_d2/cli/train.py``).

    python train_net.py --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
    python train_net.py --config-file ... --num-gpus 2 [MODEL.DEVICE cpu]
"""
import sys

from yolact_d2.cli.train import check_eval_weights, cli_main, get_parser, main, setup  # noqa: F401  (re-exported)

if __name__ == "__main__":
    sys.exit(cli_main())
