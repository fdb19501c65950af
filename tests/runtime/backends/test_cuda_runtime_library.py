"""Which CUDA runtime library (libcudart) the device layer loads (issue 24, item 5): the one already in
the process, else the one the installed TensorRT wheel depends on, else Polygraphy's own search.

The chain from a TensorRT wheel to its runtime wheel is tested over distribution metadata written here
(what pip leaves in site-packages: METADATA with Requires-Dist, RECORD with the files). The loading itself
is real: real Polygraphy over the real libcudart of the CUDA runtime wheel in this environment
(nvidia-cuda-runtime, nvidia/cu13/lib), in a fresh process each time, with a written `tensorrt_cu13_libs`
distribution standing for the TensorRT wheel (TensorRT cannot be installed here). No GPU is needed to load
the library; without one, opening the device ends in one CUDA error line that names the file."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from erudite_edge.backends.tensorrt.device_memory import (
    POLYGRAPHY_SEARCH,
    choose_cudart,
    mapped_cudart,
    tensorrt_wheel_cudart,
)
from paths import REPO

MAPS = """\
7f1c2a000000-7f1c2a021000 r--p 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1c2b000000-7f1c2b0a0000 r-xp 00000000 08:01 456 /opt/my env/site-packages/nvidia/cu13/lib/libcudart.so.13
7f1c2c000000-7f1c2c001000 rw-p 00000000 00:00 0
"""


def dist(site: Path, name: str, version: str, requires: list[str] = (), files: list[str] = ()) -> None:
    """A distribution as pip leaves it: NAME-VERSION.dist-info with METADATA and RECORD, and its files."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
    (info / "METADATA").write_text("\n".join(meta) + "\n")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    for f in files:
        (site / f).parent.mkdir(parents=True, exist_ok=True)
        (site / f).write_bytes(b"")


def dists(site: Path) -> list[md.Distribution]:
    return list(md.distributions(path=[str(site)]))


def test_the_library_already_mapped_wins():
    assert mapped_cudart(MAPS) == "/opt/my env/site-packages/nvidia/cu13/lib/libcudart.so.13"
    assert mapped_cudart("7f-7f r--p 0 08:01 1 /usr/lib/libcudart_static.a\n") is None
    chosen = choose_cudart(MAPS)
    assert chosen.path.endswith("cu13/lib/libcudart.so.13") and chosen.origin == "already loaded in this process"
    assert chosen.line.startswith("CUDA runtime: /opt/my env/") and "\n" not in chosen.line


def test_cuda13_tensorrt_wheel_leads_to_nvidia_cu13_lib(tmp_path):
    """The CUDA 13 layout Polygraphy does not search: nvidia/cu13/lib."""
    dist(tmp_path, "tensorrt", "10.16.0.1", ["tensorrt_cu13==10.16.0.1"])
    dist(tmp_path, "tensorrt_cu13", "10.16.0.1", ["tensorrt_cu13_libs==10.16.0.1", "tensorrt_cu13_bindings==10.16.0.1"])
    dist(tmp_path, "tensorrt_cu13_bindings", "10.16.0.1")
    dist(tmp_path, "tensorrt_cu13_libs", "10.16.0.1", ["nvidia-cuda-runtime~=13.0", 'nvidia-nvtx; extra == "tools"'],
         ["tensorrt_libs/libnvinfer.so.10"])
    dist(tmp_path, "nvidia-cuda-runtime", "13.0.96", [], ["nvidia/cu13/lib/libcudart.so.13", "nvidia/cu13/lib/libcudart_static.a"])
    dist(tmp_path, "nvidia-cuda-runtime-cu12", "12.9.79", [], ["nvidia/cuda_runtime/lib/libcudart.so.12"])  # not TensorRT's
    got = tensorrt_wheel_cudart(dists(tmp_path), search_path=[])
    assert got is not None and got.path == str(tmp_path / "nvidia/cu13/lib/libcudart.so.13")
    assert "nvidia-cuda-runtime 13.0.96" in got.origin and "tensorrt" in got.origin


def test_cuda12_tensorrt_wheel_leads_to_nvidia_cuda_runtime_lib(tmp_path):
    dist(tmp_path, "tensorrt-cu12", "10.13.0.35", ["tensorrt_cu12_libs==10.13.0.35"])
    dist(tmp_path, "tensorrt_cu12_libs", "10.13.0.35", ["nvidia-cuda-runtime-cu12"])
    dist(tmp_path, "nvidia-cuda-runtime-cu12", "12.9.79", [], ["nvidia/cuda_runtime/lib/libcudart.so.12"])
    dist(tmp_path, "nvidia-cuda-runtime", "13.0.96", [], ["nvidia/cu13/lib/libcudart.so.13"])  # torch's: not TensorRT's
    got = tensorrt_wheel_cudart(dists(tmp_path), search_path=[])
    assert got is not None and got.path == str(tmp_path / "nvidia/cuda_runtime/lib/libcudart.so.12")


def test_a_runtime_wheel_without_metadata_is_found_by_the_cuda_major(tmp_path):
    """TensorRT's libs wheel requires a name whose distribution is not there (or has no RECORD): the CUDA
    major of the TensorRT wheel's name picks the runtime wheel's folder."""
    site = tmp_path / "site"
    dist(site, "tensorrt_cu13_libs", "10.16.0.1", ["some-runtime-meta-package"])
    (site / "nvidia/cu13/lib").mkdir(parents=True)
    (site / "nvidia/cu13/lib/libcudart.so.13").write_bytes(b"")
    (site / "nvidia/cuda_runtime/lib").mkdir(parents=True)
    (site / "nvidia/cuda_runtime/lib/libcudart.so.12").write_bytes(b"")  # another major: never taken
    got = tensorrt_wheel_cudart(dists(site), search_path=[str(site)])
    assert got is not None and got.path == str(site / "nvidia/cu13/lib/libcudart.so.13") and "CUDA 13" in got.origin


def test_without_a_tensorrt_wheel_polygraphy_searches(tmp_path):
    """JetPack's TensorRT comes from apt: no wheel to follow, Polygraphy finds /usr/local/cuda/lib64."""
    dist(tmp_path, "tensorrt-stubs", "10.13.0.35.1")  # type stubs are no TensorRT
    dist(tmp_path, "nvidia-cuda-runtime", "13.0.96", [], ["nvidia/cu13/lib/libcudart.so.13"])
    assert tensorrt_wheel_cudart(dists(tmp_path), search_path=[str(tmp_path)]) is None
    assert POLYGRAPHY_SEARCH.startswith("found by Polygraphy's search")


# -- real loading, in a fresh process --------------------------------------------------------------------
def runtime_wheel_cudart() -> Path | None:
    """The libcudart of this environment's nvidia-cuda-runtime wheel (torch's CUDA 13 runtime), if any."""
    try:
        d = md.distribution("nvidia-cuda-runtime")
    except md.PackageNotFoundError:
        return None
    for f in d.files or []:
        if f.name.startswith("libcudart.so"):
            return Path(str(d.locate_file(f))).resolve()
    return None


WHEEL_CUDART = runtime_wheel_cudart()
SYSTEM_CUDART = next((p.resolve() for p in sorted(Path("/usr/local/cuda/lib64").glob("libcudart.so.*"))), None) \
    if Path("/usr/local/cuda/lib64").is_dir() else None

SCRIPT = """
import ctypes, json, os, sys
preload = sys.argv[1]
if preload:
    ctypes.CDLL(preload)
from erudite_edge.backends.tensorrt.device_memory import CudaError, open_device
try:
    open_device()
    error = None
except CudaError as e:
    error = str(e)
maps = open("/proc/self/maps").read().splitlines()
mapped = sorted({os.path.realpath(l.split(None, 5)[5]) for l in maps if len(l.split(None, 5)) == 6 and "/libcudart.so" in l})
print(json.dumps({"error": error, "mapped": mapped, "ld": os.environ.get("LD_LIBRARY_PATH")}))
"""


def run_device_layer(tmp_path: Path, preload: str = "") -> dict:
    site = tmp_path / "trt-wheel"
    dist(site, "tensorrt_cu13_libs", "10.16.0.1", ["nvidia-cuda-runtime~=13.0"])  # stands for TensorRT's libs wheel
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    proc = subprocess.run([sys.executable, "-c", SCRIPT, preload], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


needs_real_runtime = pytest.mark.skipif(
    WHEEL_CUDART is None or not __import__("importlib").util.find_spec("polygraphy"),
    reason="needs Polygraphy and the nvidia-cuda-runtime wheel (torch's CUDA runtime) in this environment",
)


@pytest.mark.slow  # a child process
@needs_real_runtime
def test_the_runtime_tensorrt_depends_on_is_the_one_loaded(tmp_path):
    """Polygraphy alone would load /usr/local/cuda's libcudart where there is one (or none at all on a
    pip-only machine: it does not search nvidia/cu13/lib); the device layer loads TensorRT's."""
    got = run_device_layer(tmp_path)
    assert got["mapped"] == [str(WHEEL_CUDART)], got
    assert got["ld"] is None  # LD_LIBRARY_PATH put back as it was
    if got["error"] is not None:  # no GPU here: one line naming the file and why
        assert "\n" not in got["error"] and f"CUDA runtime: {WHEEL_CUDART} (" in got["error"], got["error"]
        assert "nvidia-cuda-runtime" in got["error"] and "tensorrt-cu13-libs" in got["error"], got["error"]


@pytest.mark.slow  # a child process
@needs_real_runtime
@pytest.mark.skipif(SYSTEM_CUDART is None or SYSTEM_CUDART == WHEEL_CUDART, reason="needs a second libcudart in /usr/local/cuda")
def test_a_runtime_already_in_the_process_is_reused_not_doubled(tmp_path):
    got = run_device_layer(tmp_path, preload=str(SYSTEM_CUDART))
    assert got["mapped"] == [str(SYSTEM_CUDART)], got  # one CUDA runtime in the process, the one already there
    if got["error"] is not None:
        assert "already loaded in this process" in got["error"], got["error"]
