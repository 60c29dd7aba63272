"""The package's layout holds: no import cycles, faust, mode and aiokafka only behind the engine,
the bench and the dev tools outside a worker's imports, and small modules.

Read from the source (every import statement, those inside functions and TYPE_CHECKING blocks
included), not from what happens to be imported at run time.
"""

from __future__ import annotations

import ast
import tomllib
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "pipeline"
TEMPLATES = PACKAGE.parent / "templates"
ENGINE_ONLY = ("faust", "mode", "aiokafka")
#: "About 400 lines": a module past this wants splitting.
MAX_LINES = 420


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


@cache
def imports(module: str) -> frozenset[str]:
    """Every module ``module`` imports (absolute names; ``from x import y`` counts ``x.y``
    when that is a module)."""
    path = modules()[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(found)


def internal_imports(module: str) -> set[str]:
    return {name for name in imports(module) if name in modules() and name != module}


def test_there_are_no_import_cycles() -> None:
    cycles = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for imported in sorted(internal_imports(module)):
            # A package's own __init__ importing its modules is not a cycle of theirs.
            if not module.startswith(imported + "."):
                visit(imported, [*path, module])
        done.add(module)

    for module in sorted(modules()):
        visit(module, [])
    assert cycles == []


def test_only_the_engine_imports_faust_mode_or_aiokafka() -> None:
    outside = {
        module: sorted(name for name in imports(module) if name.split(".")[0] in ENGINE_ONLY)
        for module in modules()
        if not module.startswith("pipeline.engine")
    }
    assert {module: names for module, names in outside.items() if names} == {}


def reachable(start: str) -> set[str]:
    seen: set[str] = set()
    pending = [start]
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        pending.extend(internal_imports(module))
    return seen


def test_a_worker_never_imports_the_bench_or_the_dev_tools() -> None:
    loaded = reachable("pipeline.service.worker")
    assert "pipeline.usage.key_agents" in loaded  # the walk does follow the worker's imports
    assert sorted(m for m in loaded if m.startswith(("pipeline.bench", "pipeline.devtools"))) == []


def test_modules_stay_small() -> None:
    sizes = {module: len(path.read_text().splitlines()) for module, path in modules().items()}
    assert {module: lines for module, lines in sizes.items() if lines > MAX_LINES} == {}


def test_every_module_lives_in_a_subpackage_but_the_shared_ones() -> None:
    top_level = {module for module in modules() if module.count(".") == 1}
    assert top_level == {
        "pipeline.__main__",
        "pipeline.config",
        "pipeline.errors",
        "pipeline.resources",
        "pipeline.wiring",
    } | {module for module in top_level if (PACKAGE / module.split(".")[1]).is_dir()}


def test_the_wheel_lists_every_subpackage_and_the_shipped_data() -> None:
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    on_disk = {module_name(path) for path in PACKAGE.rglob("__init__.py")}
    templates = {f"pipeline.templates.{path.name}" for path in TEMPLATES.iterdir() if path.is_dir()}
    shipped = {"pipeline.templates", "pipeline.schemas", *templates}
    assert set(setuptools["packages"]) == on_disk | shipped
    assert setuptools["package-dir"] == {
        "pipeline.templates": "templates",
        "pipeline.schemas": "schemas",
    }
    # Every folder of templates ships its files.
    data = setuptools["package-data"]
    for name in templates:
        folder = TEMPLATES / name.rsplit(".", 1)[1]
        suffixes = {f"*{path.suffix}" for path in folder.iterdir() if path.is_file()}
        assert suffixes <= set(data.get(name, [])), name
