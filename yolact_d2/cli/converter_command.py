"""What the two weight converters' command lines share (``yolact-convert yolact`` and ``yolact-convert
backbone``): their arguments, the checks and loading of the input, the writing of the output, and their
error line ``error: <file>: <cause>`` with exit status 1."""
import argparse
import sys

from ..converters import count_parameters
from ..runtime import converted_files as files

__all__ = ["parse_converter_args", "fail", "one_line", "path_problem", "load_input", "write_output"]


def parse_converter_args(argv, prog, description: str, input_help: str, drop_help: str) -> argparse.Namespace:
    """``INPUT OUTPUT [--drop-num-batches-tracked] [--force] [--unsafe-load]``."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", help=input_help)
    parser.add_argument("output", help="where to write the converted checkpoint (.pth)")
    parser.add_argument("--drop-num-batches-tracked", action="store_true", help=drop_help)
    parser.add_argument("--force", action="store_true", help="replace the output file if it exists")
    parser.add_argument(
        "--unsafe-load", action="store_true",
        help="load the input with the unrestricted pickle loader, which runs any code in the file: only for files "
        "you trust (default: tensors and plain data only)",
    )
    return parser.parse_args(argv)


def fail(path: str, message: str) -> int:
    """One ``error: <path>: <message>`` line on stderr; the exit status 1."""
    print(f"error: {path}: {message}", file=sys.stderr)
    return 1


def one_line(error: BaseException) -> str:
    """An error's message on one line (a converter's messages may list keys over several)."""
    return " ".join(str(error).split())


def path_problem(args):
    """What is wrong with the input and output paths (one line), or None: the output is never the input,
    and an existing output is replaced only with ``--force``."""
    return files.cli_path_problem(args.input, args.output, force=args.force)


def load_input(args):
    """The input checkpoint, read with the safe loader unless ``--unsafe-load``."""
    return files.load_checkpoint_file(args.input, unsafe=args.unsafe_load)


def write_output(state_dict, args, author: str) -> int:
    """Write the converted checkpoint atomically and say so; the exit status."""
    try:
        files.save_converted_checkpoint(state_dict, args.output, author)
    except OSError as e:
        return fail(args.output, f"cannot write: {e}")
    print(f"Wrote {len(state_dict)} tensors ({count_parameters(state_dict):,} parameters) to {args.output}")
    return 0
