"""tests/promises.md (README's promises and the tests that hold them) cannot drift: every test it names
exists (file, and function or class::method, read with `ast`, without importing or collecting anything), every
README section it names is a heading of README.md, and every row names a test or says why none can hold it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from paths import REPO

TABLE = REPO / "tests" / "promises.md"
NODE = re.compile(r"`(tests/[^`:\s]+\.py)::([^`\s]+)`")


def rows(text: str) -> list[tuple[str, str, str]]:
    """(promise, section, tests) of each row of the table under its header."""
    out = []
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| promise |") or line.startswith("| ---"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        assert len(cells) == 3, f"a row of {TABLE.name} without 3 cells: {line}"
        out.append((cells[0], cells[1], cells[2]))
    return out


def defined_tests(path: Path) -> set[str]:
    """`name` of each module-level test function and `Class::name` of each test method in a test file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{m.name}" for m in node.body
                         if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and m.name.startswith("test"))
    return names


def missing_tests(text: str, root: Path) -> list[str]:
    """The node ids named in the table that no test file under `root` defines (parameters `[...]` ignored)."""
    missing = []
    cache: dict[str, set[str]] = {}
    for _, _, tests in rows(text):
        for file, name in NODE.findall(tests):
            name = name.split("[", 1)[0]
            if file not in cache:
                cache[file] = defined_tests(root / file) if (root / file).is_file() else set()
            if name not in cache[file]:
                missing.append(f"{file}::{name}")
    return missing


def readme_headings(readme: str) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$", readme, re.MULTILINE)}


def test_every_test_named_in_the_table_exists() -> None:
    text = TABLE.read_text(encoding="utf-8")
    assert len(rows(text)) >= 50  # the table was read, not skipped
    assert missing_tests(text, REPO) == []


def test_every_section_is_a_readme_heading_and_every_row_is_held_or_says_why_not() -> None:
    headings = readme_headings((REPO / "README.md").read_text(encoding="utf-8"))
    for promise, section, tests in rows(TABLE.read_text(encoding="utf-8")):
        assert section in headings, f"{promise!r}: README has no section {section!r}"
        assert NODE.search(tests) or tests.startswith("untested:"), f"{promise!r}: no test named and no reason"


def test_the_check_finds_a_renamed_test_and_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_here():\n    pass\n\n\nclass TestC:\n    def test_m(self):\n        pass\n")
    table = ("| promise | README section | test that holds it |\n| --- | --- | --- |\n"
             "| a | S | `tests/test_x.py::test_here[p1]`, `tests/test_x.py::TestC::test_m` |\n"
             "| b | S | `tests/test_x.py::test_gone` |\n"
             "| c | S | `tests/test_nowhere.py::test_here` |\n")
    assert missing_tests(table, tmp_path) == ["tests/test_x.py::test_gone", "tests/test_nowhere.py::test_here"]
