"""Measure the shape of the package: lines per layer, the largest modules and functions, imports that
run against the layers, function-local imports of our own modules, and the checks one training start runs.

    python dev/house_metrics.py              # static figures
    python dev/house_metrics.py --checks     # also count check calls in a 2-iteration synthetic training

The layers are the ones ``tests/test_import_layers.py`` enforces (the table is read from there).
"""
import argparse
import ast
import collections
import importlib.util
import pathlib
import re
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "yolact_d2"


def load_layer_table():
    spec = importlib.util.spec_from_file_location("_layers", ROOT / "tests" / "test_import_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", action="store_true", help="count check calls in a short training run")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()

    layers = load_layer_table()
    modules = layers.package_modules()
    lines_per_layer = collections.Counter()
    for name, path in modules.items():
        lines_per_layer[layers.layer_of(name)] += len(path.read_text().splitlines())
    print("| layer | lines |\n|---|---|")
    for layer in layers.LAYER_NAMES:
        print(f"| {layer} | {lines_per_layer[layer]:,} |")
    print(f"| all | {sum(lines_per_layer.values()):,} |\n")

    sizes = sorted(((len(p.read_text().splitlines()), n) for n, p in modules.items()), reverse=True)
    print("largest modules:", ", ".join(f"{n} {s}" for s, n in sizes[: args.top]))
    functions = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    functions.sort(reverse=True)
    print("largest functions:", ", ".join(f"{n} {s}" for s, n in functions[: args.top]))

    upward = layers.upward_imports(modules)
    local = layers.unexplained_local_imports(modules)
    print(f"\nupward imports: {len(upward)}")
    for line in upward:
        print("  ", line)
    print(f"function-local imports of our own modules without a stated reason: {len(local)}")
    one_argument = sum(
        1 for p in modules.values() for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
        and getattr(node.exc.func, "id", "") in {"UserError", "ConfigError", "DataError"}
        and len(node.exc.args) + len(node.exc.keywords) == 1
    )
    section_refs = sum(len(re.findall("\u00a7", p.read_text())) for p in modules.values())
    print(f"one-argument user-error raises: {one_argument}; section signs in code: {section_refs}")

    if args.checks:
        count_checks()


CHECK_NAME = re.compile(r"^_?(check|validate|require|verify|ensure)_")


def count_checks() -> None:
    """Run a 2-iteration synthetic training in this process and count every call of a yolact_d2
    function whose name starts with check_/validate_/require_/verify_/ensure_."""
    calls = collections.Counter()
    package = str(PACKAGE)

    def profile(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code.co_filename.startswith(package) and CHECK_NAME.match(code.co_name):
                calls[f"{pathlib.Path(code.co_filename).relative_to(PACKAGE)}:{code.co_name}"] += 1

    from yolact_d2.cli.train import cli_main

    with tempfile.TemporaryDirectory() as out:
        argv = [
            "--config-file", str(ROOT / "configs/Synthetic/yolact_R_18_FPN_synthetic.yaml"),
            "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "TEST.EVAL_PERIOD", "0",
            "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", out,
        ]
        sys.setprofile(profile)
        try:
            cli_main(argv)
        finally:
            sys.setprofile(None)
    print(f"\ncheck calls in a 2-iteration training (2 images a batch) with its evaluation: {sum(calls.values())}")
    for name, n in calls.most_common():
        print(f"  {n:5d}  {name}")


if __name__ == "__main__":
    main()
