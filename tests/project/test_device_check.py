"""tools/device_check.sh, run for real as a user would, up to where TensorRT is needed: on a machine
without TensorRT or a GPU it stops before anything else with one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from erudite_edge.backends.tensorrt.runner import available
from paths import REPO
from tensorrt_bundles import make_bundle

ROOT = REPO
SCRIPT = ROOT / "tools" / "device_check.sh"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.skipif(available(), reason="TensorRT is importable here: the no-GPU path cannot be shown")
def test_without_tensorrt_or_gpu_one_line_exit_2(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    out = tmp_path / "report"
    proc = run(str(bundle.root), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    line = one_line(proc.stderr)
    assert line.startswith("device_check: cannot run here: ") and ("TensorRT" in line or "CUDA" in line), line
    assert not out.exists()  # stopped before making anything


def test_usage_and_bad_bundle_exit_2(tmp_path):
    proc = run(cwd=tmp_path)
    assert proc.returncode == 2 and one_line(proc.stderr).startswith("usage: tools/device_check.sh BUNDLE")
    proc = run(str(tmp_path / "nothing"), cwd=tmp_path)
    assert proc.returncode == 2 and "not a bundle directory" in one_line(proc.stderr)


def bare_python(tmp_path: Path) -> Path:
    """A Python with the standard library only (a venv without packages): no numpy, no OpenCV."""
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv / "bin" / "python"


def run_with(python: str, *args: str, cwd: Path, pythonpath: str = str(ROOT)) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=python, PYTHONPATH=pythonpath)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_a_python_without_the_dependencies_is_one_line_exit_2(tmp_path):
    """Run by a Python without numpy or OpenCV: one line naming what is missing, no traceback."""
    bundle = make_bundle(tmp_path / "bundle")
    out = tmp_path / "report"
    proc = run_with(str(bare_python(tmp_path)), str(bundle.root), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    line = one_line(proc.stderr)
    assert line.startswith("device_check: ") and "Traceback" not in proc.stderr
    for name in ("numpy", "cv2 (opencv-python-headless", "typer", "yaml (pyyaml)", "pydantic"):
        assert name in line, line
    assert not out.exists()


def test_only_opencv_missing_is_named_alone(tmp_path):
    """This Python has everything but OpenCV (an import of cv2 fails as it does where it is not installed)."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "cv2.py").write_text("raise ModuleNotFoundError(\"No module named 'cv2'\", name='cv2')\n")
    bundle = make_bundle(tmp_path / "bundle")
    proc = run_with(sys.executable, str(bundle.root), cwd=tmp_path, pythonpath=os.pathsep.join([str(shim), str(ROOT)]))
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert "lacks cv2 (opencv-python-headless, or JetPack's OpenCV):" in line and "numpy" not in line, line


def test_no_such_python_and_bad_flags_are_one_line_exit_2(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    proc = run_with(str(tmp_path / "no-python"), str(bundle.root), cwd=tmp_path)
    assert proc.returncode == 2 and "no Python at" in one_line(proc.stderr)
    proc = run_with(sys.executable, str(bundle.root), "--iters", "many", cwd=tmp_path)
    assert proc.returncode == 2 and "--iters" in one_line(proc.stderr)
