"""Imports go one way: no cycle anywhere in app/, and the light parts stay light.

The graph is read from the source with `ast`, imports inside functions included
(a deferred import is still a dependency, and a cycle through one only waits for
the right call order to break). Importing `a.b.c` runs `a/b/__init__.py` too, so
it also depends on `a.b` — unless `a.b` is a package the importer lives in, which
is necessarily imported (or being imported) already.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def app_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(APP.rglob("*.py"))}


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement in the file names (absolute, relative resolved)."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return names


def import_graph() -> dict[str, set[str]]:
    modules = app_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        edges = set()
        for name in imported_names(path, module):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
                target = ".".join(parts[:i])
                if target in modules and target != module and target not in own_packages:
                    edges.add(target)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that starts and ends on the same module, or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for successor in sorted(graph[node]):
            if successor in on_path:
                return path[path.index(successor) :] + [successor]
            if successor not in done:
                found = visit(successor)
                if found:
                    return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return None


def test_the_graph_sees_deferred_relative_and_package_imports(tmp_path):
    """The reader itself: an import inside a function, a relative import and a package's __init__ all count."""
    graph = import_graph()
    assert "app.cli.entrypoint" in graph["app.cli"]  # the package's __init__ re-exports main
    assert "app.demo" in graph["app.cli.demo"]
    assert "app.db.migrate" in graph["app.cli.serve"]  # imported inside run_serve's helper
    assert "app.cli" not in graph["app.cli.render"]  # its own package is no dependency
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("def f():\n    from . import other\n    from .sub import thing\n")
    assert imported_names(package / "mod.py", "pkg.mod") == {"pkg", "pkg.other", "pkg.sub", "pkg.sub.thing"}


def test_no_import_cycle_in_app():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_client_imports_nothing_server_side_nor_the_cli():
    """Read from the source: httpx itself may pull in rich, but the client must not draw anything."""
    names = imported_names(APP / "client.py", "app.client")
    roots = {name.split(".")[0] for name in names}
    assert not roots & {"fastapi", "sqlalchemy", "torch", "rich", "numpy"}, roots
    assert names & set(app_modules()) <= {"app.jobs.status", "app.uploads"}  # statuses; upload bodies (client side)
    demo_names = imported_names(APP / "demo.py", "app.demo")
    assert not any(name == "app.cli" or name.startswith("app.cli.") for name in demo_names)


def loaded_modules(module: str) -> set[str]:
    """The top-level packages loaded by importing `module` in a fresh interpreter."""
    code = f"import json, sys, {module}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("app.learning", {"fastapi", "sqlalchemy"}),
        ("app.client", {"fastapi", "sqlalchemy", "torch"}),
        ("app.reports", {"fastapi", "sqlalchemy", "torch"}),  # `retain matrix --png` on a laptop without the server
    ],
)
def test_light_packages_load_no_server_code(module, forbidden):
    loaded = loaded_modules(module)
    assert not loaded & forbidden, f"importing {module} loaded {sorted(loaded & forbidden)}"
