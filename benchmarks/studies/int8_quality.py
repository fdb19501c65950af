"""INT8 quality on a trained bundle: top-1 agreement with FP32 and accuracy per data set for each way of
quantizing (calibration method, target layout, quantizer, weight options, mixed precision), all on the
same calibration images (seeded, balanced) and the same held-out test images.

    python -m benchmarks.studies.int8_quality --bundle runs/demo/bundles/erudite \\
        --data digits=runs/demo/data/digits --data mnist=runs/demo/data/mnist --data faces=runs/demo/data/faces

Every configuration runs the real export path (export.int8.make_int8) in a temporary copy of the bundle,
so the bundle itself is not changed. Writes JSON (--json) and prints a Markdown table. Beside the JSON,
FILE.samples.json.gz keeps each configuration's FP32 and INT8 prediction, label and data set per test image
(benchmarks.studies.int8_per_image); `python -m benchmarks.recompute FILE` re-derives every agreement, accuracy,
ratio, interval and goal verdict from it. A configuration the export refused (goal wholly missed: nothing
written) is a row with its error and no per-image record.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.raw import RawSamples, write_result
from benchmarks.studies.int8_per_image import checked_agreement, figures, record

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


def run_one(bundle: Path, data: list[str], name: str, cfg: dict[str, Any], args: argparse.Namespace,
            log: Any) -> tuple[dict[str, Any], dict[str, Any] | None, list[float | None] | None]:
    """One configuration: its row (facts of the export), its per-image record and the goal it was judged by
    (None, None where the export refused)."""
    from erudite_edge.core.bundle import Bundle
    from export.fp16 import agreement_inputs
    from export.int8 import Int8Options, make_int8

    with tempfile.TemporaryDirectory(prefix="erudite-int8-quality-") as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("*.engine", "*.engine.json", "int8_report"))
        t = time.perf_counter()
        try:
            options = Int8Options(calib_count=args.calib_count, data=tuple(data), eval_count=args.eval_count,
                                  seed=args.seed, max_float=args.max_float, **cfg)
            checked = options.checked()
            r = make_int8(Bundle.load(copy, verify=True), options, log=log)
        except Exception as e:  # a configuration that fails is a result too
            return {"name": name, **cfg, "error": str(e).splitlines()[0]}, None, None
        seconds = time.perf_counter() - t
        written = Bundle.load(copy)
        # the test images the export judged on (the same selection: data sets' test split, eval_count each)
        rec = record(written, agreement_inputs(written, images=None, data=list(data), count=args.eval_count, log=None))
        checked_agreement(rec, r, name)
    mp = r.get("mixed_precision", {}).get("main", {})
    row = {"name": name, **cfg, "seconds": round(seconds, 1),
           "max_abs_diff": r["roles"]["main"]["max_abs_diff"], "logit_scale": r["roles"]["main"]["logit_scale"],
           "count": r["count"], "calibration": r["calibration"],
           "float_nodes": len(mp.get("nodes", [])), "kept_float": [s["group"] for s in mp.get("kept_float", [])],
           "mixed_precision": mp, "seed": args.seed, "calib_count": args.calib_count}
    return row, rec, [checked.min_agreement, checked.min_accuracy_ratio]


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure from the per-image records (what `python -m benchmarks.recompute` runs again): per
    configuration agreement, accuracies, ratios, their intervals and the goal's verdict."""
    goals = settings.get("goals", {})
    return {"figures": {name: figures(rec, goals.get(name)) for name, rec in raw.values.get("records", {}).items()}}


def render(rows: list[dict[str, Any]], figs: dict[str, dict[str, Any]]) -> str:
    names = next((list(f["per_dataset"]) for f in figs.values() if f.get("per_dataset")), [])
    head = "| configuration | top-1 agreement % [95 %] | max abs logit diff | " + " | ".join(
        f"{n} int8 % (fp32 %)" for n in names) + " | worst int8/fp32 [95 %] | goal | float nodes |"
    lines = [head, "| --- " * (6 + len(names)) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} |" + " |" * (4 + len(names)))
            continue
        f = figs[r["name"]]
        per = f.get("per_dataset", {})
        worst = min(per, key=lambda n: per[n]["ratio"]) if per else None
        ratio = f"{per[worst]['ratio']:.3f} [{per[worst]['ratio_ci95'][0]:.3f}, {per[worst]['ratio_ci95'][1]:.3f}]" if worst else "-"
        cells = [f"{100 * per[n]['int8']:.1f} ({100 * per[n]['fp32']:.1f})" if n in per else "-" for n in names]
        lo, hi = f["agreement_ci95"]
        lines.append(f"| {r['name']} | {100 * f['agreement']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | "
                     f"{r['max_abs_diff']:.2f} / {r['logit_scale']:.1f} | " + " | ".join(cells)
                     + f" | {ratio} | {f.get('goal', {}).get('status', '-')} | {r['float_nodes']} |")
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

    command = "python -m benchmarks.studies.int8_quality " + " ".join(argv if argv is not None else sys.argv[1:])
    rows: list[dict[str, Any]] = []
    raw = RawSamples("int8_quality", values={"records": {}})
    settings: dict[str, Any] = {"eval_count": args.eval_count, "calib_count": args.calib_count, "seed": args.seed,
                                "goals": {}}
    result: dict[str, Any] = {}
    for name in chosen:
        log(f"== {name}")
        row, rec, goal = run_one(args.bundle, args.data, name, CONFIGS[name], args, log)
        rows.append(row)
        if rec is not None:
            raw.values["records"][name] = rec
            settings["goals"][name] = goal
        result = {"command": command.strip(), "bundle": str(args.bundle), "settings": settings, "rows": rows,
                  **derive(raw, settings)}
        if args.json:  # after each configuration: a killed run leaves the configurations done
            write_result(args.json, result, raw)
    print(render(rows, result.get("figures", {})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
