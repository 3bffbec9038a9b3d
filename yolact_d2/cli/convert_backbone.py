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
from ..converters import yolact_converter as conv
from ..runtime.reporting import run_cli
from .converter_command import fail, load_input, one_line, parse_converter_args, path_problem, write_output

AUTHOR = "yolact_d2 convert_torchvision_backbone"


def main(argv=None, prog=None) -> int:
    args = parse_converter_args(
        argv, prog, __doc__, input_help="torchvision ResNet state dict (.pth)",
        drop_help="omit the BN num_batches_tracked counters (for MODEL.RESNETS.NORM FrozenBN)",
    )
    problem = path_problem(args)
    if problem:
        return fail(args.input, problem)
    try:
        checkpoint = load_input(args)
        state_dict, depth = conv.convert_torchvision_resnet_state_dict(
            checkpoint, drop_num_batches_tracked=args.drop_num_batches_tracked
        )
    except (ValueError, OSError) as e:
        return fail(args.input, one_line(e))

    dropped = [k for k in conv.unwrap_state_dict(checkpoint) if k.startswith("fc.")]
    print(f"Detected: torchvision ResNet-{depth} ({len(state_dict)} backbone tensors)")
    if dropped:
        print(f"Dropped the ImageNet classifier: {', '.join(dropped)}")
    overrides = f"MODEL.RESNETS.DEPTH {depth} MODEL.RESNETS.STRIDE_IN_1X1 False"
    if depth < 50:
        overrides += " MODEL.RESNETS.RES2_OUT_CHANNELS 64"
    print(f"Use with: {overrides} MODEL.WEIGHTS {args.output}")
    return write_output(state_dict, args, AUTHOR)


def cli_main(argv=None, prog=None) -> int:
    """The command line: one ``error: ...`` line and status 1 for a known user error."""
    return run_cli(lambda: main(argv, prog), argv)
