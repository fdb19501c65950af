"""The device check behind tools/device_check.sh: on a CUDA machine or a Jetson, build the FP16 and INT8
engines of a bundle, run the check set on each, bench TensorRT against ONNX Runtime and the erudite
model against the zoo, and write one report (device_check.json + device_check.md) with the environment.

Usage: tools/device_check.sh BUNDLE [--zoo ZOO_BUNDLE] [--out DIR] [--iters N]

The bundles are copied into the report folder first: engines are built into the copies, the user's
bundles are not touched. Each step is the real CLI (`python -m erudite_edge ...`), run as a
subprocess; its command, exit code, time and output tail go into the report, and a failing step is
reported, not fatal (the report is the point). Run by a Python without erudite-edge's dependencies (no
numpy, no OpenCV, ...) or older than 3.10, or without TensorRT, Polygraphy or a GPU, it stops before
anything else with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINE_PRECISIONS = ("fp16", "int8")


def fail(msg: str, code: int = 2) -> None:
    print(f"device_check: {msg}", file=sys.stderr)
    sys.exit(code)


# What every step needs in the interpreter that runs it (pyproject's dependencies): import name, what to install.
REQUIRED = (
    ("numpy", "numpy"),
    ("cv2", "opencv-python-headless, or JetPack's OpenCV"),
    ("typer", "typer"),
    ("rich", "rich"),
    ("yaml", "pyyaml"),
    ("pydantic", "pydantic"),
)


def missing_dependencies() -> list[str]:
    """The REQUIRED modules this Python cannot import (missing, or broken: any exception on import)."""
    out = []
    for module, dist in REQUIRED:
        try:
            importlib.import_module(module)
        except Exception:
            out.append(module if module == dist else f"{module} ({dist})")
    return out


def check_interpreter() -> None:
    """Exit 2 with one line where this Python cannot run erudite-edge (too old, or without its dependencies)."""
    here = f"{sys.executable} (Python {platform.python_version()})"
    if sys.version_info < (3, 10):
        fail(f"{here}: erudite-edge needs Python >= 3.10; set PYTHON to a newer interpreter (its venv's python)")
    missing = missing_dependencies()
    if missing:
        fail(f"{here} lacks {', '.join(missing)}: install erudite-edge's dependencies into it (README, Install), "
             "or set PYTHON to the python that has them")


def preflight() -> dict[str, Any]:
    """What this machine is; exits 2 with one line where TensorRT cannot run here."""
    from erudite_edge.errors import EruditeError

    try:
        from erudite_edge.backends.tensorrt.runner import tensorrt_version

        trt_version = tensorrt_version()
        from erudite_edge.backends.tensorrt.device_memory import import_polygraphy_cuda, open_device

        import_polygraphy_cuda()
        gpu = open_device().device_info()
    except EruditeError as e:
        fail(f"cannot run here: {e}")
    except ImportError as e:  # a dependency of the TensorRT side itself (check_interpreter covers the runtime's)
        fail(f"cannot run here: {e}")
    env: dict[str, Any] = {
        "tensorrt": trt_version,
        "gpu": gpu.name,
        "compute_capability": gpu.capability_text,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    for name in ("polygraphy", "onnxruntime", "numpy", "erudite_edge"):
        try:
            env[name] = __import__(name).__version__
        except Exception:
            env[name] = None
    try:
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception:
        env["onnxruntime_providers"] = None
    tegra = Path("/etc/nv_tegra_release")
    env["l4t"] = tegra.read_text().splitlines()[0].strip() if tegra.is_file() else None
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            env["driver"] = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def step(report: dict[str, Any], name: str, args: list[str], log_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "erudite_edge", *args]
    print(f"[{name}] {' '.join(shlex.quote(a) for a in cmd[2:])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.monotonic() - started
    (log_dir / f"{name}.log").write_text(f"$ {shlex.join(cmd)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    entry = {"name": name, "command": shlex.join(["erudite-edge", *args]), "rc": proc.returncode,
             "seconds": round(seconds, 1), "stdout_tail": proc.stdout.strip().splitlines()[-5:],
             "stderr_tail": proc.stderr.strip().splitlines()[-3:]}
    report["steps"].append(entry)
    print(f"[{name}] rc {proc.returncode} in {seconds:.1f} s", file=sys.stderr, flush=True)
    return entry


def has_trt_int8(bundle: Path) -> bool:
    meta = json.loads((bundle / "bundle.json").read_text())
    return any(m["precision"] == "int8" and m.get("format", "onnx") == "onnx"
               and (m.get("info") or {}).get("target", "tensorrt") == "tensorrt" for m in meta["models"])


def markdown(report: dict[str, Any]) -> str:
    lines = ["# erudite-edge device check", "", f"Made {report['made']} by `{report['command']}`.", "", "## Environment", "",
             "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["environment"].items()]
    lines += ["", "## Accuracy (check set vs FP32)", "", "| backend | precision | role | top-1 agreement | max abs logit diff | n | verdict |",
              "|---|---|---|---|---|---|---|"]
    for c in report["checks"]:
        lines.append(f"| {c['backend']} | {c['precision']} | {c['role']} | {100 * c['top1_agreement']:.1f}% | "
                     f"{c['max_abs_diff']:.4g} | {c['count']} | {'PASS' if c['passed'] else 'FAIL'} |")
    lines += ["", "## Steps", "", "| step | rc | seconds | command |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['rc']} | {s['seconds']} | `{s['command']}` |" for s in report["steps"]]
    for s in report["skipped"]:
        lines.append(f"| {s['name']} | skipped | | {s['why']} |")
    for name, md in report.get("bench_markdown", {}).items():
        lines += ["", f"## Bench: {name}", "", md]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools/device_check.sh", description=__doc__.split("\n\n")[0])
    ap.error = lambda message: fail(f"{message} (tools/device_check.sh --help)")  # type: ignore[method-assign]  # one line, exit 2
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--zoo", type=Path, default=None, help="the zoo bundle to bench against")
    ap.add_argument("--out", type=Path, default=None, help="report folder (default runs/device_check/<time>)")
    ap.add_argument("--iters", type=int, default=50, help="timed calls per model and batch in the benches")
    args = ap.parse_args(argv)
    for b in [args.bundle, args.zoo]:
        if b is not None and not (b / "bundle.json").is_file():
            fail(f"{b}: not a bundle directory (no bundle.json)")
    check_interpreter()
    env = preflight()
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = (args.out or ROOT / "runs" / "device_check" / stamp).resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    bundle = out / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    shutil.copytree(args.bundle, bundle, ignore=shutil.ignore_patterns("engines", "*.engine", "*.engine.json"))
    zoo = None
    if args.zoo is not None:
        zoo = out / "zoo"
        shutil.rmtree(zoo, ignore_errors=True)
        shutil.copytree(args.zoo, zoo, ignore=shutil.ignore_patterns("engines", "*.engine", "*.engine.json"))
    report: dict[str, Any] = {"made": stamp, "command": shlex.join(["tools/device_check.sh", *(argv or sys.argv[1:])]),
                              "environment": env, "steps": [], "skipped": [], "checks": [], "bench": {}}
    built = []
    for p in ENGINE_PRECISIONS:
        for label, b in [("erudite", bundle), ("zoo", zoo)]:
            if b is None:
                continue
            if p == "int8" and not has_trt_int8(b):
                report["skipped"].append({"name": f"engine-{label}-{p}",
                                          "why": "no int8 model in the TensorRT layout: `erudite-edge export int8 --target tensorrt`"})
                continue
            s = step(report, f"engine-{label}-{p}", ["export", "engine", "--bundle", str(b), "--precision", p,
                                                      "--accept-accuracy-drop", "--timing-cache", str(out / "timing.cache")], logs)
            if s["rc"] == 0 and label == "erudite":
                built.append(p)
    for p in ["fp32", *ENGINE_PRECISIONS]:
        backends = ["onnxruntime"] + (["tensorrt"] if p in built else [])
        for backend in backends:
            if p == "int8" and backend == "onnxruntime" and not has_trt_int8(bundle):
                continue
            jpath = logs / f"check-{backend}-{p}.json"
            s = step(report, f"check-{backend}-{p}", ["check", str(bundle), "--backend", backend, "--precision", p,
                                                      "--accept-accuracy-drop", "--json", str(jpath)], logs)
            if s["rc"] == 0 and jpath.is_file():
                report["checks"] += json.loads(jpath.read_text())["results"]
    precisions = ",".join(["fp32", *built]) if built else "fp32"
    report["bench_markdown"] = {}
    for backend in ("tensorrt", "onnxruntime"):
        if backend == "tensorrt" and not built:
            report["skipped"].append({"name": "bench-tensorrt", "why": "no engine was built"})
            continue
        bench_out = out / f"bench-{backend}"
        bench_prec = ",".join(built) if backend == "tensorrt" else precisions
        cmd = ["bench", "--bundle", str(bundle), "--backend", backend, "--precision", bench_prec, "--iters", str(args.iters),
               "--out", str(bench_out), "--no-plot"]
        if zoo is not None:
            cmd += ["--zoo", str(zoo)]
        s = step(report, f"bench-{backend}", cmd, logs)
        if s["rc"] == 0 and (bench_out / "bench.json").is_file():
            report["bench"][backend] = json.loads((bench_out / "bench.json").read_text())
            if (bench_out / "bench.md").is_file():
                report["bench_markdown"][backend] = (bench_out / "bench.md").read_text()
    (out / "device_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "device_check.md").write_text(markdown(report))
    failed = [s["name"] for s in report["steps"] if s["rc"] != 0]
    print(f"report: {out / 'device_check.md'} and device_check.json"
          + (f"; failed steps: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
