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
import argparse
import sys

from ..runtime.reporting import run_cli

AUTHOR = "yolact_d2 convert_yolact_weights"


def main(argv=None, prog=None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", help="original YOLACT checkpoint (.pth)")
    parser.add_argument("output", help="where to write the converted checkpoint (.pth)")
    parser.add_argument(
        "--drop-num-batches-tracked",
        action="store_true",
        help="omit the BN num_batches_tracked counters; use for MODEL.RESNETS.NORM FrozenBN, which has "
        "no such buffer and would otherwise warn about unexpected keys (harmless)",
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
        state_dict, info = conv.convert_yolact_state_dict(
            checkpoint, filename=args.input, drop_num_batches_tracked=args.drop_num_batches_tracked
        )
    except conv.UnsupportedCheckpointError as e:
        if e.info.get("backbone"):
            print(conv.format_yolact_info(e.info, short=False).splitlines()[0])
        return fail(str(e))
    except (ValueError, OSError) as e:
        return fail(" ".join(str(e).split()))

    print(conv.format_yolact_info(info))
    for note in info["notes"]:
        if not note.startswith("the input size cannot be detected"):  # already printed above
            print(f"Note: {note}")
    if not args.drop_num_batches_tracked:
        print(
            "Note: with MODEL.RESNETS.NORM FrozenBN, convert with --drop-num-batches-tracked "
            "(otherwise the BN counters are reported as unused keys; harmless)"
        )
    try:
        files.save_converted_checkpoint(state_dict, args.output, AUTHOR)
    except OSError as e:
        print(f"error: {args.output}: cannot write: {e}", file=sys.stderr)
        return 1
    print(
        f"Wrote {len(state_dict)} tensors ({conv.count_parameters(state_dict):,} parameters) to {args.output}"
    )
    return 0


def cli_main(argv=None, prog=None) -> int:
    """The command line: one ``error: ...`` line and status 1 for a known user error."""
    return run_cli(lambda: main(argv, prog), argv)
