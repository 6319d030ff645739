"""The project's import graph: no cycles anywhere in pipeline/, stages/ and moe_train/, and the two
consumers of pipeline/ (the CPU stages and training) never import each other.

Every import statement counts, including the ones inside functions (a lazy import hides a cycle
from the interpreter until the day someone hoists it); only `if TYPE_CHECKING:` blocks are left out,
since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "stages", "moe_train")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_names(path: Path, module: str) -> set[str]:
    """Absolute dotted names this file imports: `from a import b` yields both `a` and `a.b`, so a
    submodule import is seen whichever way it is written."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text(), filename=str(path))]
    while stack:
        node = stack.pop()
        if _is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports (a name that is a function or class, not a module,
    resolves to the module that defines it)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path, module):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and name not in PACKAGES:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_the_packages_and_lazy_imports():
    graph = import_graph()
    assert {"pipeline.config", "stages.dedup", "moe_train.train"} <= set(graph)
    # moe_train.spread imports the trainer at module level, the eval stage its scorers inside run()
    assert "moe_train.train" in graph["moe_train.spread"]
    assert "moe_train.eval.qa_eval" in graph["moe_train.eval.evaluate"]


def test_cycle_detection_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_relative_imports_resolve(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .sub import x\n")
    (package / "mod.py").write_text("from . import sub\nfrom .sub import y\nfrom ..other import z\n")
    assert imported_names(package / "__init__.py", "pkg") == {"pkg.sub", "pkg.sub.x"}
    assert imported_names(package / "mod.py", "pkg.mod") == {
        "pkg",
        "pkg.sub",
        "pkg.sub.y",
        "other",
        "other.z",
    }


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (each line one cycle):\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize(("importer", "imported"), [("stages", "moe_train"), ("moe_train", "stages")])
def test_stages_and_training_do_not_import_each_other(importer, imported):
    crossings = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if module.split(".")[0] == importer
        for target in targets
        if target.split(".")[0] == imported
    )
    assert not crossings, "\n".join(crossings)
