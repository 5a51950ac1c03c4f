"""Module boundaries, read from the source (every import, also those inside functions):
common/ imports no service and no training code, services never import each other,
training imports only common/, and no import cycle anywhere in common/, services/ and
training/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("common", "services", "training")
#: Entry points of the command line that start or call the services (may import them).
#: The orchestrator (``services.orchestrator.*``) starts the services as processes and
#: may read their configuration classes to check options before it starts anything.
ENTRY_POINTS = {"services.cli", "services.predict"}
ENTRY_PACKAGES = ("services.orchestrator",)


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of :data:`PACKAGES`."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The project modules ``name`` imports (``from pkg import mod`` names the module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _top(module: str) -> str:
    return module.split(".")[0]


def _service(module: str) -> str | None:
    """``services.<name>`` of a module inside a service package, else ``None``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "services" and len(parts) > 2 else None


def test_common_imports_no_service_or_training_code(graph):
    bad = {m: sorted(t for t in ts if _top(t) != "common")
           for m, ts in graph.items() if _top(m) == "common"}
    assert not {m: t for m, t in bad.items() if t}


def test_training_imports_only_common(graph):
    bad = {m: sorted(t for t in ts if _top(t) not in ("common", "training"))
           for m, ts in graph.items() if _top(m) == "training"}
    assert not {m: t for m, t in bad.items() if t}


def test_services_never_import_each_other(graph):
    bad = {}
    for m, targets in graph.items():
        if _top(m) != "services" or m in ENTRY_POINTS or _service(m) in ENTRY_PACKAGES:
            continue
        wrong = sorted(t for t in targets if _top(t) == "training"
                       or (_top(t) == "services" and _service(t) != _service(m)
                           and t != "services"))
        if wrong:
            bad[m] = wrong
    assert not bad


def test_no_import_cycles(graph):
    # depth-first search for a back edge; the cycle is reported by its modules
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    # given a module that imports lazily inside a function / then that import counts
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from services.detector import main\n")
    modules = {"services.detector.main": path, "x.m": path}
    assert _imports("x.m", path, modules) == {"services.detector.main"}
