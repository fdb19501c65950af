"""INT8 quality on a trained bundle: top-1 agreement with FP32 and accuracy per data set for each way of
quantizing (calibration method, target layout, quantizer, weight options, mixed precision), all on the
same calibration images (seeded, balanced) and the same held-out test images.

    python -m benchmarks.studies.int8_quality --bundle runs/demo/bundles/erudite \\
        --data digits=runs/demo/data/digits --data mnist=runs/demo/data/mnist --data faces=runs/demo/data/faces

Every configuration runs the real export path (export.int8.make_int8) in a temporary copy of the bundle,
so the bundle itself is not changed. Writes JSON (--json) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from erudite_edge.core.fileio import write_json_atomic

CONFIGS: dict[str, dict[str, Any]] = {
    "minmax tensorrt": {"method": "minmax", "target": "tensorrt"},
    "minmax tensorrt (re-run)": {"method": "minmax", "target": "tensorrt"},
    "entropy tensorrt": {"method": "entropy", "target": "tensorrt"},
    "percentile tensorrt": {"method": "percentile", "target": "tensorrt"},
    "minmax tensorrt per-tensor weights": {"method": "minmax", "target": "tensorrt", "per_channel": False},
    "modelopt entropy tensorrt": {"method": "entropy", "target": "tensorrt", "quantizer": "modelopt"},
    "modelopt minmax tensorrt": {"method": "minmax", "target": "tensorrt", "quantizer": "modelopt"},
    "minmax onnxruntime": {"method": "minmax", "target": "onnxruntime"},
    "entropy onnxruntime": {"method": "entropy", "target": "onnxruntime"},
    "minmax onnxruntime reduce_range": {"method": "minmax", "target": "onnxruntime", "reduce_range": True},
    "entropy tensorrt mixed (ratio 0.99, agreement 98%)": {"method": "entropy", "target": "tensorrt",
                                                           "min_accuracy_ratio": 0.99, "min_agreement": 0.98},
    "entropy onnxruntime mixed (ratio 0.99, agreement 98%)": {"method": "entropy", "target": "onnxruntime",
                                                              "min_accuracy_ratio": 0.99, "min_agreement": 0.98},
    "minmax onnxruntime (re-run)": {"method": "minmax", "target": "onnxruntime"},
    "percentile onnxruntime": {"method": "percentile", "target": "onnxruntime"},
}
# The issue's goal as `export int8` enforces it: each target with --min-accuracy-ratio 0.99 --min-agreement 98
# (mixed precision keeps blocks float only where the fully quantized model misses), each made twice with
# the same seed (determinism).
GOAL = {"min_accuracy_ratio": 0.99, "min_agreement": 0.98}
for _method in ("minmax", "percentile"):
    for _target in ("tensorrt", "onnxruntime"):
        for _again in ("", " (re-run)"):
            CONFIGS[f"{_method} {_target} goal (ratio 0.99; agreement 98%){_again}"] = {
                "method": _method, "target": _target, **GOAL}


def run_one(bundle: Path, data: list[str], name: str, cfg: dict[str, Any], args: argparse.Namespace, log: Any) -> dict[str, Any]:
    from erudite_edge.core.bundle import Bundle
    from export.int8 import Int8Options, make_int8

    with tempfile.TemporaryDirectory(prefix="erudite-int8-quality-") as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("*.engine", "*.engine.json", "int8_report"))
        t = time.perf_counter()
        try:
            options = Int8Options(calib_count=args.calib_count, data=tuple(data), eval_count=args.eval_count,
                                  seed=args.seed, max_float=args.max_float, **cfg)
            r = make_int8(Bundle.load(copy, verify=True), options, log=log)
        except Exception as e:  # a configuration that fails is a result too
            return {"name": name, **cfg, "error": str(e).splitlines()[0]}
        seconds = time.perf_counter() - t
    mp = r.get("mixed_precision", {}).get("main", {})
    return {"name": name, **cfg, "seconds": round(seconds, 1), "agreement": r["roles"]["main"]["top1_agreement"],
            "max_abs_diff": r["roles"]["main"]["max_abs_diff"], "logit_scale": r["roles"]["main"]["logit_scale"],
            "count": r["count"], "accuracy": r.get("accuracy", {}), "calibration": r["calibration"],
            "float_nodes": len(mp.get("nodes", [])), "kept_float": [s["group"] for s in mp.get("kept_float", [])],
            "mixed_precision": mp, "seed": args.seed, "calib_count": args.calib_count}


def render(rows: list[dict[str, Any]]) -> str:
    names = next((list(r["accuracy"]) for r in rows if r.get("accuracy")), [])
    head = "| configuration | top-1 agreement % | max abs logit diff | " + " | ".join(
        f"{n} int8 % (fp32 %)" for n in names) + " | worst int8/fp32 | float nodes |"
    lines = [head, "| --- " * (5 + len(names)) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} |" + " |" * (3 + len(names)))
            continue
        acc = r["accuracy"]
        ratio = min((a["int8"] / a["fp32"] if a["fp32"] else 1.0) for a in acc.values()) if acc else float("nan")
        cells = [f"{100 * acc[n]['int8']:.1f} ({100 * acc[n]['fp32']:.1f})" for n in names]
        lines.append(f"| {r['name']} | {100 * r['agreement']:.1f} | {r['max_abs_diff']:.2f} / {r['logit_scale']:.1f} | "
                     + " | ".join(cells) + f" | {ratio:.3f} | {r['float_nodes']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.int8_quality", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--data", action="append", required=True, help="NAME=PATH, once per data set")
    ap.add_argument("--calib-count", type=int, default=512)
    ap.add_argument("--eval-count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-float", type=float, default=0.25)
    ap.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--qat", default=None, help="a QAT run (`train --qat`): adds the row 'qat tensorrt'")
    ap.add_argument("--percentile", type=float, action="append", default=[],
                    help="extra percentile rows (e.g. 99.99), tensorrt layout")
    args = ap.parse_args(argv)
    if args.qat:
        CONFIGS["qat tensorrt"] = {"method": "minmax", "target": "tensorrt", "qat": args.qat}
    for p in args.percentile:
        CONFIGS[f"percentile {p} tensorrt"] = {"method": "percentile", "target": "tensorrt", "percentile": p}
    chosen = [c.strip() for c in args.only.split(",") if c.strip()] or list(CONFIGS)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    rows = []
    for name in chosen:
        log(f"== {name}")
        rows.append(run_one(args.bundle, args.data, name, CONFIGS[name], args, log))
        if args.json:
            write_json_atomic(args.json, {"command": "python -m benchmarks.studies.int8_quality " + " ".join(argv or sys.argv[1:]),
                                          "bundle": str(args.bundle), "rows": rows})
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
