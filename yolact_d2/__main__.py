"""``python -m yolact_d2 COMMAND ...``: the console commands of the package under one name.

    python -m yolact_d2 train    --config-file CONFIG ...   # = yolact-train
    python -m yolact_d2 demo     --config-file CONFIG ...   # = yolact-demo
    python -m yolact_d2 export   --format onnx ...          # = yolact-export
    python -m yolact_d2 convert  {yolact,backbone} IN OUT   # = yolact-convert
    python -m yolact_d2 evaluate --config-file CONFIG ...   # = yolact-evaluate
    python -m yolact_d2 app      --config-file CONFIG ...   # = yolact-app
    python -m yolact_d2 submit   --shared-folder DIR ...    # = yolact-submit

``python -m yolact_d2 COMMAND --help`` gives each command's options.
"""
import importlib
import sys

# command -> (module under yolact_d2.cli with a cli_main(argv, prog), what it does)
COMMANDS = {
    "train": ("train", "train and evaluate a model (train_net.py)"),
    "demo": ("demo", "draw a model's instances on images, a video or the webcam"),
    "export": ("export", "export a model to ONNX or TorchScript"),
    "convert": ("convert", "convert original YOLACT or torchvision ResNet weights"),
    "evaluate": ("evaluate", "COCO evaluation of PyTorch weights and ONNX exports"),
    "app": ("app", "the local web demo (needs the [app] extra: gradio)"),
    "submit": ("submit", "submit a training job to a SLURM cluster (needs the [cluster] extra: submitit)"),
}


def usage() -> str:
    lines = ["usage: python -m yolact_d2 COMMAND [options]", "", "commands:"]
    lines += [f"  {name:9} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "'python -m yolact_d2 COMMAND --help' shows the options of one command."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        got = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"{usage()}\nerror: {got}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"yolact_d2.cli.{COMMANDS[argv[0]][0]}")
    return module.cli_main(argv[1:], prog=f"python -m yolact_d2 {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
