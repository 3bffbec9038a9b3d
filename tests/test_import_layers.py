"""The package's layers and the one direction its imports run (docs/ARCHITECTURE.md).

Every module of ``yolact_d2`` is parsed (not imported); an import of a module of a higher layer fails
the test, and so does a function-local import of one of our modules without a comment that says why
(on the import's line or the line above), since such imports hide a dependency from the reader.
``dev/house_metrics.py`` reads the layer table from here.
"""
import ast
import pathlib
from typing import Dict, List

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "yolact_d2"

# Lowest first. A module may import its own layer and the ones below it.
LAYERS = [
    ("floor", ["yolact_d2.utils"]),  # leaf helpers: error types, atomic writes, CPU features, file checks
    ("core", [  # the Detectron2 plugin: what a user of the model reads
        "yolact_d2.config", "yolact_d2.layers", "yolact_d2.modeling", "yolact_d2.data",
        "yolact_d2.evaluation", "yolact_d2.solver", "yolact_d2.converters",
    ]),
    ("runtime", ["yolact_d2.runtime"]),  # the guard rails of a run
    ("applications", [  # what is run: trainer, predictor, export, demos, the zoo
        "yolact_d2.engine", "yolact_d2.predictor", "yolact_d2.precision", "yolact_d2.export",
        "yolact_d2.quantization", "yolact_d2.demo", "yolact_d2.model_zoo", "yolact_d2.testing",
    ]),
    ("commands", ["yolact_d2.cli", "yolact_d2.__main__", "yolact_d2"]),  # "yolact_d2": the package's façade
]
LAYER_NAMES = [name for name, _ in LAYERS]


def layer_of(module: str) -> str:
    """The layer of a module: the longest prefix in LAYERS that names it or a package above it."""
    best, best_len = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            exact_only = prefix == "yolact_d2"
            hit = module == prefix or (not exact_only and module.startswith(prefix + "."))
            if hit and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_import_layers.py")
    return best


def package_modules() -> Dict[str, pathlib.Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "model_zoo/configs" in path.as_posix():  # LazyConfig files: config data, loaded by path
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imported_modules(module: str, path: pathlib.Path, node: ast.AST, known) -> List[str]:
    """Our modules an import statement names (a package's submodule where one is named)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "yolact_d2"]
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "yolact_d2":
        return []
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]


def _walk_imports(path: pathlib.Path):
    """(import node, inside a function?) for every import statement of a file."""
    tree = ast.parse(path.read_text())

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from visit(child, inner)

    yield from visit(tree, False)


def upward_imports(modules) -> List[str]:
    rank = {name: i for i, name in enumerate(LAYER_NAMES)}
    found = []
    for module, path in modules.items():
        for node, _ in _walk_imports(path):
            for target in _imported_modules(module, path, node, modules):
                if rank[layer_of(target)] > rank[layer_of(module)]:
                    found.append(f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)}), "
                                 f"line {node.lineno}")
    return found


def unexplained_local_imports(modules) -> List[str]:
    found = []
    for module, path in modules.items():
        lines = path.read_text().splitlines()
        for node, in_function in _walk_imports(path):
            if not in_function or not _imported_modules(module, path, node, modules):
                continue
            here = lines[node.end_lineno - 1]
            above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
            if "#" not in here and not above.startswith("#"):
                found.append(f"{module} line {node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_every_module_has_a_layer():
    for module in package_modules():
        layer_of(module)  # raises for a module outside the table


def test_layer_table_matches_the_package():
    """Every prefix in the table names a module or package that exists (a renamed folder is noticed)."""
    modules = package_modules()
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            assert prefix in modules, f"LAYERS names {prefix}, which is not a module of yolact_d2"


def test_imports_run_down_only():
    assert upward_imports(package_modules()) == []


def test_function_local_imports_of_our_modules_say_why():
    assert unexplained_local_imports(package_modules()) == []


def test_the_checker_sees_an_upward_and_an_unexplained_local_import(tmp_path):
    """The two checks above would fail on a core module importing the run-time layer inside a function."""
    module = tmp_path / "yolact_d2" / "modeling" / "bad.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from ..runtime.run_checks import check_num_classes\n    return 1\n")
    checks = tmp_path / "yolact_d2" / "runtime" / "run_checks.py"
    checks.parent.mkdir(parents=True)
    checks.write_text("def check_num_classes():\n    pass\n")
    modules = {"yolact_d2.modeling.bad": module, "yolact_d2.runtime.run_checks": checks}
    assert upward_imports(modules) == [
        "yolact_d2.modeling.bad (core) imports yolact_d2.runtime.run_checks (runtime), line 2"]
    assert unexplained_local_imports(modules) == [
        "yolact_d2.modeling.bad line 2: from ..runtime.run_checks import check_num_classes"]
    module.write_text("def f():\n    # lazy: keeps import cheap\n    from ..runtime.run_checks import x\n")
    assert unexplained_local_imports(modules) == []
