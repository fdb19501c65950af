"""Every extra that users install resolves, for real, against PyPI: no pin fights another.

What is resolved for real: `pip install --dry-run --ignore-installed --report` of the project's own
requirements (read from pyproject.toml) for `.[train,trt]`, `.[trt]`, `.[onnx]`, `.[bench]` and
`.[gpu]`, everything except the `tensorrt` requirement itself. `tensorrt` cannot be resolved here:
its chain ends in `tensorrt-cuXX-libs`, a stub sdist that downloads the real wheel from NVIDIA's own
index (pypi.nvidia.com), which is unreachable. Instead the TensorRT pins are checked against the
metadata NVIDIA publishes on PyPI: the newest `tensorrt` the extra allows, the `tensorrt_cuXX`
package it requires, and a binding wheel for this Python. What stays unchecked (said in a warning
when the test runs): the dependencies of the real `tensorrt-cuXX-libs` wheel.

Needs PyPI: marked `network`, skipped with one line when pypi.org cannot be reached
(`-m 'not network'` deselects it offline). CI has PyPI, so there it runs.
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import tarfile
import urllib.request
import warnings
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from paths import REPO

pytestmark = [pytest.mark.network, pytest.mark.slow]  # slow: pip's resolver in child processes

ROOT = REPO
EXTRA_SETS = (("train", "trt"), ("trt",), ("onnx",), ("bench",), ("gpu",))
SIMPLE = "https://pypi.org/simple"
LIBS_UNCHECKED = (
    "not checked here: the dependencies of the real tensorrt-cuXX-libs wheel (the stub sdist on PyPI fetches it "
    "from pypi.nvidia.com, unreachable here); tensorrt itself was checked against its published metadata only"
)


def pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False


def project_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in meta["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in meta["optional-dependencies"][extra]]
    return reqs


def is_tensorrt(req: Requirement) -> bool:
    return canonicalize_name(req.name) == "tensorrt"


def start_resolve(extras: tuple[str, ...], out: Path) -> subprocess.Popen[str]:
    reqs = [str(r) for r in project_requirements(extras) if not is_tensorrt(r)]
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--disable-pip-version-check", "--report", str(out), *reqs]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict[tuple[str, ...], dict[str, str] | str]:
    """extras -> {distribution: version} of what pip would install, or pip's own output when it fails.
    The five resolutions run at once (pip waits on the network, not the CPU)."""
    if not pypi_reachable():
        pytest.skip("PyPI (pypi.org:443) is unreachable: the resolver test needs it (deselect with -m 'not network')")
    tmp = tmp_path_factory.mktemp("resolve")
    procs = {extras: (start_resolve(extras, tmp / f"{'-'.join(extras)}.json"), tmp / f"{'-'.join(extras)}.json")
             for extras in EXTRA_SETS}
    results: dict[tuple[str, ...], dict[str, str] | str] = {}
    for extras, (proc, report) in procs.items():
        output, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            results[extras] = output
            continue
        data = json.loads(report.read_text())
        results[extras] = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in data["install"]}
    return results


@pytest.mark.parametrize("extras", EXTRA_SETS, ids=lambda e: ",".join(e))
def test_extra_resolves(resolved, extras):
    got = resolved[extras]
    assert isinstance(got, dict), f".[{','.join(extras)}] does not resolve:\n{got}"
    for req in project_requirements(extras):
        if is_tensorrt(req) or (req.marker is not None and not req.marker.evaluate()):
            continue
        name = canonicalize_name(req.name)
        assert name in got, f".[{','.join(extras)}]: {req} is missing from the resolution"
        assert req.specifier.contains(got[name], prereleases=True), f"{name} {got[name]} breaks {req}"


def test_no_second_cuda_binding_pinned_against_torch(resolved):
    """The old `trt` extra pinned cuda-python<13 while torch 2.14.1 needs cuda-bindings>=13."""
    got = resolved[("train", "trt")]
    assert isinstance(got, dict), got
    assert "polygraphy" in got  # the one device-memory layer
    for name in ("cuda-python", "pycuda"):
        assert name not in resolved[("trt",)], f"the trt extra pulls {name}: one device-memory layer is polygraphy.cuda"
    if "cuda-bindings" in got and "cuda-python" in got:  # an old cuda-python ships its own `cuda` package files
        bindings, python = Version(got["cuda-bindings"]).major, Version(got["cuda-python"]).major
        assert bindings == python, f"cuda-python {got['cuda-python']} overlays torch's cuda-bindings {got['cuda-bindings']}"


def test_gpu_extra_is_the_gpu_onnxruntime_alone(resolved):
    got = resolved[("gpu",)]
    assert isinstance(got, dict), got
    assert "onnxruntime-gpu" in got
    assert "onnxruntime" not in got, "onnxruntime (CPU) and onnxruntime-gpu install the same module: one of them"


# -- TensorRT against its published metadata ------------------------------------------------------------
def simple_files(project: str) -> list[dict]:
    req = urllib.request.Request(f"{SIMPLE}/{canonicalize_name(project)}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["files"]


def sdist_requires(project: str, version: str) -> list[Requirement]:
    """Requires-Dist from the PKG-INFO of a project's sdist (NVIDIA publishes tensorrt as sdists)."""
    files = [f for f in simple_files(project) if f["filename"].endswith(f"-{version}.tar.gz") and not f.get("yanked")]
    assert files, f"{project} {version}: no sdist on PyPI"
    with urllib.request.urlopen(files[0]["url"], timeout=60) as r:
        data = r.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = next(m for m in tar.getmembers() if re.fullmatch(r"[^/]+/PKG-INFO", m.name))
        text = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
    return [Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines() if line.startswith("Requires-Dist:")]


def versions_of(project: str) -> list[Version]:
    """Versions with a file on PyPI (sdist NAME-VERSION.tar.gz or wheel NAME-VERSION-...whl)."""
    out = set()
    for f in simple_files(project):
        name = f["filename"]
        if f.get("yanked"):
            continue
        text = name[: -len(".tar.gz")].rsplit("-", 1)[-1] if name.endswith(".tar.gz") else name.split("-")[1]
        try:
            out.add(Version(text))
        except InvalidVersion:
            pass
    return sorted(out)


def test_tensorrt_pins_match_published_metadata(resolved):
    """The newest tensorrt the extra allows exists, needs a CUDA major that matches torch's, and ships a
    binding wheel for this Python on this platform."""
    spec = next(r.specifier for r in project_requirements(("trt",)) if is_tensorrt(r))
    assert spec.contains("10.3.0") and spec.contains("8.6.2") and not spec.contains("11.0.0"), spec
    allowed = [v for v in versions_of("tensorrt") if spec.contains(v) and not v.is_prerelease]
    assert allowed, f"no tensorrt release on PyPI satisfies {spec}"
    newest = str(allowed[-1])
    cu_reqs = [r for r in sdist_requires("tensorrt", newest) if canonicalize_name(r.name).startswith("tensorrt-cu")]
    assert len(cu_reqs) == 1, f"tensorrt {newest}: expected one tensorrt_cuXX requirement, got {cu_reqs}"
    cu_pkg = canonicalize_name(cu_reqs[0].name)
    cu_major = int(cu_pkg.removeprefix("tensorrt-cu"))
    assert cu_reqs[0].specifier == SpecifierSet(f"=={newest}")
    parts = {canonicalize_name(r.name) for r in sdist_requires(cu_pkg, newest)}
    assert {f"{cu_pkg}-libs", f"{cu_pkg}-bindings"} <= parts, parts
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = [f["filename"] for f in simple_files(f"{cu_pkg}-bindings")
              if f"-{newest}-" in f["filename"] and f"-{tag}-" in f["filename"]]
    assert wheels, f"{cu_pkg}-bindings {newest}: no wheel for {tag}"
    torch_side = resolved[("train", "trt")]
    if isinstance(torch_side, dict) and "cuda-bindings" in torch_side:
        assert Version(torch_side["cuda-bindings"]).major == cu_major, (
            f"tensorrt {newest} needs CUDA {cu_major} (via {cu_pkg}) but torch brings cuda-bindings "
            f"{torch_side['cuda-bindings']}: one process would load two CUDA runtimes"
        )
    warnings.warn(LIBS_UNCHECKED, stacklevel=1)
