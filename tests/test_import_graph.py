"""The package's modules import one another without a cycle: each layer stands on the ones below.

The graph is read from the source (``ast``), not from ``sys.modules``: every ``import`` counts,
including those inside functions and under ``if TYPE_CHECKING:`` (a cycle kept only for type hints
is still two modules that each need the other).
"""

from __future__ import annotations

import ast
from pathlib import Path

import airflow_provider_batches

PACKAGE = Path(airflow_provider_batches.__file__).parent


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(
    node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: set[str]
) -> set[str]:
    """The package modules an import statement depends on: ``from x import y`` is ``x.y`` when that is a
    module (a submodule importing a sibling through its package is not a cycle), else ``x``."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & modules
    if node.level:
        base = importer.split(".")[: None if is_package else -1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    found = {
        f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target for alias in node.names
    }
    return found & modules


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each module of the package at ``root`` and the package modules it imports."""
    paths = {module_name(path, root): path for path in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets |= imported(node, name, path.name == "__init__.py", set(paths))
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``a -> b -> a``), or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(module: str) -> list[str] | None:
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target in on_stack:
                return [*stack[stack.index(target) :], target]
            if target not in done and (cycle := visit(target)) is not None:
                return cycle
        stack.pop()
        on_stack.discard(module)
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done and (cycle := visit(module)) is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph(PACKAGE))

    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_sees_the_imports_that_matter() -> None:
    graph = import_graph(PACKAGE)

    assert "airflow_provider_batches.policy" in graph["airflow_provider_batches.hooks.anthropic"]
    assert (
        "airflow_provider_batches.hooks.anthropic" in graph["airflow_provider_batches.operators.rounds"]
    )  # type only
    assert "airflow_provider_batches.triggers.poller" in graph["airflow_provider_batches.triggers.batches"]


def test_the_wait_plans_do_not_import_the_hook_that_runs_them() -> None:
    assert (
        "airflow_provider_batches.hooks.anthropic"
        not in import_graph(PACKAGE)["airflow_provider_batches.waiting"]
    )


def test_the_request_budget_is_wired_in_one_place_the_hooks_runner() -> None:
    graph = import_graph(PACKAGE)

    budget = "airflow_provider_batches.budget"
    users = sorted(module for module, targets in graph.items() if budget in targets)

    assert users == ["airflow_provider_batches.hooks.anthropic"]


def test_a_cycle_through_a_type_checking_or_relative_import_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "low.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import high\n"
    )
    (package / "sub" / "high.py").write_text("def f():\n    from .. import low\n")

    cycle = find_cycle(import_graph(package))

    assert cycle is not None
    assert set(cycle) == {"pkg.low", "pkg.sub.high"}
