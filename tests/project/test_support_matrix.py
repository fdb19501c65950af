"""README's TensorRT support matrix, the Dockerfiles and the `trt` extra say the same thing."""

from __future__ import annotations

import re

import pytest
import tomllib
from packaging.requirements import Requirement

from paths import REPO

ROOT = REPO
DOCKERFILES = ["docker/Dockerfile.jetpack6", "docker/Dockerfile.x86"]


def matrix() -> dict[str, dict[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### TensorRT support matrix"):]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != len(header):
            break
        table[cells[0]] = dict(zip(header, cells))
    return table


def version_matches(cell: str, version: str) -> bool:
    """`version` (e.g. 10.3) is named by a table cell: exactly, by MAJOR.x, or inside a range A-B."""
    for lo, hi in re.findall(r"(\d+\.\d+)-(\d+\.\d+)", cell):
        as_tuple = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
        if as_tuple(lo) <= as_tuple(version) <= as_tuple(hi):
            return True
    for token in re.findall(r"\d+(?:\.(?:\d+|x))?", cell):
        if token == version or (token.endswith(".x") and version.split(".")[0] == token[:-2]):
            return True
    return False


def labels(dockerfile: str) -> dict[str, str]:
    text = (ROOT / dockerfile).read_text()
    return dict(re.findall(r'org\.erudite-edge\.(\w+)="([^"]+)"', text))


def test_matrix_has_the_rows_the_issue_names():
    rows = matrix()
    assert list(rows) == ["JetPack 5.1 (L4T r35)", "JetPack 6.0 (L4T r36.3)", "JetPack 6.1 / 6.2 (L4T r36.4)",
                          "x86 + NVIDIA GPU", "TensorRT 11"]
    assert rows["JetPack 6.0 (L4T r36.3)"]["TensorRT"] == "8.6"  # not 10: JetPack 6.0 ships TensorRT 8.6
    assert rows["JetPack 6.1 / 6.2 (L4T r36.4)"]["TensorRT"] == "10.3"
    for name in ("JetPack 5.1 (L4T r35)",):
        assert rows[name]["install"] == "not supported" and "Python >= 3.10" in rows[name]["what works"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_names_the_versions_of_its_row(dockerfile):
    got = labels(dockerfile)
    row = matrix()[got["platform"]]
    for field, column in (("tensorrt", "TensorRT"), ("cuda", "CUDA"), ("python", "Python")):
        assert version_matches(row[column], got[field]), f"{dockerfile}: {field} {got[field]} vs README {row[column]!r}"
    assert dockerfile in row["install"]


def test_jetpack60_build_arg_matches_its_row():
    text = (ROOT / "docker/Dockerfile.jetpack6").read_text()
    m = re.search(r"(r36\.3\.0) is JetPack 6\.0: TensorRT (\d+\.\d+), CUDA (\d+\.\d+)", text)
    assert m, "the Dockerfile says which L4T tag is JetPack 6.0"
    row = matrix()["JetPack 6.0 (L4T r36.3)"]
    assert (row["TensorRT"], row["CUDA"]) == (m.group(2), m.group(3))
    assert f"L4T_TAG={m.group(1)}" in row["install"]
    assert re.search(r"ARG L4T_TAG=r36\.4\.0", text) and "r36.4" in labels("docker/Dockerfile.jetpack6")["platform"]


def test_trt_extra_admits_the_supported_rows_only():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    spec = next(Requirement(r).specifier for r in extras["trt"] if Requirement(r).name == "tensorrt")
    rows = matrix()
    for name, row in rows.items():
        version = row["TensorRT"].replace(".x", ".0")
        supported = row["install"] != "not supported" and not row["install"].startswith("not installed")
        assert spec.contains(version) == supported, f"{name}: TensorRT {row['TensorRT']} vs the trt extra's {spec}"
