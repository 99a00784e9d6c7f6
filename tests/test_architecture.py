"""The layering the README's Development section draws, read from the code's own imports.

Every ``import`` and ``from ... import`` in ``grmp_edge/`` counts, including the lazy ones inside
functions (an upward import does not become harmless by being deferred). The rule in one sentence:
a module imports only from its own layer or the layers below it, peers on one layer do not import
each other, and no group of modules imports itself round in a circle.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "grmp_edge"

# Bottom to top: each layer is one or more peer groups, each group a name and the modules or
# packages it holds (a package holds everything below it). Peers on one layer must not import each
# other. The README's Development section draws this table (a test below holds the two equal).
LAYERS: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...] = (
    # The torch-free core: errors, atomic files, specs, limits, the runs/ folder, metrics, image
    # decoding, the one preprocessing implementation, latency statistics and device facts.
    (("core", ("grmp_edge", "grmp_edge.errors", "grmp_edge.artifacts", "grmp_edge.spec",
               "grmp_edge.limits", "grmp_edge.runs", "grmp_edge.metrics", "grmp_edge.images",
               "grmp_edge.preprocess", "grmp_edge.timing", "grmp_edge.device")),),
    (("data", ("grmp_edge.data",)), ("runtime", ("grmp_edge.runtime",))),
    (("train", ("grmp_edge.train",)),),
    (("export", ("grmp_edge.export",)),),
    (("report", ("grmp_edge.report",)),),
    (("quickstart", ("grmp_edge.quickstart",)),),
    (("cli", ("grmp_edge.cli",)),),
)
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of_source(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The grmp_edge modules one file imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "grmp_edge"}
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            if target.split(".")[0] != "grmp_edge":
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & known
            found |= subs if subs and len(subs) == len(node.names) else {target} | subs
    return found - {module}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {m: imports_of_source(p.read_text(), m, p.name == "__init__.py", known) & known
            for m, p in files.items()}


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, group name) of a module; groups on one layer are peers. A package name
    (``grmp_edge``) holds only its ``__init__`` unless it is the group's whole prefix list."""
    for index, groups in enumerate(LAYERS):
        for name, members in groups:
            for member in members:
                if module == member or (member != "grmp_edge" and module.startswith(member + ".")):
                    return index, name
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")


def _path_of(module: str) -> str:
    path = module.replace(".", "/")
    return path + "/" if (PACKAGE.parent / path).is_dir() else path + ".py"


def render_layers() -> str:
    """The layer table as the README draws it, top layer first."""
    rows = []
    for groups in reversed(LAYERS):
        names = " | ".join(name for name, _ in groups)
        members = [m for _, ms in groups for m in ms if m != "grmp_edge"]
        if groups[0][0] == "core":
            where = "grmp_edge/{" + ",".join(m.rsplit(".", 1)[-1] for m in members) + "}.py"
        else:
            where = "   ".join(_path_of(m) for m in members)
        rows.append(f"{names:<16} {where}")
    return "\n".join(rows)


def test_the_readme_draws_the_layers_this_test_enforces():
    readme = (PACKAGE.parent / "README.md").read_text()
    assert render_layers() in readme, "README's Development section should show:\n" + render_layers()


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    """The edges that point up a layer or across to a peer group."""
    wrong = []
    for module, targets in sorted(graph.items()):
        mine, group = layer_of(module)
        for target in sorted(targets):
            theirs, other = layer_of(target)
            if theirs > mine or (theirs == mine and other != group):
                wrong.append(f"{module} -> {target}")
    return wrong


def test_no_module_imports_upward_or_across_peers():
    wrong = wrong_way(import_graph())
    assert not wrong, "imports that point up or across a layer:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    graph = import_graph()
    # A package's __init__ re-exporting its own modules is not a cycle of ideas; ignore parent edges.
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_upward_and_peer_imports_are_reported_and_downward_ones_are_not():
    graph = {"grmp_edge.runtime.pipeline": {"grmp_edge.report.plots", "grmp_edge.preprocess"},
             "grmp_edge.runtime.sources": {"grmp_edge.data.synth"},
             "grmp_edge.export.fold": {"grmp_edge.train.model", "grmp_edge.runtime.bundle"}}
    assert wrong_way(graph) == ["grmp_edge.runtime.pipeline -> grmp_edge.report.plots",
                                "grmp_edge.runtime.sources -> grmp_edge.data.synth"]


def test_lazy_imports_inside_functions_count(tmp_path):
    file = tmp_path / "mod.py"
    file.write_text("def f():\n    from grmp_edge.report import plots\n")
    assert imports_of_source(file.read_text(), "grmp_edge.runtime.mod", False,
                             {"grmp_edge.report.plots"}) == {"grmp_edge.report.plots"}


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{module_name(path)}.{node.name}: {lines} lines")
    return found


def test_no_function_is_longer_than_the_limit():
    assert long_functions() == []


@pytest.mark.parametrize("library", ["grmp_edge.data", "grmp_edge.runtime", "grmp_edge.train",
                                     "grmp_edge.export", "grmp_edge.report"])
def test_library_packages_hold_no_command_line_code(library):
    """typer lives in grmp_edge.cli only: a Python user or a benchmark calls the library."""
    users = defaultdict(list)
    root = PACKAGE.joinpath(*library.split(".")[1:])
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("typer", "click") for n in names):
                users[library].append(module_name(path))
    assert not users, dict(users)
