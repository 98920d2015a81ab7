"""The package's import structure: no cycles, the models free of provider code, and no import
hidden inside a function (move the shared thing to a lower module instead).

Read from the source with ``ast``; imports under ``if TYPE_CHECKING:`` are for annotations and
never run, so they don't count.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "django_conversions"

# Imports that have to wait, each with its reason.
DEFERRED = {
    # Django's documented place for what needs the models: the app registry is ready there.
    ("django_conversions.apps", "ready"),
    ("django_conversions.contrib.oscar.apps", "ready"),
    # The package is imported before the app registry is ready; track() needs the models.
    ("django_conversions", "track"),
    ("django_conversions", "attribute_order"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if "migrations" not in path.parts and "tests" not in path.parts
}


def _runtime_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements that run on import (``if TYPE_CHECKING`` bodies skipped)."""
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _runtime_statements(node.orelse)
        elif isinstance(node, ast.If):
            yield from _runtime_statements(node.body)
            yield from _runtime_statements(node.orelse)
        elif isinstance(node, ast.Try):
            yield from _runtime_statements(node.body)
            for handler in node.handlers:
                yield from _runtime_statements(handler.body)
            yield from _runtime_statements(node.orelse)
        else:
            yield node


def imported_modules(name: str) -> set[str]:
    """The package's modules that importing ``name`` imports directly."""
    path = MODULES[name]
    found: set[str] = set()
    for node in _runtime_statements(ast.parse(path.read_text()).body):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            targets = [module for module in submodules if module in MODULES]
            # "from package import submodule" inside the package needs no more of the package.
            if len(targets) < len(submodules) or not name.startswith(base + "."):
                targets.append(base)
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def closure(name: str, graph: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        for module in graph[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    return seen


GRAPH = {name: imported_modules(name) for name in MODULES}


def test_no_module_imports_itself_back() -> None:
    cycles = sorted(name for name in GRAPH if name in closure(name, GRAPH))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_the_models_import_no_provider_code() -> None:
    reached = closure("django_conversions.models", GRAPH)
    assert not {m for m in reached if m.startswith("django_conversions.providers")}


def _imports_in_functions(tree: ast.Module) -> Iterator[tuple[str, int]]:
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    yield function.name, node.lineno


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_inside_a_function(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    hidden = [
        f"line {line} in {function}()"
        for function, line in _imports_in_functions(tree)
        if (name, function) not in DEFERRED
    ]
    assert hidden == []
