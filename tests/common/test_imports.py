"""The package boundaries hold: no import cycle among ``common/``, ``services/`` and
``training/``; services never import each other (only the orchestrator and the CLI name
them, to start them); ``common/`` imports neither services nor training; training imports
only ``common/``.

Imports are read from the source with :mod:`ast` (every ``import`` statement, also those
inside functions: a lazy import is still a dependency), so nothing is executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "services", "training")
#: Parts of ``services/`` that start the others and so may import them.
LAUNCHERS = {"services.cli", "services.orchestrator"}

#: Known violations that the other half of issue 13 removes (a shared layer in common/
#: for box geometry, crop preprocessing, model runtimes and images). Each is a pair
#: ``(importer unit, imported unit)``. Remove entries as they are fixed: the test fails
#: on a listed pair that no longer occurs, so the list can only shrink.
KNOWN = {
    ("services.classifier", "services.detector"),
    ("services.predict", "services.capture"),
    ("services.predict", "services.classifier"),
    ("services.predict", "services.detector"),
    ("training", "services.classifier"),
    ("training", "services.detector"),
}
KNOWN_CYCLES = {
    frozenset({"services.classifier.align", "services.classifier.model"}),
    frozenset({"training.cli", "training.roll"}),
}


def module_name(path: Path) -> str:
    """Dotted module name of a file under ROOT (``pkg/__init__.py`` -> ``pkg``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: {imported project modules}}`` for every module of :data:`PACKAGES`."""
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps = set()
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".")[: len(name.split(".")) - node.level + is_pkg]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:  # the longest prefix that is a project module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def unit(module: str) -> str:
    """The boundary a module belongs to: ``common``, ``training``, ``services.<part>``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "services" and len(parts) > 1 else parts[0]


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def boundary_violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """``(importer unit, imported unit)`` pairs that cross a boundary they must not."""
    bad = set()
    for module, deps in graph.items():
        src = unit(module)
        for dep in deps:
            dst = unit(dep)
            if src == dst or dst == "common":
                continue  # inside one unit, or the shared layer: always allowed
            if src in LAUNCHERS and dst.startswith("services"):
                continue  # the orchestrator and the CLI start services by module path
            bad.add((src, dst))
    return bad


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_the_project(graph):
    # given the import graph read from the source / then it knows the services and their
    # use of the shared layer (a broken reader would make the checks below vacuous)
    assert {"common.service", "services.capture.main", "services.sink.main"} <= set(graph)
    assert "common.service" in graph["services.capture.main"]


def test_no_import_cycles(graph):
    # given every module of common/, services/ and training/ / then no import cycle
    # exists but the known ones the shared-layer work removes
    found = {frozenset(c) for c in cycles(graph)}
    assert found - KNOWN_CYCLES == set(), sorted(map(sorted, found - KNOWN_CYCLES))
    assert KNOWN_CYCLES - found == set(), "fixed: remove from KNOWN_CYCLES " + str(
        sorted(map(sorted, KNOWN_CYCLES - found)))


def test_services_import_only_the_shared_layer(graph):
    # given the boundaries / then services import no other service (but the launchers),
    # common imports no service or training code, training imports only common
    bad = boundary_violations(graph)
    assert bad - KNOWN == set(), sorted(bad - KNOWN)
    assert KNOWN - bad == set(), f"fixed: remove from KNOWN {sorted(KNOWN - bad)}"


def test_the_checks_catch_a_cycle_and_a_crossing():
    # given a made-up graph with a cycle and a service importing another
    fake = {"common.a": {"common.b"}, "common.b": {"common.a"},
            "services.sink.main": {"services.capture.spec", "common.a"},
            "services.capture.spec": set(), "services.cli": {"services.sink.main"}}
    # then both are found, and the CLI's import is allowed
    assert cycles(fake) == [{"common.a", "common.b"}]
    assert boundary_violations(fake) == {("services.sink", "services.capture")}
