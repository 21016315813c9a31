"""The package's structure, checked over the AST of ``src/daggerflow`` (docs/design.md, "Map").

- no import cycle, counting every import: module level, deferred (inside a function) and
  ``TYPE_CHECKING`` alike, since each records a dependency even when Python tolerates it;
- nothing below the facade imports ``engine``: only the package root, ``cli``, ``__main__``
  and the demo (applications of the library) may;
- dependencies point inward: ``model`` and ``machine`` are pure, the shared ``pipeline``
  imports neither a runtime nor an I/O library, the two runtimes do not import each other;
- aiokafka appears only in the Kafka runtime, sqlite3 only in the SQLite store;
- no module is over ``MAX_LINES`` lines unless docs/design.md says why.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "daggerflow"
MAX_LINES = 600

#: Modules that are applications of the library, above the facade.
ABOVE_FACADE = {"daggerflow", "daggerflow.__main__", "daggerflow.cli", "daggerflow.engine"}
#: Packages whose every module is above the facade (the test kit drives an engine, as an
#: application's tests do).
ABOVE_FACADE_PACKAGES = ("daggerflow.cli", "daggerflow.demo", "daggerflow.testing")

#: What each layer may import from the package, besides itself (prefix match).
INWARD = {
    "daggerflow.model": ("daggerflow.model", "daggerflow.errors"),
    "daggerflow.machine": ("daggerflow.machine", "daggerflow.model", "daggerflow.errors"),
}
PIPELINE_FORBIDDEN = (
    "daggerflow.engine",
    "daggerflow.embedded",
    "daggerflow.kafka",
    "daggerflow.web",
    "daggerflow.cli",
    "daggerflow.demo",
    "daggerflow.store.sqlite",
    "daggerflow.store.rocksdb",
    "daggerflow.store.factory",
)
IO_LIBRARIES = ("aiokafka", "sqlite3", "httpx", "starlette", "uvicorn", "rocksdict")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports(name: str) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in module ``name``: daggerflow modules
    resolved (``from .x import y`` is ``x.y`` when that is a module), others as written."""
    tree = ast.parse(MODULES[name].read_text())
    package = name if is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else target), node.lineno


def graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in imports(m) if t in MODULES and t != m} for m in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_scan_sees_the_package() -> None:
    # A guard for the checks below: they pass vacuously if the scan finds nothing.
    edges = graph()
    assert len(MODULES) > 40
    assert "daggerflow.pipeline.processor" in edges["daggerflow.pipeline.partition"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    # The package root only re-exports, and nothing imports it (checked below), so it
    # cannot close a cycle; leaving it out keeps the report about real dependencies.
    edges = {m: {t for t in ts if t != "daggerflow"} for m, ts in graph().items() if m != "daggerflow"}
    assert cycles(edges) == []


def test_nothing_imports_the_package_root() -> None:
    offenders = [f"{m}:{line}" for m in MODULES for t, line in imports(m) if t == "daggerflow" and m != "daggerflow"]
    assert offenders == []


def test_nothing_below_the_facade_imports_the_engine() -> None:
    offenders = [
        f"{m}:{line}"
        for m in MODULES
        if m not in ABOVE_FACADE and not any(within(m, p) for p in ABOVE_FACADE_PACKAGES)
        for t, line in imports(m)
        if within(t, "daggerflow.engine")
    ]
    assert offenders == []


def test_the_console_knows_the_engine_only_through_http() -> None:
    """The console is a client of the REST API: it imports no engine, store, runtime or web
    module, so what it shows is what the API says (on Kafka: every worker's instances)."""
    offenders = [
        f"{m}:{line} imports {t}"
        for m in MODULES
        if within(m, "daggerflow.console")
        for t, line in imports(m)
        if t in MODULES and not within(t, "daggerflow.console")
    ]
    assert offenders == []


def test_only_tests_import_the_testing_kit() -> None:
    # daggerflow.testing may import pytest and the OpenTelemetry SDK; the engine (and the
    # package root, which every user imports) must work without them.
    offenders = [
        f"{m}:{line}"
        for m in MODULES
        if not within(m, "daggerflow.testing")
        for t, line in imports(m)
        if within(t, "daggerflow.testing")
    ]
    assert offenders == []


def test_model_and_machine_are_pure() -> None:
    offenders = []
    for m in MODULES:
        for layer, allowed in INWARD.items():
            if not within(m, layer):
                continue
            for t, line in imports(m):
                if within(t, "daggerflow") and not any(within(t, a) for a in allowed):
                    offenders.append(f"{m}:{line} imports {t}")
                if any(within(t, lib) for lib in (*IO_LIBRARIES, "asyncio")):
                    offenders.append(f"{m}:{line} imports {t}")
    assert offenders == []


def test_the_pipeline_imports_no_runtime_and_no_io_library() -> None:
    offenders = [
        f"{m}:{line} imports {t}"
        for m in MODULES
        if within(m, "daggerflow.pipeline")
        for t, line in imports(m)
        if any(within(t, f) for f in (*PIPELINE_FORBIDDEN, *IO_LIBRARIES))
    ]
    assert offenders == []


def test_the_runtimes_do_not_import_each_other() -> None:
    offenders = [
        f"{m}:{line} imports {t}"
        for m in MODULES
        for here, there in (("daggerflow.embedded", "daggerflow.kafka"), ("daggerflow.kafka", "daggerflow.embedded"))
        if within(m, here)
        for t, line in imports(m)
        if within(t, there)
    ]
    assert offenders == []


def test_io_libraries_stay_in_their_corners() -> None:
    homes = {
        "aiokafka": ("daggerflow.kafka",),
        "sqlite3": ("daggerflow.store.sqlite", "daggerflow.store.sqlite_checkpoint"),
        "rocksdict": ("daggerflow.store.rocksdb", "daggerflow.store.rocksdb_topics", "daggerflow.store.factory"),
        "starlette": ("daggerflow.web", "daggerflow.console"),
        "uvicorn": ("daggerflow.web", "daggerflow.console"),
        "jinja2": ("daggerflow.console",),
    }
    offenders = [
        f"{m}:{line} imports {t}"
        for m in MODULES
        for t, line in imports(m)
        for lib, allowed in homes.items()
        if within(t, lib) and not any(within(m, a) for a in allowed)
    ]
    assert offenders == []


def test_no_module_is_too_large_unless_the_design_says_why() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    explained = set(re.findall(r"`src/daggerflow/([\w/]+\.py)`[^\n]*\blines\b", design))
    too_large = []
    for path in MODULES.values():
        lines = len(path.read_text().splitlines())
        rel = path.relative_to(PACKAGE).as_posix()
        if lines > MAX_LINES and rel not in explained:
            too_large.append(f"{rel}: {lines} lines")
    assert too_large == [], "split them, or say in docs/design.md (`src/daggerflow/X.py` ... lines) why not"
