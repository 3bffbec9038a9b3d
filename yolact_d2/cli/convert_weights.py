"""Convert an original YOLACT checkpoint (dbolya/yolact, e.g. ``yolact_base_54_800000.pth``) to a
yolact_d2 / Detectron2 checkpoint (``yolact-convert yolact``; in a clone also
``python tools/convert_yolact_weights.py``).

    yolact-convert yolact yolact_base_54_800000.pth yolact_base_d2.pth
    yolact-train --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml \\
        --eval-only MODEL.WEIGHTS yolact_base_d2.pth

Prints the detected model (backbone depth, number of classes and prototypes) and the config that
matches it. The input size (400/550/700) cannot be detected from the weights; it is taken from the
file name when it says (``yolact_im700_...``). YOLACT++ checkpoints (``yolact_plus_*``: DCN
backbone, mask re-scoring net) convert to the ``yolact_plus_*`` configs; DarkNet-53 checkpoints are
detected and rejected (no DarkNet backbone yet). Exit code 1 on errors.
"""
from ..converters import yolact_converter as conv
from ..runtime.reporting import run_cli
from .converter_command import fail, load_input, one_line, parse_converter_args, path_problem, write_output

AUTHOR = "yolact_d2 convert_yolact_weights"


def main(argv=None, prog=None) -> int:
    args = parse_converter_args(
        argv, prog, __doc__, input_help="original YOLACT checkpoint (.pth)",
        drop_help="omit the BN num_batches_tracked counters; use for MODEL.RESNETS.NORM FrozenBN, which has "
        "no such buffer and would otherwise warn about unexpected keys (harmless)",
    )
    problem = path_problem(args)
    if problem:
        return fail(args.input, problem)
    try:
        checkpoint = load_input(args)
        state_dict, info = conv.convert_yolact_state_dict(
            checkpoint, filename=args.input, drop_num_batches_tracked=args.drop_num_batches_tracked
        )
    except conv.UnsupportedCheckpointError as e:
        if e.info.get("backbone"):
            print(conv.format_yolact_info(e.info, short=False).splitlines()[0])
        return fail(args.input, str(e))
    except (ValueError, OSError) as e:
        return fail(args.input, one_line(e))

    print(conv.format_yolact_info(info))
    for note in info["notes"]:
        if not note.startswith("the input size cannot be detected"):  # already printed above
            print(f"Note: {note}")
    if not args.drop_num_batches_tracked:
        print(
            "Note: with MODEL.RESNETS.NORM FrozenBN, convert with --drop-num-batches-tracked "
            "(otherwise the BN counters are reported as unused keys; harmless)"
        )
    return write_output(state_dict, args, AUTHOR)


def cli_main(argv=None, prog=None) -> int:
    """The command line: one ``error: ...`` line and status 1 for a known user error."""
    return run_cli(lambda: main(argv, prog), argv)
