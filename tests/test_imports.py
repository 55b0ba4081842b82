"""The plugin's import graph: loading weights never loads the trainer, and the plugin's modules form no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import timm_uscl

PLUGIN = Path(timm_uscl.__file__).parent


def _plugin_imports() -> dict[str, set[str]]:
    """Module name -> the plugin modules it imports (relative ``from .x import`` and ``timm_uscl.x``)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PLUGIN.glob("*.py")):
        name = path.stem
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    deps |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
                elif node.module and node.module.startswith("timm_uscl."):
                    deps.add(node.module.split(".")[1])
        graph[name] = deps - {name}
    return graph


def test_importing_the_plugin_loads_no_trainer_module():
    code = "import sys, timm_uscl; print(sorted(m for m in sys.modules if m.startswith('timm_uscl.training')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_plugin_modules_import_each_other_without_cycles_and_never_the_trainer():
    graph = _plugin_imports()
    assert all("training" not in deps for deps in graph.values())
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done or name not in graph:
            return
        for dep in graph[name]:
            visit(dep, (*path, name))
        done.add(name)

    for module in graph:
        visit(module, ())


def test_plugin_imports_stand_at_the_top_of_each_module():
    late = [
        f"{path.name}:{node.lineno}"
        for path in sorted(PLUGIN.glob("*.py"))
        for func in ast.walk(ast.parse(path.read_text()))
        if isinstance(func, ast.FunctionDef)
        for node in ast.walk(func)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert late == [], late


TRAINER = PLUGIN.parent / "training" if (PLUGIN.parent / "training").is_dir() else PLUGIN / "training"
# what each trainer subpackage may import from the rest of the trainer (CONTRIBUTING.md, "Allowed import directions")
ALLOWED = {
    "data": {"errors", "_lazy"},
    "meta": {"errors", "losses", "dist", "model", "_lazy"},
    "evaluation": {"errors", "config", "provenance", "runtime", "checkpoint", "data", "_lazy"},
}


def _trainer_imports(package: str) -> set[str]:
    """The top-level trainer modules and subpackages that ``training/<package>/`` imports, nested packages included
    (``from ..x`` in ``data/``, ``from ...x`` in ``data/sources/``)."""
    found = set()
    for path in sorted((TRAINER / package).rglob("*.py")):
        top = len(path.relative_to(TRAINER / package).parts) + 1  # the level whose dots reach training/
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == top:
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
    return found


def test_trainer_subpackages_import_only_in_the_allowed_directions():
    for package, allowed in ALLOWED.items():
        assert _trainer_imports(package) <= allowed, (package, _trainer_imports(package) - allowed)
