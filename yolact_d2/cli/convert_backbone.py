"""Convert a torchvision ImageNet ResNet (18/34/50/101/152, e.g. ``resnet50-19c8e357.pth``) to
backbone weights for yolact_d2 (``backbone.bottom_up.*``), to start YOLACT training from
(``yolact-convert backbone``; in a clone also ``python tools/convert_torchvision_backbone.py``).

    yolact-convert backbone resnet101-5d3b4d8f.pth R-101_torchvision.pth
    yolact-train --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml \\
        MODEL.WEIGHTS R-101_torchvision.pth

The classifier (``fc.*``) is dropped; only the ResNet is loaded, the FPN and heads keep their
initialisation. torchvision puts the stride in the 3x3 conv: the model needs
``MODEL.RESNETS.STRIDE_IN_1X1 False`` (as in all yolact_d2 configs). Exit code 1 on errors.
"""
import argparse
import sys

from ..runtime.reporting import run_cli

AUTHOR = "yolact_d2 convert_torchvision_backbone"


def main(argv=None, prog=None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", help="torchvision ResNet state dict (.pth)")
    parser.add_argument("output", help="where to write the converted checkpoint (.pth)")
    parser.add_argument(
        "--drop-num-batches-tracked",
        action="store_true",
        help="omit the BN num_batches_tracked counters (for MODEL.RESNETS.NORM FrozenBN)",
    )
    parser.add_argument("--force", action="store_true", help="replace the output file if it exists")
    parser.add_argument(
        "--unsafe-load", action="store_true",
        help="load the input with the unrestricted pickle loader, which runs any code in the file: only for files "
        "you trust (default: tensors and plain data only)",
    )
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"error: {args.input}: {message}", file=sys.stderr)
        return 1

    from ..converters import yolact_converter as conv  # torch only: --help stays fast
    from ..runtime import converted_files as files

    problem = files.cli_path_problem(args.input, args.output, force=args.force)
    if problem:
        return fail(problem)
    try:
        checkpoint = files.load_checkpoint_file(args.input, unsafe=args.unsafe_load)
        state_dict, depth = conv.convert_torchvision_resnet_state_dict(
            checkpoint, drop_num_batches_tracked=args.drop_num_batches_tracked
        )
    except (ValueError, OSError) as e:
        return fail(" ".join(str(e).split()))

    dropped = [k for k in conv.unwrap_state_dict(checkpoint) if k.startswith("fc.")]
    print(f"Detected: torchvision ResNet-{depth} ({len(state_dict)} backbone tensors)")
    if dropped:
        print(f"Dropped the ImageNet classifier: {', '.join(dropped)}")
    overrides = f"MODEL.RESNETS.DEPTH {depth} MODEL.RESNETS.STRIDE_IN_1X1 False"
    if depth < 50:
        overrides += " MODEL.RESNETS.RES2_OUT_CHANNELS 64"
    print(f"Use with: {overrides} MODEL.WEIGHTS {args.output}")
    try:
        files.save_converted_checkpoint(state_dict, args.output, AUTHOR)
    except OSError as e:
        print(f"error: {args.output}: cannot write: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {len(state_dict)} tensors ({conv.count_parameters(state_dict):,} parameters) to {args.output}")
    return 0


def cli_main(argv=None, prog=None) -> int:
    """The command line: one ``error: ...`` line and status 1 for a known user error."""
    return run_cli(lambda: main(argv, prog), argv)
