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
