"""The import graph: no circles, and a layer never imports the one above it.

The graph is read from the source (every ``import``, lazy ones inside functions included, since they
tie modules together just the same), so a new circle or an upward import fails here with the modules
named, before it confuses a reader or an import order.

Layers, top to bottom: ``pilotdata.cli`` > ``pilotdata.services`` > everything else in ``pilotdata``
(data operations, records, coordination, stores, history, descriptions, states, errors, launchers) >
``placement`` and ``transfer``. ``agent`` runs on the resources: it uses coordination, descriptions,
records, the data operations and transfer, never the services, the launchers or the CLI.
``pilotdata/__init__.py`` is the public façade: it may name the services (lazily); the CLI alone may
run the agent in its process (``pdata agent``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pilotdata", "agent", "placement", "transfer")
ACYCLIC = PACKAGES
"""Packages whose modules must form no circle."""


def _modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """``{module: modules of these packages it imports}``; ``from pkg import sub`` counts as ``pkg.sub``."""
    modules = _modules(root, packages)

    def known(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            if ".".join(parts) in modules:
                return ".".join(parts)
            parts.pop()
        return None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            targets.update(t for t in map(known, names) if t is not None and t != module)
        graph[module] = targets
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _imports(graph: Mapping[str, set[str]], sources: Iterable[str], *forbidden: str) -> list[str]:
    return sorted(f"{m} imports {t}" for m in sources for t in graph[m] if _under(t, *forbidden))


GRAPH = import_graph(ROOT, PACKAGES)


def test_the_graph_sees_lazy_relative_and_from_package_imports(tmp_path: Path) -> None:
    """The checks below are only as good as the graph: a circle hidden in a function is still found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n    return b\n")
    (pkg / "sub" / "b.py").write_text("from .. import c\n")
    (pkg / "c.py").write_text("import pkg.a as a\n")
    (pkg / "d.py").write_text("from pkg import c\nfrom pkg.sub.b import x\n")
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.d"] == {"pkg.c", "pkg.sub.b"}
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_no_import_circle_in_the_project() -> None:
    graph = {m: {t for t in ts if _under(t, *ACYCLIC)} for m, ts in GRAPH.items() if _under(m, *ACYCLIC)}
    assert cycles(graph) == []


def test_nothing_below_the_services_imports_them_or_the_cli() -> None:
    below = [m for m in GRAPH if m != "pilotdata" and not _under(m, "pilotdata.services", "pilotdata.cli")]
    assert "pilotdata.data.replicas" in below and "pilotdata.coordination" in below and "transfer" in below
    assert _imports(GRAPH, below, "pilotdata.services", "pilotdata.cli") == []


def test_the_services_do_not_import_the_cli() -> None:
    services = [m for m in GRAPH if _under(m, "pilotdata.services")]
    assert _imports(GRAPH, services, "pilotdata.cli") == []


def test_the_agent_imports_neither_the_services_nor_the_launchers_nor_the_cli() -> None:
    agent = [m for m in GRAPH if _under(m, "agent")]
    assert "agent.staging" in agent
    assert _imports(GRAPH, agent, "pilotdata.services", "pilotdata.launchers", "pilotdata.cli") == []


def test_only_the_cli_imports_the_agent() -> None:
    """Launchers start agents by command line (``python -m agent``), never by import; only the outermost
    layer, the CLI, runs one in its own process (``pdata agent``) and documents its options."""
    below_cli = [m for m in GRAPH if _under(m, "pilotdata") and not _under(m, "pilotdata.cli")]
    assert _imports(GRAPH, below_cli, "agent") == []


def test_placement_and_transfer_import_nothing_of_the_layers_above() -> None:
    low = [m for m in GRAPH if _under(m, "placement", "transfer")]
    assert _imports(GRAPH, low, "pilotdata", "agent") == []
    assert _imports(GRAPH, [m for m in low if _under(m, "placement")], "transfer") == []
    assert _imports(GRAPH, [m for m in low if _under(m, "transfer")], "placement") == []
