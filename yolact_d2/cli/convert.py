"""``yolact-convert``: the two weight converters under one command.

    yolact-convert yolact   yolact_base_54_800000.pth yolact_base_d2.pth   # an original YOLACT checkpoint
    yolact-convert backbone resnet101-5d3b4d8f.pth R-101_torchvision.pth   # a torchvision ImageNet ResNet

``yolact-convert KIND --help`` gives each converter's options.
"""
import sys

from . import convert_backbone, convert_weights

# subcommand -> (module, one-line description for the usage text)
CONVERTERS = {
    "yolact": (convert_weights, "an original YOLACT / YOLACT++ checkpoint (dbolya/yolact) to a yolact_d2 one"),
    "backbone": (convert_backbone, "a torchvision ImageNet ResNet to yolact_d2 backbone weights"),
}


def usage(prog: str) -> str:
    lines = [f"usage: {prog} {{{','.join(CONVERTERS)}}} INPUT OUTPUT [options]", "", "converters:"]
    lines += [f"  {name:9} {text}" for name, (_, text) in CONVERTERS.items()]
    lines += ["", f"'{prog} KIND --help' shows the options of one converter."]
    return "\n".join(lines)


def cli_main(argv=None, prog: str = "yolact-convert") -> int:
    """Dispatch to the converter named by the first argument; status 2 and the usage for anything else."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage(prog))
        return 0
    if not argv or argv[0] not in CONVERTERS:
        got = f"unknown converter {argv[0]!r}" if argv else "no converter named"
        print(f"{usage(prog)}\n{prog}: error: {got}; choose one of {', '.join(CONVERTERS)}", file=sys.stderr)
        return 2
    module = CONVERTERS[argv[0]][0]
    return module.cli_main(argv[1:], prog=f"{prog} {argv[0]}")


if __name__ == "__main__":
    sys.exit(cli_main())
