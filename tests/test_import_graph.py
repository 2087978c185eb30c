"""The package's import graph, read from the source with `ast` (nothing is imported or run).

Rules that keep the package easy to change:
- no import cycles among gcpcolor modules (a cycle means neither side can be understood, tested
  or moved alone);
- `gcpcolor/models/` holds plain networks: they import nothing from the rest of gcpcolor but
  the leaf modules in MODELS_MAY_IMPORT;
- no module over MAX_LINES lines unless LONG_MODULES says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gcpcolor"
MAX_LINES = 600

#: What a network module may use besides `gcpcolor.models` itself; each imports nothing from
#: gcpcolor but `gcpcolor.errors`, so the networks stay below everything that uses them.
MODELS_MAY_IMPORT = {
    "gcpcolor.config": "each network is built from its typed config dataclass",
    "gcpcolor.errors": "the shared MissingWeightsError / WeightsFormatError",
    "gcpcolor.serialization": "strict loading of pretrained weights (EfficientNet, Inception)",
    "gcpcolor.weights": "the weight search path ($GCPCOLOR_HOME, ~/.cache/gcpcolor)",
    "gcpcolor.color": "Lab constants and conversions the networks' inputs are defined in",
}

#: Modules allowed over MAX_LINES, and why.
LONG_MODULES: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The gcpcolor modules `name` imports (at any depth of its code, lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from . import image_io` imports a module; `from .x import name` imports from x.
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1 or module in graph.get(module, ()):
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return cycles


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    assert "gcpcolor.model" in graph["gcpcolor.pipeline"]
    assert "gcpcolor.training.engine" in graph["gcpcolor.training.stage2_colorization"]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert find_cycles(import_graph()) == []


def test_models_import_only_models_and_leaf_modules():
    graph = import_graph()
    for leaf in MODELS_MAY_IMPORT:
        assert graph[leaf] <= {"gcpcolor.errors", "gcpcolor.weights"}, f"{leaf} is no longer a leaf module"
    upward = {
        module: sorted(target for target in targets
                       if not target.startswith("gcpcolor.models") and target not in MODELS_MAY_IMPORT)
        for module, targets in graph.items()
        if module.startswith("gcpcolor.models")
    }
    assert {module: targets for module, targets in upward.items() if targets} == {}


def test_no_module_is_too_long_without_a_reason():
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in package_modules().items()}
    too_long = {name: count for name, count in lengths.items() if count > MAX_LINES and name not in LONG_MODULES}
    assert too_long == {}
    stale = [name for name in LONG_MODULES if lengths.get(name, 0) <= MAX_LINES]
    assert stale == [], "these modules are short now: drop them from LONG_MODULES"
