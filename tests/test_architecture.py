"""The import contract: packages import only downward, and modules form no cycle.

Layers, top to bottom (docs/architecture.md)::

    orchestrator  ->  workers  ->  storage  ->  contract

A module may import its own package and any package below it, never one above.
Every import counts, including those inside functions (a lazy import is still a
dependency). Module-level imports between the project's modules must also form no
cycle. The checker is plain ``ast``; the last tests prove that it catches an upward
import and a cycle.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("orchestrator", "workers", "storage", "contract")  # top first


def _imports(tree: ast.Module, module: str, *, top_level_only: bool) -> Iterable[tuple[str, int]]:
    """``(imported module, line)`` for every import in ``tree`` of ``module``."""
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = module.rsplit(".", 1)[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            yield name, node.lineno
            for alias in node.names:  # ``from workers import tasks`` names a module
                yield f"{name}.{alias.name}", node.lineno


def _sources(root: Path) -> dict[str, ast.Module]:
    trees = {}
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            trees[".".join(parts)] = ast.parse(path.read_text(), filename=str(path))
    return trees


def upward_imports(root: Path) -> list[str]:
    """Every import of a higher layer, as ``module:line imports name``."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    found = []
    for module, tree in _sources(root).items():
        own = rank[module.split(".")[0]]
        for name, line in _imports(tree, module, top_level_only=False):
            top = name.split(".")[0]
            if top in rank and rank[top] < own:
                found.append(f"{module}:{line} imports {name}")
    return sorted(set(found))


def import_cycles(root: Path) -> list[list[str]]:
    """Cycles among the project's modules through their module-level imports."""
    trees = _sources(root)
    graph = {
        module: {
            name
            for name, _ in _imports(tree, module, top_level_only=True)
            if name in trees and name != module and not module.startswith(f"{name}.")
        }
        for module, tree in trees.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_packages_import_only_downward() -> None:
    assert upward_imports(REPO) == []


def test_no_import_cycles() -> None:
    assert import_cycles(REPO) == []


def test_contract_imports_no_project_package() -> None:
    trees = _sources(REPO)
    for module, tree in trees.items():
        if module.startswith("contract"):
            names = {n.split(".")[0] for n, _ in _imports(tree, module, top_level_only=False)}
            assert not names & {"orchestrator", "workers", "storage"}, module


# What the control plane's commands and the extraction workers load: none of it may
# import a deep-learning framework (Keras/TensorFlow take about 8 s to import on a
# 2-core machine; ``submit-cv``, ``runs`` and ``cv-report`` paid that on every call).
KERAS_FREE = (
    "orchestrator.cli",
    "orchestrator.cv_submission",
    "orchestrator.submission",
    "orchestrator.variant_submission",
    "orchestrator.report",
    "workers.celery_app",
    "workers.tasks",
    "workers.recipes",
    "workers.trial_config",
    "workers.normalization",
    "workers.run_report",
)


def test_control_plane_and_extraction_do_not_import_keras() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {KERAS_FREE!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def _fake_repo(root: Path, files: dict[str, str]) -> Path:
    for layer in LAYERS:
        (root / layer).mkdir(parents=True, exist_ok=True)
        (root / layer / "__init__.py").write_text("")
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


def test_checker_catches_an_upward_import(tmp_path: Path) -> None:
    repo = _fake_repo(
        tmp_path,
        {
            "storage/store.py": "def f():\n    from workers.tasks import run\n",
            "workers/tasks.py": "from storage.store import f\nfrom contract import wire\n",
            "contract/wire.py": "import orchestrator.cli\n",
            "orchestrator/cli.py": "from workers import tasks\n",
        },
    )
    found = upward_imports(repo)
    assert found == [
        "contract.wire:1 imports orchestrator.cli",
        "storage.store:2 imports workers.tasks",
        "storage.store:2 imports workers.tasks.run",
    ]


def test_checker_catches_a_cycle_and_ignores_lazy_imports(tmp_path: Path) -> None:
    repo = _fake_repo(
        tmp_path,
        {
            "workers/app.py": "def create():\n    from workers import tasks\n",
            "workers/tasks.py": "from workers.app import create\n",
        },
    )
    assert import_cycles(repo) == []
    (repo / "workers/app.py").write_text("from workers import tasks\n")
    assert import_cycles(repo) == [["workers.app", "workers.tasks", "workers.app"]]


@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_is_a_package(layer: str) -> None:
    assert (REPO / layer / "__init__.py").is_file()
