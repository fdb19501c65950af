"""The stages of `make test` (`-m "not slow"`, then `-m slow`) run every test exactly once: tools/test_split.py,
run for real (pytest's own collection, in child processes) on a small test tree, passes a true split and names
the tests a wrong one leaves out or runs twice; and the `slow` marker is registered (--strict-markers)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

from paths import REPO

sys.path.insert(0, str(REPO / "tools"))

import test_split  # noqa: E402

pytestmark = pytest.mark.slow  # real pytest processes, ~1 s of CPU each

TESTS = '''
import pytest

def test_fast():
    pass

@pytest.mark.slow
def test_trains():
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_each(n):
    pass
'''


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("split")
    (root / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\nmarkers =\n    slow: long\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_a.py").write_text(textwrap.dedent(TESTS))
    return root


def test_not_slow_and_slow_split_the_run(tree, capsys) -> None:
    code = test_split.main(["--stage", "not slow", "--stage", "slow", "--dir", str(tree)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 (not slow) + 1 (slow) = 4 == 4 in one run" in out


def test_a_test_in_no_stage_or_in_two_is_named(tree) -> None:
    everything = test_split.collect(tree, ["tests"], None)
    slow, slow_or_each = (test_split.collect(tree, ["tests"], expr) for expr in ("slow", "slow or parametrize"))
    assert len(everything) == 4 and slow == ["tests/test_a.py::test_trains"]
    assert test_split.split_problems(everything, {"slow": slow}) == [
        "in no stage: tests/test_a.py::test_each[1]", "in no stage: tests/test_a.py::test_each[2]",
        "in no stage: tests/test_a.py::test_fast"]
    assert test_split.split_problems(everything, {"not slow": [i for i in everything if i not in slow],
                                                  "slow or parametrize": slow_or_each}) == [
        "in 2 stages: tests/test_a.py::test_each[1]", "in 2 stages: tests/test_a.py::test_each[2]"]


def test_the_slow_marker_is_registered_and_markers_are_strict() -> None:
    opts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in opts["addopts"].split()
    assert any(m.startswith("slow:") for m in opts["markers"])
