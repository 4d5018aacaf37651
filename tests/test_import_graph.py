"""The package's modules import one another without a cycle: each layer stands on the ones below.

The graph is read from the source (``ast``), not from ``sys.modules``: every ``import`` counts,
including those inside functions and under ``if TYPE_CHECKING:`` (a cycle kept only for type hints
is still two modules that each need the other). The layers are read from ARCHITECTURE.md's table,
so the page and the code cannot drift apart: every module is placed there, and none imports a
layer above its own.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import airflow_provider_batches

PACKAGE = Path(airflow_provider_batches.__file__).parent
ARCHITECTURE = PACKAGE.parent / "ARCHITECTURE.md"
#: ARCHITECTURE.md's layers, lowest first: a module imports only from its own layer and those below.
LAYERS = ("data", "policy", "plans", "I/O", "tasks", "UI")
#: The other side of the wire and its pytest plugin: they import only each other, and nothing of the
#: provider imports them.
BESIDE = "beside"


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


def module_paths(root: Path) -> dict[str, Path]:
    return {module_name(path, root): path for path in root.rglob("*.py")}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each module of the package at ``root`` and the package modules it imports."""
    paths = module_paths(root)
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


# -- layers -----------------------------------------------------------------------------------------


def documented_layers(page: str) -> dict[str, str]:
    """The module column of the page's layer table: each path (``hooks/anthropic.py``, or a folder
    ``emulator/`` for all of it) and its layer (a row with an empty layer cell is in the one above)."""
    layers: dict[str, str] = {}
    layer = ""
    for line in page.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or cells[0] == "layer" or set(line) <= set("|- "):
            continue
        layer = cells[0].split(" (")[0] or layer
        for path in re.findall(r"`([^`]+)`", cells[1]):
            layers[path] = layer
    return layers


def layer_of(module: Path, root: Path, documented: dict[str, str], imports_nothing: bool) -> str | None:
    """``module``'s layer: its own row, else the row of the folder holding it; a package's
    ``__init__`` that imports nothing is on the ground floor."""
    relative = module.relative_to(root).as_posix()
    if relative in documented:
        return documented[relative]
    folders = [path for path in documented if path.endswith("/") and relative.startswith(path)]
    if folders:
        return documented[max(folders, key=len)]
    return LAYERS[0] if module.name == "__init__.py" and imports_nothing else None


def module_layers(root: Path, page: str) -> dict[str, str | None]:
    documented = documented_layers(page)
    graph = import_graph(root)
    return {
        name: layer_of(path, root, documented, not graph[name]) for name, path in module_paths(root).items()
    }


def upward_imports(root: Path, page: str) -> list[str]:
    """Every import of a module in a layer above the importer's, or across the line to the emulator's
    side, as ``importer (layer) -> imported (layer)``."""
    layers = module_layers(root, page)
    found = []
    for importer, targets in sorted(import_graph(root).items()):
        for target in sorted(targets):
            mine, theirs = layers[importer], layers[target]
            if mine is None or theirs is None:
                continue  # unplaced: test_every_module_is_placed_in_a_layer says so
            across = BESIDE in (mine, theirs) and mine != theirs
            if across or (BESIDE not in (mine, theirs) and LAYERS.index(theirs) > LAYERS.index(mine)):
                found.append(f"{importer} ({mine}) -> {target} ({theirs})")
    return found


def test_every_module_is_placed_in_a_layer_of_architecture_md() -> None:
    layers = module_layers(PACKAGE, ARCHITECTURE.read_text(encoding="utf-8"))

    assert sorted(name for name, layer in layers.items() if layer is None) == []
    assert {layer for layer in layers.values()} <= {*LAYERS, BESIDE}


def test_every_module_architecture_md_places_exists() -> None:
    documented = documented_layers(ARCHITECTURE.read_text(encoding="utf-8"))

    assert sorted(path for path in documented if not (PACKAGE / path).exists()) == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports(PACKAGE, ARCHITECTURE.read_text(encoding="utf-8")) == []


PAGE = """
| layer | module | owns |
|---|---|---|
| data | `models.py` | the objects |
| plans (no I/O) | `plan.py` | a plan |
| | `other.py` | beside the plan |
| I/O | `hook.py` | the client |
| beside | `emulator/` | the server |
"""


def fake_package(tmp_path: Path, **modules: str) -> Path:
    package = tmp_path / "pkg"
    plain = dict.fromkeys(("__init__", "models", "plan", "other", "hook"), "")
    for name, source in {**plain, **modules}.items():
        (package / f"{name}.py").parent.mkdir(parents=True, exist_ok=True)
        (package / f"{name}.py").write_text(source)
    return package


def test_the_layers_are_read_from_the_table_rows_under_their_layer() -> None:
    assert documented_layers(PAGE) == {
        "models.py": "data",
        "plan.py": "plans",
        "other.py": "plans",
        "hook.py": "I/O",
        "emulator/": "beside",
    }


@pytest.mark.parametrize(
    "source",
    [
        "from pkg import hook\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.hook import Hook\n",
        "def wait(h):\n    from . import hook\n",
    ],
    ids=["at the top", "for type hints only", "inside a function"],
)
def test_a_plan_importing_the_hook_is_an_upward_import(tmp_path: Path, source: str) -> None:
    package = fake_package(tmp_path, plan=source, hook="from pkg import models, other\n")

    assert upward_imports(package, PAGE) == ["pkg.plan (plans) -> pkg.hook (I/O)"]


def test_the_emulators_side_and_the_providers_never_import_each_other(tmp_path: Path) -> None:
    package = fake_package(
        tmp_path,
        **{"emulator/__init__": "from pkg.emulator import server\n", "emulator/server": "import pkg.plan\n"},
    )
    (package / "hook.py").write_text("from pkg.emulator import server\n")

    assert upward_imports(package, PAGE) == [
        "pkg.emulator.server (beside) -> pkg.plan (plans)",
        "pkg.hook (I/O) -> pkg.emulator.server (beside)",
    ]


def test_a_module_the_table_does_not_place_has_no_layer(tmp_path: Path) -> None:
    package = fake_package(tmp_path, extra="from pkg import models\n", **{"sub/__init__": ""})

    layers = module_layers(package, PAGE)

    assert layers["pkg.extra"] is None
    assert layers["pkg.sub"] == "data"  # an empty package __init__
