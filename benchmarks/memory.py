"""Peak memory of the erudite model against the zoo, each in fresh processes.

Memory held by one process says little about another model loaded in the same process (allocators
keep what they freed, libraries load once), so every measurement is a new Python process:

    python -m benchmarks.memory --child --bundle DIR [--backend B] [--precision P] [--batch 1,8] [--calls 3]

loads the bundle with `erudite_edge.inference.models.load_model` (what `erudite-edge run` loads: the zoo
with all its models), runs a few synthetic batches of every size (the zoo's routing forced to split
each batch across its data sets, so every fine model runs) and reports its peak resident set size:
the high-water mark of its own address space (VmHWM, see peak_rss_mb: not ru_maxrss, which counts
the parent's pages shared until exec) plus the largest of its child processes (RUSAGE_CHILDREN).
A `--none` child (same imports, no model) gives the interpreter's own share; `net` figures subtract
it, repetition by repetition.

Repetitions take turns (erudite, zoo, baseline, then rotated), as the timing does; the erudite/zoo
ratio of medians carries a paired bootstrap 95 % interval over repetitions (benchmarks.stats) from
MIN_PROCESSES (10) repetitions on; with fewer, only the spread of the per-repetition ratios
("spread of 3"), never a verdict.

Device memory: where the model runs on a GPU (TensorRT, ONNX Runtime's CUDA provider) the child
reads the device's used memory (cudaMemGetInfo through the device-memory layer, polygraphy.cuda's
libcudart) before loading and after the batches; the difference is reported (device-wide: other
processes on the GPU count too). On a CPU backend, or without Polygraphy or a GPU, it is null.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmarks.stats import ratio_ci
from erudite_edge.backends.registry import RunnerOptions

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "erudite-edge-memory:"
MIN_PROCESSES = 10  # fresh processes per model for a bootstrap interval (fewer: the spread, no verdict)


def _kib_to_mb(kib: int) -> float:
    # Linux reports ru_maxrss in KiB, macOS in bytes
    return kib / (1 << 20) if sys.platform == "darwin" else kib / 1024.0


def device_used_mb() -> float | None:
    """Used memory of the current CUDA device (MB), through the device-memory layer (polygraphy.cuda over
    libcudart: cudaMemGetInfo); None where there is no layer, runtime or GPU."""
    from erudite_edge.backends.tensorrt.device_memory import open_device
    from erudite_edge.errors import EruditeError

    try:
        free, total = open_device().memory_info()
    except EruditeError:
        return None
    return (total - free) / 1e6


def child_main(args: argparse.Namespace) -> int:
    """Load, run a few batches, print one line of JSON (what the parent cannot see from outside)."""

    from benchmarks.instrument import Instrumented
    from erudite_edge.core.bundle import Bundle
    from erudite_edge.inference.models import load_model

    if args.backend in ("auto", "onnxruntime"):  # the baseline imports the runtime library too
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            pass
    report: dict[str, Any] = {"model": None, "backend": None, "device_mb": None}
    if args.bundle is not None:
        bundle = Bundle.load(args.bundle)
        gpu = args.backend in ("auto", "tensorrt")
        before = device_used_mb() if gpu else None
        options = RunnerOptions(backend=args.backend, precision=args.precision, threads=args.threads,
                                spinning=args.spinning, cuda_graph=args.cuda_graph,
                                data_transfers=not args.no_data_transfers)
        with warnings.catch_warnings():  # the parent's bench has said so already
            warnings.simplefilter("ignore", RuntimeWarning)
            clf = Instrumented(load_model(bundle, options, announce=None), forced_routing=True)
        for b in args.batch:
            x = bundle.preprocess.random_batch(b, 0)
            for _ in range(args.calls):
                clf.predict(x)
        report["model"] = bundle.kind
        report["backend"] = clf.backend
        providers = clf.recorders[next(iter(clf.recorders))].describe().get("providers") or []
        on_gpu = clf.backend == "tensorrt" or any("CUDA" in p or "Tensorrt" in p for p in providers[:1])
        after = device_used_mb() if on_gpu else None
        if on_gpu and before is not None and after is not None:
            report["device_mb"] = round(after - before, 3)
        clf.close()
    report["peak_rss_mb"], report["children_peak_rss_mb"] = peak_rss_mb()
    print(RESULT_PREFIX + json.dumps(report), flush=True)
    return 0


def peak_rss_mb() -> tuple[float, float]:
    """This process's peak resident set (MB) and the largest of its reaped children's.

    The process's own peak is the high-water mark of its current address space (VmHWM in
    /proc/self/status): getrusage's ru_maxrss would also count the parent's pages, which a process
    started by fork/vfork + exec shares until its exec (a child of a 1 GB bench would report 1 GB).
    Children (none for ONNX Runtime or TensorRT, counted for completeness): RUSAGE_CHILDREN."""
    import resource

    own: float | None = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    own = int(line.split()[1]) / 1024.0  # kB
                    break
    except OSError:
        pass
    if own is None:  # no procfs (macOS): the kernel's figure, exec-polluted as said above
        own = _kib_to_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return own, _kib_to_mb(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def run_child(argv: Sequence[str]) -> tuple[float, dict[str, Any]]:
    """Run one child to the end; its peak RSS (MB, itself plus its largest child) and its report."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--child", *argv], capture_output=True,
                          env=env, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"memory child ({' '.join(argv)}) exited {proc.returncode}: {last}")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)), None)
    if line is None:
        raise RuntimeError(f"memory child ({' '.join(argv)}) printed no result")
    report = json.loads(line[len(RESULT_PREFIX):])
    return report["peak_rss_mb"] + report["children_peak_rss_mb"], report


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def measure_memory(bundles: dict[str, Path], options: RunnerOptions, *, batches: Sequence[int], repeats: int,
                   calls: int = 3, seed: int = 0, on_child: Callable[[], None] | None = None) -> dict[str, Any]:
    """Peak RSS (and device memory) of every bundle loaded with `options`, in `repeats` fresh processes each,
    with a no-model baseline; erudite/zoo ratios with paired bootstrap intervals over repetitions."""
    precision = "fp32" if options.precision == "auto" else options.precision
    common = ["--backend", options.backend, "--precision", precision, "--batch", ",".join(map(str, batches)),
              "--calls", str(calls)] + (["--threads", str(options.threads)] if options.threads else []) \
        + (["--spinning"] if options.spinning else []) + (["--cuda-graph"] if options.cuda_graph else []) \
        + ([] if options.data_transfers else ["--no-data-transfers"])
    names = [*bundles, "baseline"]
    peaks: dict[str, list[float]] = {n: [] for n in names}
    device: dict[str, list[float | None]] = {n: [] for n in names}
    for rep in range(repeats):
        order = [names[(i + rep) % len(names)] for i in range(len(names))]
        for name in order:
            argv = common + (["--bundle", str(bundles[name])] if name != "baseline" else [])
            peak, report = run_child(argv)
            peaks[name].append(round(peak, 2))
            device[name].append(report.get("device_mb"))
            if on_child:
                on_child()
    out: dict[str, Any] = {"precision": precision, "backend": options.backend, "repeats": repeats, "batches": list(batches),
                           "calls_per_batch": calls,
                           "method": "peak RSS of a fresh process per measurement (VmHWM of the process + the largest "
                                     "child's ru_maxrss), load_model + a few batches; baseline: same imports, no model"}
    for name in names:
        out[name] = {"peak_rss_mb": peaks[name], "median_mb": _median(peaks[name]),
                     "device_mb": device[name] if any(v is not None for v in device[name]) else None,
                     "device_median_mb": _median(device[name])}
    for name in bundles:
        net = [p - b for p, b in zip(peaks[name], peaks["baseline"])]
        out[name]["net_mb"] = [round(v, 2) for v in net]
        out[name]["net_median_mb"] = _median(net)
    if "erudite" in bundles and "zoo" in bundles:
        out.update(ratio_figures(peaks["erudite"], peaks["zoo"], peaks["baseline"], seed))
        e, z = out["erudite"], out["zoo"]
        if e["device_median_mb"] and z["device_median_mb"]:
            out["device_ratio"] = e["device_median_mb"] / z["device_median_mb"]
        else:
            out["device_ratio"] = None
    return out


def ratio_figures(erudite: Sequence[float], zoo: Sequence[float], baseline: Sequence[float], seed: Any = 0) -> dict[str, Any]:
    """The erudite/zoo ratio of median peaks, with and without the baseline. With at least
    MIN_PROCESSES repetitions a paired bootstrap 95 % interval over them (`ratio_ci95`); with fewer,
    no interval (a bootstrap over 3 processes puts its point on its bound) but the spread of the
    per-repetition ratios, labelled "spread of n" (`ratio_spread`), which never gives a verdict."""
    n = min(len(erudite), len(zoo))
    net_e = [p - b for p, b in zip(erudite, baseline)]
    net_z = [p - b for p, b in zip(zoo, baseline)]
    out: dict[str, Any] = {"ratio": statistics.median(erudite) / statistics.median(zoo), "processes": n}
    net_ok = bool(net_e) and statistics.median(net_z) > 0 and statistics.median(net_e) > 0
    out["net_ratio"] = statistics.median(net_e) / statistics.median(net_z) if net_ok else None
    if n >= MIN_PROCESSES:
        ci = ratio_ci(erudite, zoo, seed=(seed, 5))
        out["ratio_ci95"] = None if ci is None else [round(ci[0], 5), round(ci[1], 5)]
        nci = ratio_ci(net_e, net_z, seed=(seed, 6)) if net_ok and min(net_e + net_z) > 0 else None
        out["net_ratio_ci95"] = None if nci is None else [round(nci[0], 5), round(nci[1], 5)]
        out["ratio_spread"] = out["net_ratio_spread"] = None
    else:
        per = [a / b for a, b in zip(erudite, zoo)]
        out["ratio_ci95"] = out["net_ratio_ci95"] = None
        out["ratio_spread"] = [round(min(per), 5), round(max(per), 5)] if per else None
        net_per = [a / b for a, b in zip(net_e, net_z) if b > 0]
        out["net_ratio_spread"] = [round(min(net_per), 5), round(max(net_per), 5)] if net_ok and net_per else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help="(internal) one measurement: load, run, exit")
    ap.add_argument("--bundle", type=Path, default=None, help="with --child: the bundle (none: the no-model baseline)")
    ap.add_argument("--erudite", type=Path, help="the erudite bundle (without --child)")
    ap.add_argument("--zoo", type=Path, help="the zoo bundle (without --child)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--spinning", action="store_true")
    ap.add_argument("--cuda-graph", action="store_true", help="TensorRT runner option (others ignore it)")
    ap.add_argument("--no-data-transfers", action="store_true", help="TensorRT runner option (others ignore it)")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    args.batch = [int(v) for v in str(args.batch).split(",") if v.strip()]
    if args.child:
        return child_main(args)
    if args.erudite is None:
        ap.error("--erudite BUNDLE (and --zoo BUNDLE) to compare")
    bundles = {"erudite": args.erudite, **({"zoo": args.zoo} if args.zoo else {})}
    options = RunnerOptions(backend=args.backend, precision=args.precision, threads=args.threads, spinning=args.spinning)
    result = measure_memory(bundles, options, batches=args.batch, repeats=args.repeats, calls=args.calls)
    from benchmarks.environment import environment

    result["environment"] = environment()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
