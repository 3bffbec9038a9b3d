#!/usr/bin/env python
"""Export YOLACT's tensor-only core (image -> class_probs, boxes, coefficients, prototypes).

    python tools/export_model.py --format onnx --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml \\
        [--weights W.pth] --output yolact.onnx [--opset 19] [KEY VALUE ...]

Input of the exported graph: ``image`` float32 (1, 3, S, S), the image resized to
``INPUT.IMAGE_SIZE`` (S) in ``INPUT.FORMAT`` channel order, pixel values 0..255 (``--dynamic``:
any H x W, e.g. for ``INPUT.TEST_RESIZE_MODE keep_aspect``). NMS and mask
assembly run afterwards in PyTorch: use ``yolact_d2.export.YolactONNXPredictor(cfg, path)`` /
``YolactTorchScriptPredictor`` (BGR image in, ``{"instances": Instances}`` out, like
``YolactPredictor``). See yolact_d2/export.py for the details (fixed image size, YOLACT++).
"""
import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", default=None, help="checkpoint (default: cfg MODEL.WEIGHTS; empty = random init)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 19; YOLACT++ needs >= 19)")
    parser.add_argument(
        "--dynamic", action="store_true",
        help="ONNX: dynamic height/width (outputs box_deltas; anchors are computed by the predictor)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from detectron2.config import get_cfg

    from yolact_d2 import YolactPredictor, add_yolact_config
    from yolact_d2.utils.config_loading import merge_config_file, merge_config_list
    from yolact_d2.export import DEFAULT_ONNX_OPSET, export_onnx, export_torchscript

    cfg = get_cfg()
    add_yolact_config(cfg)
    merge_config_file(cfg, args.config_file)  # one-line errors (YAML syntax, unknown keys)
    merge_config_list(cfg, args.opts)
    cfg.MODEL.DEVICE = "cpu"
    if args.weights is not None:
        cfg.MODEL.WEIGHTS = args.weights
    model = YolactPredictor(cfg).model  # builds, checks the config and loads the weights
    size = int(cfg.INPUT.IMAGE_SIZE)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if args.format == "onnx":
        export_onnx(model, args.output, size, opset_version=args.opset or DEFAULT_ONNX_OPSET, dynamic=args.dynamic)
    else:
        if args.opset is not None or args.dynamic:
            sys.exit("error: --opset and --dynamic apply to --format onnx only")
        export_torchscript(model, args.output, size)
    shape = "1x3xHxW" if args.dynamic else f"1x3x{size}x{size}"
    print(f"wrote {args.format} model for {shape} {cfg.INPUT.FORMAT} 0..255 input: {args.output}")


if __name__ == "__main__":
    from yolact_d2.utils.errors import run_cli

    sys.exit(run_cli(main))
