"""The house rules of the layout, read from the source: who may import whom, no import cycles,
one module per external system (Kubernetes, Redis, OpenTelemetry).

    servegate   the entry point: may import everything below
    gateway     the data plane        } never import each other, nor servegate
    autoscaler  the control loop      }
    router      pure decisions: contracts only, no I/O library
    contracts   shared schemas: nothing of ours
    adapters    shared I/O: contracts only
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("adapters", "autoscaler", "contracts", "gateway", "router", "servegate")
# package -> the first-party packages it must not import
FORBIDDEN = {
    "gateway": {"autoscaler", "servegate"},
    "autoscaler": {"gateway", "servegate"},
    "router": {"gateway", "autoscaler", "servegate", "adapters"},
    "contracts": {"gateway", "autoscaler", "servegate", "adapters", "router"},
    "adapters": {"gateway", "autoscaler", "servegate", "router"},
}
IO_LIBRARIES = {"asyncio", "aiohttp", "httpx", "grpc", "redis", "kubernetes", "socket", "uvicorn"}


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "_pb2" in path.name:
                continue
            rel = path.relative_to(REPO).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def imports(path: Path, name: str) -> Iterator[str]:
    """Every module a file imports, at any depth (TYPE_CHECKING and local imports too)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


MODULES = modules()
GRAPH = {name: {m for m in imports(path, name) if m in MODULES and m != name}
         for name, path in MODULES.items()}


def top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_boundaries(package: str) -> None:
    wrong = sorted((m, i) for m, deps in GRAPH.items() if top(m) == package
                   for i in deps if top(i) in FORBIDDEN[package])
    assert wrong == []


@pytest.mark.parametrize("package", ["router", "contracts"])
def test_pure_packages_import_no_io_library(package: str) -> None:
    wrong = sorted((m, i) for m, path in MODULES.items() if top(m) == package
                   for i in imports(path, m) if top(i) in IO_LIBRARIES)
    assert wrong == []


def test_the_front_doors_do_not_import_each_other() -> None:
    def under(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    wrong = sorted((m, i) for m, deps in GRAPH.items() for i in deps
                   if (under(m, "gateway.http") and under(i, "gateway.grpc"))
                   or (under(m, "gateway.grpc") and under(i, "gateway.http")))
    assert wrong == []


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over module imports; any of size > 1 is a cycle
    (package ``__init__`` re-exports count only as the imports they write)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
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
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


def test_one_module_talks_to_the_kubernetes_api() -> None:
    users = sorted(m for m, path in MODULES.items()
                   if any(top(i) == "kubernetes" for i in imports(path, m)))
    assert users == ["adapters.kube"]


def test_the_graph_is_read() -> None:
    """The checks above see real edges (a parser that found nothing would pass them all)."""
    assert "gateway.pipeline.proxy" in GRAPH["gateway.server"]
    assert "contracts.config" in GRAPH["router.table"]
    assert {"gateway.server", "autoscaler.cli"} <= GRAPH["servegate.cli"]


def test_one_module_imports_redis() -> None:
    """Both processes reach Redis through adapters.redisio: one client factory, one error
    translation."""
    users = sorted(m for m, path in MODULES.items()
                   if any(top(i) == "redis" for i in imports(path, m)))
    assert users == ["adapters.redisio"]


def test_one_module_imports_opentelemetry() -> None:
    """Tracing is optional (the ``tracing`` extra): gateway.tracing is the only module that
    imports OpenTelemetry, and it imports the SDK only when tracing is on."""
    users = sorted(m for m, path in MODULES.items()
                   if any(top(i) == "opentelemetry" for i in imports(path, m)))
    assert users == ["gateway.tracing"]


def test_test_file_basenames_are_unique() -> None:
    """pytest imports test files (there are no __init__.py files) by basename: two with one
    name in different folders stop the whole run at collection."""
    names = sorted(p.name for p in (REPO / "tests").rglob("test_*.py"))
    assert sorted({n for n in names if names.count(n) > 1}) == []
