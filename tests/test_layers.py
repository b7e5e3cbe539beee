"""The layers of DESIGN.md, checked on the source: every import of a project module (at the top of a
module or inside a function) goes to a lower layer or stays within its own package, and there is
no import cycle among the project's modules.

import-linter (`lint-imports`, run by .ci/run) checks the packages; it cannot see the single-file
modules `settings` and `worker` (grimp analyses packages only), so this test reads every file.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Lowest first. A module may import from its own layer's package or any lower layer.
LAYERS = [
    ("workflows",),
    ("settings", "models"),
    ("providers",),
    ("worker",),
    ("tasks",),
    ("chorus",),
    ("chorus.cli",),
]
PROJECT = ("workflows", "settings", "models", "providers", "worker", "tasks", "chorus")
UI_PACKAGES = ("typer", "rich")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def project_files() -> dict[str, Path]:
    files = {module_name(ROOT / f"{m}.py"): ROOT / f"{m}.py" for m in ("settings", "worker")}
    for package in ("workflows", "models", "providers", "tasks", "chorus"):
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                files[module_name(path)] = path
    return files


def imports_of(name: str, path: Path) -> set[str]:
    """Every module `name` imports, wherever the import statement sits (top level or in a function)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def resolve(target: str, modules: set[str]) -> str | None:
    """The project module an import names (`from models import repo` names `models.repo`)."""
    while target:
        if target in modules:
            return target
        target = target.rpartition(".")[0]
    return None


def layer_of(module: str) -> int:
    best = -1
    for rank, roots in enumerate(LAYERS):
        if any(module == r or module.startswith(r + ".") for r in roots):
            best = rank  # the most specific (highest) match wins: chorus.cli over chorus
    assert best >= 0, module
    return best


@functools.cache
def graph() -> dict[str, set[str]]:
    files = project_files()
    modules = set(files)
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in files.items():
        for target in imports_of(name, path):
            found = resolve(target, modules)
            if found is not None and found != name:
                edges[name].add(found)
    return edges


def test_every_import_goes_down_the_layers():
    wrong = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets if layer_of(b) > layer_of(a))
    assert wrong == []


def test_tasks_never_import_the_client_library():
    wrong = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                   if a.startswith("tasks") and b.startswith("chorus"))
    assert wrong == []


def test_only_the_cli_imports_typer_or_rich():
    wrong = []
    for name, path in project_files().items():
        if name == "chorus.cli" or name.startswith("chorus.cli."):
            continue
        wrong += [f"{name} -> {t}" for t in imports_of(name, path) if t.split(".")[0] in UI_PACKAGES]
    assert wrong == []


def test_there_is_no_import_cycle_among_the_project_modules():
    edges = graph()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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

    for module in sorted(project_files()):
        if module not in index:
            visit(module)
    assert cycles == []


@pytest.mark.parametrize("module", ["workflows.voting", "chorus.cli.base", "worker"])
def test_the_checker_sees_the_imports_it_judges(module):
    """The checks above can fail: each of these modules imports another project module."""
    assert graph()[module]


def test_an_import_inside_a_function_says_why_beside_it():
    """Imports inside functions are for heavy optional dependencies, with the reason in a comment on
    the line or just above; never to hide a circle (the cycle test above would not see one then)."""
    silent = []
    for name, path in project_files().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    near = lines[max(0, node.lineno - 4):node.lineno]
                    if not any("#" in line for line in near):
                        silent.append(f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert silent == []
