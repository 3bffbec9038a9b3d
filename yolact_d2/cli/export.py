"""Export YOLACT's tensor-only core (image -> class_probs, boxes, coefficients, prototypes):
``yolact-export`` (in a clone also ``python tools/export_model.py``).

    yolact-export --format onnx \\
        --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml \\
        [--weights W.pth] --output yolact.onnx [--opset 19] [KEY VALUE ...]
    yolact-export --format onnx --int8 --calibration-dataset yolact_synthetic_train \
        [--calibration-images 64] [--calibration-method percentile] --config-file ... --output yolact_int8.onnx

``--int8``: static int8 quantisation with ONNX Runtime (yolact_d2/quantization.py), calibrated on
N images of a registered dataset through the YOLACT test mapper; the float32 model is written
next to it (``<output>.float32.onnx``). Same inputs and outputs: ``YolactONNXPredictor`` runs it.

Input of the exported graph: ``image`` float32 (1, 3, S, S), the image resized to
``INPUT.IMAGE_SIZE`` (S) in ``INPUT.FORMAT`` channel order, pixel values 0..255 (``--dynamic``:
any H x W, e.g. for ``INPUT.TEST_RESIZE_MODE keep_aspect``). NMS and mask
assembly run afterwards in PyTorch: use ``yolact_d2.export.YolactONNXPredictor(cfg, path)`` /
``YolactTorchScriptPredictor`` (BGR image in, ``{"instances": Instances}`` out, like
``YolactPredictor``). See yolact_d2/export.py for the details (fixed image size, YOLACT++).
"""
import argparse
import os

from ..data.datasets import register_datasets_from_config
from ..export import DEFAULT_ONNX_OPSET, export_onnx, export_torchscript
from ..layers.deform_conv import ONNX_DEFORM_CONV_MIN_OPSET, DeformConvExportError, check_onnx_exportable
from ..predictor import YolactPredictor
from ..quantization import DatasetCalibrationReader, quantize_onnx
from ..runtime.cli_args import positive_int
from ..runtime.command_line_keys import mark_set_on_command_line
from ..runtime.config_loading import setup_cfg
from ..runtime.reporting import run_cli
from ..utils.atomic_io import make_output_dir
from ..utils.errors import ConfigError


def parse_args(argv=None, prog=None):
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    parser.add_argument("--config-file", required=True)
    parser.add_argument(
        "--weights", default=None,
        help="checkpoint (default: cfg MODEL.WEIGHTS; 'random': an untrained model on purpose)",
    )
    parser.add_argument("--output", required=True)
    parser.add_argument("--force", action="store_true",
                        help="replace an existing --output (and, with --int8, its .float32.onnx twin)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset (default 19; YOLACT++ needs >= 19; the exporter supports 18 and up)")
    parser.add_argument(
        "--dynamic", action="store_true",
        help="ONNX: dynamic height/width (outputs box_deltas; anchors are computed by the predictor)",
    )
    parser.add_argument("--int8", action="store_true", help="ONNX: static int8 quantisation (see above)")
    parser.add_argument("--calibration-dataset", help="--int8: registered dataset name (e.g. yolact_synthetic_train)")
    parser.add_argument("--calibration-images", type=positive_int, default=64,
                        help="--int8: calibration images (default 64)")
    parser.add_argument(
        "--calibration-method", default="percentile", choices=["minmax", "percentile", "entropy"],
        help="--int8: how activation ranges are set (default percentile, chosen by measurement: docs/EXPORT.md)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def _check_int8_args(args):
    if args.int8 and args.format != "onnx":
        raise ConfigError("--int8", f"applies to --format onnx only, got --format {args.format}", "use --format onnx")
    if args.int8 and not args.calibration_dataset:
        raise ConfigError("--int8", "needs --calibration-dataset NAME", "e.g. yolact_synthetic_train or your train set")
    if not args.int8 and args.calibration_dataset:
        raise ConfigError("--calibration-dataset", "is used with --int8 only", "add --int8, or leave it out")


# The dynamo exporter writes opset 18 for any lower request (without a word): refuse those instead.
MIN_ONNX_OPSET = 18


def _check_export_args(args, cfg):
    """Flags that would be refused only after the export (or when the file is loaded): one line now."""
    from torch.onnx._constants import ONNX_MAX_OPSET

    if args.format != "onnx" and (args.opset is not None or args.dynamic):
        raise ConfigError("--opset / --dynamic", "apply to --format onnx only", "leave them out, or use --format onnx")
    if args.opset is not None and not MIN_ONNX_OPSET <= args.opset <= ONNX_MAX_OPSET:
        raise ConfigError(f"--opset {args.opset}", f"this torch's ONNX exporter writes opsets "
                          f"{MIN_ONNX_OPSET} to {ONNX_MAX_OPSET}", "use --opset 19, the default")
    # YOLACT++ (deformable stages in the config): before the weights are loaded or anything is built
    if (args.format == "onnx" and args.opset is not None and args.opset < ONNX_DEFORM_CONV_MIN_OPSET
            and any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE)):
        raise _deform_conv_opset_error(args.opset)
    mode = cfg.INPUT.TEST_RESIZE_MODE
    if not args.dynamic and mode != "squash":
        fix = "add --dynamic, or " if args.format == "onnx" else ""
        raise ConfigError(
            f"INPUT.TEST_RESIZE_MODE {mode!r}",
            f"a fixed-size {args.format} export takes {cfg.INPUT.IMAGE_SIZE}x{cfg.INPUT.IMAGE_SIZE} squashed images "
            "only, so its predictor would refuse it", f"{fix}export with INPUT.TEST_RESIZE_MODE squash",
        )


def _deform_conv_opset_error(opset):
    return ConfigError(
        f"--opset {opset}",
        f"this model has deformable convolutions (YOLACT++), whose ONNX DeformConv needs opset >= "
        f"{ONNX_DEFORM_CONV_MIN_OPSET}", f"use --opset {ONNX_DEFORM_CONV_MIN_OPSET}",
    )


def _check_opset_for_model(args, model):
    """YOLACT++'s deformable convolutions need opset 19 (DeformConv); the model is the final word."""
    try:
        check_onnx_exportable(model, opset_version=args.opset, dynamo=True)
    except DeformConvExportError:
        raise _deform_conv_opset_error(args.opset) from None


def _calibration_reader(cfg, args):
    """Checked before the (slow) export, so that a wrong dataset name fails at once."""
    register_datasets_from_config(cfg)  # DATASETS.COCO_INSTANCES: the user's own datasets
    return DatasetCalibrationReader(cfg, args.calibration_dataset, args.calibration_images)


def _float32_twin(output: str) -> str:
    """Where --int8 keeps the float32 model it quantised."""
    return os.path.splitext(output)[0] + ".float32.onnx"


def _check_output_paths(args, cfg):
    """The files this export writes: never a folder or the weights it reads, and an existing file is
    replaced only with --force (an earlier export is not lost to a repeated command)."""
    outputs = [args.output] + ([_float32_twin(args.output)] if args.int8 else [])
    weights = cfg.MODEL.WEIGHTS
    for path in outputs:
        if os.path.isdir(path):
            raise ConfigError(f"--output {path}", "is a folder", "give a file name")
        if weights and os.path.exists(weights) and os.path.exists(path) and os.path.samefile(weights, path):
            raise ConfigError(f"--output {path}", "is the weights file this export reads", "give another path")
        if os.path.lexists(path) and not args.force:
            raise ConfigError(f"--output {path}", "exists", "pass --force to replace it, or give another path")


def _quantize(args, reader):
    float_path = _float32_twin(args.output)
    os.replace(args.output, float_path)
    info = quantize_onnx(float_path, args.output, reader, method=args.calibration_method,
                         dataset_name=args.calibration_dataset)
    print(f"int8: {args.calibration_method} calibration on {info['calibration_images']} images of "
          f"{args.calibration_dataset}; float32 model: {float_path}")


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    _check_int8_args(args)
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    cfg.MODEL.DEVICE = "cpu"
    if args.weights is not None:
        cfg.MODEL.WEIGHTS = args.weights
        mark_set_on_command_line(cfg, "MODEL.WEIGHTS")  # --weights random: untrained on purpose
    _check_export_args(args, cfg)
    _check_output_paths(args, cfg)
    make_output_dir(os.path.dirname(os.path.abspath(args.output)), "--output folder")  # before the slow steps
    reader = _calibration_reader(cfg, args) if args.int8 else None
    model = YolactPredictor(cfg, precision="fp32").model  # builds, checks the config, loads the weights
    size = int(cfg.INPUT.IMAGE_SIZE)
    if args.format == "onnx":
        _check_opset_for_model(args, model)
        export_onnx(model, args.output, size, opset_version=args.opset or DEFAULT_ONNX_OPSET, dynamic=args.dynamic)
        if args.int8:
            _quantize(args, reader)
    else:
        export_torchscript(model, args.output, size)
    shape = "1x3xHxW" if args.dynamic else f"1x3x{size}x{size}"
    print(f"wrote {args.format} model for {shape} {cfg.INPUT.FORMAT} 0..255 input: {args.output}")


def cli_main(argv=None, prog=None) -> int:
    """The command line: one ``error: ...`` line and status 1 for a known user error."""
    return run_cli(lambda: main(argv, prog), argv)
