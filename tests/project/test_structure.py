"""The structure holds: the runtime imports no train/export/benchmarks outside the CLI and the torch backend,
no import circle in the tree (even counting TYPE_CHECKING imports), a small top level, and the layering
contracts (pyproject's [tool.importlinter], run by `make test`) fail when a layer imports upwards."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from paths import REPO

sys.path.insert(0, str(REPO / "tools"))

import import_cycles  # noqa: E402

ALLOWED_OUTSIDE = ("train", "export", "benchmarks")


@pytest.fixture(scope="module")
def graph():
    return import_cycles.import_graph()


def allowed_to_reach_outside(module: str) -> bool:
    return module.startswith("erudite_edge.cli.") or module == "erudite_edge.backends.torch_runner"


def test_the_runtime_imports_train_export_benchmarks_only_from_the_cli_and_the_torch_backend(graph) -> None:
    offenders = []
    for module in sorted(m for m in graph.modules if m == "erudite_edge" or m.startswith("erudite_edge.")):
        outside = sorted(m for m in graph.find_modules_directly_imported_by(module) if m.split(".")[0] in ALLOWED_OUTSIDE)
        if outside and not allowed_to_reach_outside(module):
            offenders.append(f"{module} -> {', '.join(outside)}")
    assert not offenders, offenders
    # and the allowed ones do exist: the check above would pass vacuously on an empty graph
    assert "train.checkpoint" in graph.find_modules_directly_imported_by("erudite_edge.backends.torch_runner")


def test_no_import_circle_in_the_tree(graph) -> None:
    """None in erudite_edge/, train/, export/ or benchmarks/ (train/prune.py once imported its own target search and
    Taylor modules, which import it: prune_run.py now composes the three)."""
    assert import_cycles.circles(graph) == []


def test_no_import_circle_inside_the_runtime_even_under_type_checking() -> None:
    """An `if TYPE_CHECKING:` import that closes a circle (resources.py once took RunOptions from pipeline.py,
    which imports resources.py) still ties the two modules: none inside erudite_edge/."""
    assert import_cycles.circles(import_cycles.import_graph(type_checking=True)) == []


def test_circles_are_found_where_there_are_some() -> None:
    """The circle finder itself: a 3-cycle, a 2-cycle and a chain."""

    class Graph:
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}, "g": set()}
        modules = set(edges)

        def find_modules_directly_imported_by(self, m: str) -> set[str]:
            return self.edges[m]

    assert import_cycles.circles(Graph()) == [["a", "b", "c"], ["d", "e"]]


def test_the_runtime_top_level_holds_at_most_eight_modules() -> None:
    top = sorted(p.name for p in (REPO / "erudite_edge").glob("*.py"))
    assert len(top) <= 8, top
    assert {"api.py", "errors.py", "__init__.py"} <= set(top)


@pytest.mark.slow  # lint-imports in a child process on a copy of the tree
def test_the_layering_contracts_fail_on_an_upward_import(tmp_path: Path) -> None:
    """A copy of the tree with one upward import (core -> inference) breaks the layers contract: lint-imports
    exits 1 and names it; the unmodified copy passes."""
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    for name in ("erudite_edge", "train", "export", "benchmarks"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    ok = subprocess.run([str(lint)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout[-3000:]
    (tmp_path / "erudite_edge" / "core" / "upward.py").write_text("from erudite_edge.inference import pipeline\n")
    broken = subprocess.run([str(lint)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert broken.returncode == 1 and "BROKEN" in broken.stdout
    assert "erudite_edge.core.upward -> erudite_edge.inference.pipeline" in broken.stdout
