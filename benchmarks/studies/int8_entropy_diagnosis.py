"""Why a calibration method loses agreement: each tensor's range by method (minmax, entropy with 128 and
256 quantized bins, percentile 99.999 and 99.99), the agreement of each, the tensors entropy clips most,
entropy with groups of tensors put back at their minmax range (input, backbone, head), and where the
disagreements of the minmax model lie against the FP32 top-1/top-2 margin.

    python -m benchmarks.studies.int8_entropy_diagnosis BUNDLE [tensorrt|onnxruntime] \\
        --data digits=PATH --data mnist=PATH --data faces=PATH [--calib-count 256] [--eval-count 100] [--json FILE]

(the data sets may also come as env DATA="digits=PATH mnist=PATH faces=PATH", CALIB and EVAL the counts, as
before). A diagnosis tool (benchmarks/results/int8.md, session 2), not part of the export path: it drives
onnxruntime.quantization directly with hand-made calibration caches. The histogram methods run
onnxruntime's pure-Python KL search: about 3 CPU-minutes per method on EfficientNet-Lite0.

With --json, FILE.samples.json.gz beside it keeps, for every model quantized here, the FP32 and INT8 prediction,
the label and data set of each test image, and for the minmax model each image's FP32 margin and INT8 error
(benchmarks.studies.int8_per_image); `python -m benchmarks.recompute FILE` re-derives every agreement, accuracy,
ratio, interval and the margin table from them. The ranges (per tensor, per method) are facts of the
calibration, kept in the JSON as measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.raw import RawSamples, write_result
from benchmarks.studies.int8_per_image import figures, margin_record, record

Log = Callable[[str], None]
OPTS: dict[str, dict[str, Any]] = {
    "minmax": {}, "entropy": {"num_bins": 2048, "num_quantized_bins": 128},
    "entropy256": {"num_bins": 2048, "num_quantized_bins": 256},
    "percentile": {"num_bins": 2048, "percentile": 99.999},
    "percentile9999": {"num_bins": 2048, "percentile": 99.99}}
MARGIN_EDGES = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0, float("inf")]


def measure(args: argparse.Namespace, log: Log) -> tuple[dict[str, Any], RawSamples]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, quantize_static, save_tensors_data
    from onnxruntime.quantization.calibrate import TensorsData
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from erudite_edge.core.bundle import Bundle
    from export.calibration import ImageCalibrationReader, calibration_sets, collect_ranges
    from export.fp16 import agreement_inputs
    from export.int8 import calibration_method, quantize_options, quantized_ops
    from export.parity import onnx_logits

    B, target, data = args.bundle, args.target, args.data
    bundle = Bundle.load(B)
    plan = calibration_sets(bundle, data=data, count=args.calib_count, seed=0)
    inputs = agreement_inputs(bundle, images=None, data=data, count=args.eval_count, log=None)
    fp32 = onnx_logits(B / "model.onnx", inputs.batch)
    raw = RawSamples("int8_entropy_diagnosis", values={"records": {}})
    facts: dict[str, Any] = {"bundle": str(B), "target": target, "calibration": plan.description, "ranges_s": {}}
    work = Path(tempfile.mkdtemp(prefix="diag-"))
    pre = work / "pre.onnx"
    quant_pre_process(str(B / "model.onnx"), str(pre))
    ranges = {}
    for name, o in OPTS.items():
        o = {**o, "num_bins": args.bins} if "num_bins" in o else o
        t = time.time()
        m = name.rstrip("0123456789").replace("256", "")
        reader = ImageCalibrationReader(plan.sets["main"], bundle.preprocess, batch_size=16)
        r = collect_ranges(pre, reader, calibration_method(m), quantized_ops(target), work, o)
        ranges[name] = {k: (float(np.asarray(v.range_value[0]).reshape(-1)[0]), float(np.asarray(v.range_value[1]).reshape(-1)[0]))
                        for k, v in r.data.items()}
        facts["ranges_s"][name] = round(time.time() - t, 1)
        log(f"{name} calibrated in {round(time.time() - t)} s")
    opts = quantize_options("minmax", target)
    opts["calibrate_method"] = CalibrationMethod.MinMax

    def q(rng: dict[str, tuple[float, float]], tag: str) -> np.ndarray:
        cache = work / f"{tag}.json"
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in rng.items()}), cache)
        out = work / f"{tag}.onnx"
        quantize_static(str(pre), str(out), None, calibration_cache_path=cache, **opts)
        logits = onnx_logits(out, inputs.batch)
        raw.values["records"][tag] = record(bundle, inputs, {"main": fp32}, {"main": logits})
        log(f"{tag}: agreement {100 * figures(raw.values['records'][tag])['agreement']:.1f}")
        return logits

    mm = ranges["minmax"]
    for name in OPTS:
        logits = q(ranges[name], name)
        if name == "minmax":  # where the minmax model's disagreements lie against the FP32 margin
            raw.values["records"][name].update(margin_record(fp32, logits))
    ent = ranges["entropy"]

    def amax(r: tuple[float, float]) -> float:
        return max(abs(r[0]), abs(r[1]))

    rows = sorted(((amax(ent[k]) / max(amax(mm[k]), 1e-12), k) for k in mm))
    facts["most_clipped_by_entropy"] = [{"tensor": k, "entropy_over_minmax_amax": round(ratio, 4), "minmax": mm[k],
                                         "entropy": ent[k], "percentile": ranges["percentile"][k]} for ratio, k in rows[:25]]
    # which tensors' entropy ranges cost the agreement: swap groups back to minmax ranges
    model = onnx.load(str(pre), load_external_data=False)
    init = {t.name for t in model.graph.initializer}

    def consumer_weight(t: str) -> str:
        for n in model.graph.node:
            if t in n.input[:1] and n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in init:
                return str(n.input[1])
        return ""

    kind = {k: consumer_weight(k) for k in ent}
    groups = {
        "input images": [k for k in ent if k == "images"],
        "backbone (not input)": [k for k in ent if k != "images" and kind[k].startswith("backbone")],
        "head (after backbone)": [k for k in ent if k != "images" and not kind[k].startswith("backbone")],
        "entropy ratio<0.5 tensors": [k for r, k in rows if r < 0.5],
    }
    facts["swaps"] = {}
    for g, keys in groups.items():
        mixed = dict(ent)
        mixed.update({k: mm[k] for k in keys if k in mm})
        tag = "entropy, minmax ranges for " + g
        facts["swaps"][tag] = len(keys)
        q(mixed, tag)
    # symmetric-histogram effect: a post-ReLU tensor (min >= 0) has half the levels unused by the KL model
    facts["non_negative_tensors"] = [sum(mm[k][0] >= 0 for k in mm), len(mm)]
    return facts, raw


def margin_bands(rec: dict[str, Any]) -> dict[str, Any]:
    """The minmax model against the FP32 top-1/top-2 margin: agreement per band of the margin."""
    margin, err = np.asarray(rec["fp32_margin"], float), np.asarray(rec["max_abs_error"], float)
    agree = np.asarray(rec["fp32"]) == np.asarray(rec["int8"])
    bands = []
    for lo, hi in zip(MARGIN_EDGES[:-1], MARGIN_EDGES[1:]):
        sel = (margin >= lo) & (margin < hi)
        if sel.any():
            bands.append({"margin": [lo, None if hi == float("inf") else hi], "images": int(sel.sum()),
                          "agreement": float(agree[sel].mean())})
    return {"median_fp32_margin": float(np.median(margin)), "median_max_abs_error": float(np.median(err)), "bands": bands}


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure from the per-image records (what `python -m benchmarks.recompute` runs again): per model its
    agreement, accuracies and ratios with their intervals; the minmax model's margin table."""
    recs = raw.values.get("records", {})
    out: dict[str, Any] = {"figures": {tag: figures(rec) for tag, rec in recs.items()}}
    if "fp32_margin" in recs.get("minmax", {}):
        out["minmax_margins"] = margin_bands(recs["minmax"])
    return out


def render(result: dict[str, Any]) -> str:
    lines = ["| model | top-1 agreement % [95 %] | worst int8/fp32 [95 %] |", "| --- | --- | --- |"]
    for tag, f in result["figures"].items():
        per = f.get("per_dataset") or {}
        worst = min(per, key=lambda n: per[n]["ratio"]) if per else None
        ratio = f"{worst} {per[worst]['ratio']:.3f} [{per[worst]['ratio_ci95'][0]:.3f}, {per[worst]['ratio_ci95'][1]:.3f}]" if worst else "-"
        lo, hi = f["agreement_ci95"]
        lines.append(f"| {tag} | {100 * f['agreement']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | {ratio} |")
    m = result.get("minmax_margins")
    if m:
        lines += ["", f"minmax: median FP32 margin {m['median_fp32_margin']:.3f}, median max|diff| {m['median_max_abs_error']:.3f}"]
        lines += [f"  margin [{b['margin'][0]}, {b['margin'][1]}): {b['images']} images, agreement {b['agreement']:.3f}"
                  for b in m["bands"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.int8_entropy_diagnosis", description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("target", nargs="?", default="tensorrt", choices=("tensorrt", "onnxruntime"))
    ap.add_argument("--data", action="append", default=None, help="NAME=PATH, once per data set (default: env DATA)")
    ap.add_argument("--calib-count", type=int, default=int(os.environ.get("CALIB", 256)))
    ap.add_argument("--eval-count", type=int, default=int(os.environ.get("EVAL", 100)))
    ap.add_argument("--bins", type=int, default=2048,
                    help="histogram bins of the histogram methods (the export's 2048; fewer: a faster, coarser diagnosis)")
    ap.add_argument("--json", type=Path, default=None, help="write the result here, its raw samples beside it")
    args = ap.parse_args(argv)
    args.data = args.data or os.environ.get("DATA", "").split()
    if not args.data:
        ap.error("give the data sets: --data NAME=PATH (once each) or env DATA")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    facts, raw = measure(args, log)
    settings = {"calib_count": args.calib_count, "eval_count": args.eval_count, "bins": args.bins}
    result = {"command": "python -m benchmarks.studies.int8_entropy_diagnosis " + " ".join(argv if argv is not None else sys.argv[1:]),
              "settings": settings, **facts, **derive(raw, settings)}
    print(render(result))
    if args.json:
        write_result(args.json, result, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
