"""README's TensorRT support matrix, the Dockerfiles (each base tag with its own labels, a smoke step, an
onnxruntime-gpu pin of the base's CUDA major) and the `trt` extra say the same thing."""

from __future__ import annotations

import re

import pytest
import tomllib
from packaging.requirements import Requirement

from paths import REPO, doc_section

ROOT = REPO
DOCKERFILES = ["docker/Dockerfile.jetpack6", "docker/Dockerfile.x86"]


def matrix() -> dict[str, dict[str, str]]:
    section = doc_section("## TensorRT support matrix")  # docs/tensorrt.md
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


def stages(dockerfile: str) -> dict[str, str]:
    """Each named stage of a Dockerfile -> its text (from its FROM to the next FROM)."""
    text = (ROOT / dockerfile).read_text()
    blocks = re.split(r"(?m)^(?=FROM )", text)
    out = {}
    for block in blocks:
        m = re.match(r"FROM \S+ AS (\S+)", block)
        if m:
            out[m.group(1)] = block
    return out


def labels_in(text: str) -> dict[str, str]:
    return dict(re.findall(r'org\.erudite-edge\.(\w+)="([^"]+)"', text))


def tag_table(dockerfile: str) -> tuple[str, str, dict[str, dict[str, str]]]:
    """(the build arg, its default, {tag: the labels of the stage `labels-<tag>`}) of a Dockerfile whose image
    is built FROM the labels stage its tag names."""
    text = (ROOT / dockerfile).read_text()
    final = re.findall(r"(?m)^FROM (\S+)\s*$", text)
    assert final and final[-1].startswith("labels-${"), f"{dockerfile}: the image is not built FROM labels-${{TAG}}"
    arg = final[-1][len("labels-${"):-1]
    default = re.search(rf"(?m)^ARG {arg}=(\S+)", text)
    assert default, f"{dockerfile}: no default for {arg}"
    table = {name[len("labels-"):]: labels_in(block) for name, block in stages(dockerfile).items() if name.startswith("labels-")}
    return arg, default.group(1), table


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_labels_follow_the_tag(dockerfile):
    """Every base tag the Dockerfile takes has its own labels, each naming its README row's versions; the
    default tag is one of them (issue 24 item 10: JetPack 6.0's tag was built with 6.1's labels)."""
    arg, default, table = tag_table(dockerfile)
    assert default in table, f"{dockerfile}: {arg}={default} has no labels stage"
    rows = matrix()
    for tag, got in table.items():
        row = rows[got["platform"]]
        for field, column in (("tensorrt", "TensorRT"), ("cuda", "CUDA"), ("python", "Python")):
            assert version_matches(row[column], got[field]), f"{dockerfile} {tag}: {field} {got[field]} vs README {row[column]!r}"
        assert dockerfile in row["install"]
        if tag != default:  # README says how to build it
            assert f"{arg}={tag}" in row["install"], f"README's {got['platform']!r} row does not say --build-arg {arg}={tag}"
        env = re.search(r"ERUDITE_EDGE_TENSORRT=(\S+)", stages(dockerfile)[f"labels-{tag}"])
        assert env and env.group(1) == got["tensorrt"], f"{dockerfile} {tag}: the smoke step checks another TensorRT"


def test_jetpack6_tag_to_versions():
    """The L4T tags and what JetPack ships with each (NVIDIA's JetPack 6.0 / 6.1 release notes)."""
    _, default, table = tag_table("docker/Dockerfile.jetpack6")
    got = {tag: (t["platform"], t["tensorrt"], t["cuda"]) for tag, t in table.items()}
    assert default == "r36.4.0"
    assert got == {"r36.3.0": ("JetPack 6.0 (L4T r36.3)", "8.6", "12.2"),
                   "r36.4.0": ("JetPack 6.1 / 6.2 (L4T r36.4)", "10.3", "12.6")}
    rows = matrix()
    for platform, trt, cuda in got.values():
        assert (rows[platform]["TensorRT"], rows[platform]["CUDA"]) == (trt, cuda)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_smoke_step_after_the_install(dockerfile):
    text = (ROOT / dockerfile).read_text()
    smoke = 'RUN python3 -c "import tensorrt, cv2, numpy, polygraphy, erudite_edge"'
    assert smoke in text and text.index(smoke) > text.rindex("pip install"), f"{dockerfile}: no smoke step after the install"
    assert "tensorrt.__version__" in text[text.index(smoke):] and "ERUDITE_EDGE_TENSORRT" in text[text.index(smoke):]


# onnxruntime-gpu's PyPI wheels and the CUDA major they are built for, as each release's `cuda` extra names
# its CUDA runtime wheel (pip's metadata of 1.19.0-1.26.0: nvidia-cuda-runtime-cu12; 1.27.0 on:
# nvidia-cuda-runtime-cu13 or nvidia-cuda-runtime 13). 1.19 is the first CUDA 12 default on PyPI.
ORT_GPU_CUDA = {12: ("1.19.0", "1.26.0"), 13: ("1.27.0", None)}


def test_x86_onnxruntime_gpu_pin_matches_the_base_cuda_major():
    from packaging.specifiers import SpecifierSet

    _, default, table = tag_table("docker/Dockerfile.x86")
    block = stages("docker/Dockerfile.x86")[f"labels-{default}"]
    m = re.search(r'ERUDITE_EDGE_ORT_GPU="onnxruntime-gpu([^"]+)"', block)
    assert m, "the x86 image pins onnxruntime-gpu per base"
    spec = SpecifierSet(m.group(1))
    assert table[default]["onnxruntime_gpu"] == m.group(1)
    major = int(table[default]["cuda"].split(".")[0])
    lo, hi = ORT_GPU_CUDA[major]
    assert spec.contains(lo) and (hi is None or spec.contains(hi))
    for other, (olo, ohi) in ORT_GPU_CUDA.items():
        if other != major:
            assert not spec.contains(olo) and (ohi is None or not spec.contains(ohi)), f"{spec} admits CUDA {other} builds"
    text = (ROOT / "docker/Dockerfile.x86").read_text()
    assert '"${ERUDITE_EDGE_ORT_GPU}"' in text and "'.[gpu]'" not in text  # the unpinned extra is not installed


def test_jetpack60_build_arg_matches_its_row():
    text = (ROOT / "docker/Dockerfile.jetpack6").read_text()
    m = re.search(r"(r36\.3\.0) is JetPack 6\.0: TensorRT (\d+\.\d+), CUDA (\d+\.\d+)", text)
    assert m, "the Dockerfile says which L4T tag is JetPack 6.0"
    row = matrix()["JetPack 6.0 (L4T r36.3)"]
    assert (row["TensorRT"], row["CUDA"]) == (m.group(2), m.group(3))
    assert f"L4T_TAG={m.group(1)}" in row["install"]
    assert re.search(r"ARG L4T_TAG=r36\.4\.0", text)


def test_trt_extra_admits_the_supported_rows_only():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    spec = next(Requirement(r).specifier for r in extras["trt"] if Requirement(r).name == "tensorrt")
    rows = matrix()
    for name, row in rows.items():
        version = row["TensorRT"].replace(".x", ".0")
        supported = row["install"] != "not supported" and not row["install"].startswith("not installed")
        assert spec.contains(version) == supported, f"{name}: TensorRT {row['TensorRT']} vs the trt extra's {spec}"
