"""tools/gpu_smoke.py, the script prepared for the first GPU machine. No GPU here: run as a user would, it
stops with one line and exit code 2. Its pieces run on any torch device, so they run here on the CPU:
whole (`--allow-cpu`, which the report marks as a test run) and one by one, including that a wrong result
fails them. What runs on a GPU is not shown here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from paths import REPO

SCRIPT = REPO / "tools" / "gpu_smoke.py"
sys.path.insert(0, str(REPO / "tools"))
import gpu_smoke  # noqa: E402


def run(*args: str, cwd: Path, pythonpath: str = str(REPO)) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.slow  # tools/gpu_smoke.py in a child process
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here: the no-GPU path cannot be shown")
def test_without_a_gpu_one_line_exit_2(tmp_path):
    proc = run("--out", str(tmp_path / "r.json"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    line = one_line(proc.stderr)
    assert line.startswith("gpu_smoke: no CUDA GPU: torch ") and "Traceback" not in proc.stderr, line
    assert not (tmp_path / "r.json").exists()


def test_bad_arguments_are_one_line_exit_2(tmp_path):
    for args, word in ((["--budget", "0"], "--budget"), (["--wheels", str(tmp_path / "none")], "--wheels"),
                       (["--budget", "soon"], "--budget"), (["--colour"], "--colour")):
        proc = run(*args, cwd=tmp_path)
        assert proc.returncode == 2 and word in one_line(proc.stderr), (args, proc.stderr)


def blocked(tmp_path: Path, *modules: str) -> Path:
    """A folder of stand-ins that fail to import as an absent module does: the machine without them."""
    shim = tmp_path / "absent"
    shim.mkdir(exist_ok=True)
    for m in modules:
        (shim / f"{m}.py").write_text(f"raise ModuleNotFoundError(\"No module named '{m}'\", name='{m}')\n")
    return shim


@pytest.mark.slow  # trains and exports in a child process
def test_the_whole_run_on_the_cpu_as_on_the_lent_machine(tmp_path):
    """The machine it is for has no pydantic, Polygraphy or TensorRT: every other check runs and passes (on
    the CPU here), the TensorRT one is skipped naming all three, and the report says it was a CPU test run."""
    shim = blocked(tmp_path, "pydantic", "polygraphy", "tensorrt")
    out = tmp_path / "report" / "gpu_smoke.json"
    proc = run("--allow-cpu", "--out", str(out), cwd=tmp_path, pythonpath=os.pathsep.join([str(shim), str(REPO)]))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert status == {
        "cuda.device": "pass", "model.forward_backward[fp32,channels_last]": "pass",
        "two_stage.step[fp32,channels_last]": "pass", "two_stage.step[bf16,channels_last]": "pass",
        "two_stage.step[fp16,channels_last]": "pass", "ddp.gloo_one_rank": "pass", "export.onnx_from_gpu": "pass",
        "ort.providers": "skip", "tensorrt.engine_check_runner": "skip"}, status
    trt = next(c for c in report["checks"] if c["name"] == "tensorrt.engine_check_runner")
    assert trt["why"] == "not importable here: tensorrt, polygraphy, pydantic"
    assert report["imports"]["pydantic"].startswith("missing:") and report["imports"]["torch"] == torch.__version__
    assert report["device"]["name"].startswith("cpu (--allow-cpu: a test run")
    assert report["summary"] == {"pass": 7, "fail": 0, "skip": 2} and report["seconds"] < 300
    assert proc.stderr.strip().splitlines()[-1].startswith("gpu_smoke: 7 passed, 0 failed, 2 skipped")


@pytest.mark.slow  # the whole smoke run in a child process
def test_without_onnx_the_export_and_what_needs_it_are_skipped(tmp_path):
    shim = blocked(tmp_path, "onnx", "onnxscript")
    out = tmp_path / "r.json"
    proc = run("--allow-cpu", "--out", str(out), cwd=tmp_path, pythonpath=os.pathsep.join([str(shim), str(REPO)]))
    assert proc.returncode == 0, proc.stderr
    checks = {c["name"]: c for c in json.loads(out.read_text())["checks"]}
    assert checks["export.onnx_from_gpu"]["why"] == "not importable here: onnx, onnxscript"
    assert checks["tensorrt.engine_check_runner"]["why"].startswith("no exported ONNX model")


@pytest.mark.slow  # trains steps twice
def test_a_wrong_step_fails_the_comparison():
    """The comparison is not a formality: the step of another batch, or one whose update was lost, fails."""
    cpu = torch.device("cpu")
    ref = gpu_smoke.two_stage_step(cpu, seed=0)
    assert gpu_smoke.compare_steps(ref, gpu_smoke.two_stage_step(cpu, seed=0), "fp32")["passed"]
    other = gpu_smoke.two_stage_step(cpu, seed=1)
    assert not gpu_smoke.compare_steps(ref, other, "bf16")["passed"]
    lost = dict(ref, updates={n: torch.zeros_like(u) if n.startswith("attention.") else u for n, u in ref["updates"].items()})
    result = gpu_smoke.compare_steps(ref, lost, "fp32")
    assert not result["passed"] and not result["theta_stepped"]


@pytest.mark.slow  # forward/backward of the real model
def test_a_wrong_gradient_fails_forward_backward():
    cpu = torch.device("cpu")
    ref = gpu_smoke.forward_backward(cpu)
    good = gpu_smoke.forward_backward(cpu, channels_last=True)
    assert gpu_smoke.compare_forward_backward(ref, good)["passed"]
    name = next(iter(ref["grads"]))
    bad = dict(good, grads={**good["grads"], name: good["grads"][name] * 1.5 + 0.01})
    assert not gpu_smoke.compare_forward_backward(ref, bad)["passed"]


def test_wheels_are_unpacked_onto_sys_path(tmp_path, monkeypatch):
    """A wheel that travels with the script is importable for the run, nothing installed."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    with zipfile.ZipFile(folder / "smokeprobe-1.0-py3-none-any.whl", "w") as z:
        z.writestr("smokeprobe/__init__.py", "__version__ = '1.0'\n")
        z.writestr("smokeprobe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: smokeprobe\nVersion: 1.0\n")
        z.writestr("smokeprobe-1.0.dist-info/RECORD", "")
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert gpu_smoke.unpack_wheels(folder) == ["smokeprobe-1.0-py3-none-any.whl"]
    import importlib

    assert importlib.import_module("smokeprobe").__version__ == "1.0"
    sys.modules.pop("smokeprobe", None)
