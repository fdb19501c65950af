"""Why a calibration method loses agreement: each tensor's range by method (minmax, entropy with 128 and
256 quantized bins, percentile 99.999 and 99.99), the agreement of each, the tensors entropy clips most,
entropy with groups of tensors put back at their minmax range (input, backbone, head), and where the
disagreements of the minmax model lie against the FP32 top-1/top-2 margin.

    python -m benchmarks.studies.int8_entropy_diagnosis BUNDLE [tensorrt|onnxruntime] \
        (env DATA="digits=PATH mnist=PATH faces=PATH", CALIB=256, EVAL=100)

A diagnosis tool (benchmarks/results/int8.md, session 2), not part of the export path: it drives
onnxruntime.quantization directly with hand-made calibration caches. The histogram methods run
onnxruntime's pure-Python KL search: about 3 CPU-minutes per method on EfficientNet-Lite0.
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, quantize_static, save_tensors_data
from onnxruntime.quantization.calibrate import TensorsData
from onnxruntime.quantization.shape_inference import quant_pre_process

from erudite_edge.core.bundle import Bundle
from export.calibration import ImageCalibrationReader, calibration_sets, collect_ranges
from export.fp16 import agreement_inputs
from export.int8 import calibration_method, quantize_options, quantized_ops
from export.int8_sensitivity import Evaluator
from export.parity import onnx_logits


def main() -> None:
    B = Path(sys.argv[1])
    target = sys.argv[2] if len(sys.argv) > 2 else "tensorrt"
    data = os.environ["DATA"].split()
    bundle = Bundle.load(B)
    plan = calibration_sets(bundle, data=data, count=int(os.environ.get("CALIB", 256)), seed=0)
    inputs = agreement_inputs(bundle, images=None, data=data, count=int(os.environ.get("EVAL", 100)), log=None)
    ev = Evaluator(bundle, "main", B / "model.onnx", inputs)
    print("fp32 acc", ev.fp32_accuracy, flush=True)
    work = Path(tempfile.mkdtemp(prefix="diag-"))
    pre = work / "pre.onnx"
    quant_pre_process(str(B / "model.onnx"), str(pre))
    OPTS = {"minmax": {}, "entropy": {"num_bins": 2048, "num_quantized_bins": 128},
            "entropy256": {"num_bins": 2048, "num_quantized_bins": 256},
            "percentile": {"num_bins": 2048, "percentile": 99.999},
            "percentile9999": {"num_bins": 2048, "percentile": 99.99}}
    ranges = {}
    for name, o in OPTS.items():
        t = time.time()
        m = name.rstrip("0123456789").replace("256", "")
        reader = ImageCalibrationReader(plan.sets["main"], bundle.preprocess, batch_size=16)
        r = collect_ranges(pre, reader, calibration_method(m), quantized_ops(target), work, o)
        ranges[name] = {k: (float(np.asarray(v.range_value[0]).reshape(-1)[0]), float(np.asarray(v.range_value[1]).reshape(-1)[0])) for k, v in r.data.items()}
        print(name, "calibrated in", round(time.time() - t), "s", flush=True)
    json.dump(ranges, open(work / f"ranges_{target}.json", "w"))
    print("ranges saved in", work / f"ranges_{target}.json")
    opts = quantize_options("minmax", target)
    opts["calibrate_method"] = CalibrationMethod.MinMax
    def q(rng, tag, exclude=()):
        cache = work / f"{tag}.json"
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in rng.items()}), cache)
        out = work / f"{tag}.onnx"
        quantize_static(str(pre), str(out), None, calibration_cache_path=cache, nodes_to_exclude=list(exclude), **opts)
        m = ev(out)
        print(f"{tag}: agreement {100*m.agreement:.1f} acc {m.accuracy}", flush=True)
        return m
    mm = ranges["minmax"]
    for name in OPTS:
        q(ranges[name], name)
    ent = ranges["entropy"]
    def amax(r):
        return max(abs(r[0]), abs(r[1]))

    rows = sorted(((amax(ent[k]) / max(amax(mm[k]), 1e-12), k) for k in mm))
    print("most clipped by entropy (entropy amax / minmax amax):")
    for ratio, k in rows[:25]:
        print(f"  {ratio:.3f} {k} mm={mm[k]} ent={ent[k]} pct={ranges['percentile'][k]}")

    # which tensors' entropy ranges cost the agreement: swap groups back to minmax ranges
    model = onnx.load(str(pre), load_external_data=False)
    init = {t.name for t in model.graph.initializer}
    def consumer_weight(t):
        for n in model.graph.node:
            if t in n.input[:1] and n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in init:
                return n.input[1]
        return ""
    kind = {k: consumer_weight(k) for k in ent}
    groups = {
        "input images": [k for k in ent if k == "images"],
        "backbone (not input)": [k for k in ent if k != "images" and kind[k].startswith("backbone")],
        "head (after backbone)": [k for k in ent if k != "images" and not kind[k].startswith("backbone")],
    }
    groups["entropy ratio<0.5 tensors"] = [k for r, k in rows if r < 0.5]
    for g, keys in groups.items():
        mixed = dict(ent)
        mixed.update({k: mm[k] for k in keys if k in mm})
        print(f"entropy, {g} ({len(keys)} tensors) from minmax:", end=" ")
        q(mixed, "swap-" + g.split()[0])
    # symmetric-histogram effect: a post-ReLU tensor (min >= 0) has half the levels unused by the KL model
    pos = [k for k in mm if mm[k][0] >= 0]
    print(f"{len(pos)} of {len(mm)} calibrated tensors are non-negative (post-ReLU6)")

    # where the minmax model's disagreements lie: against the FP32 top-1/top-2 margin
    f = ev.fp32
    g = onnx_logits(work / "minmax.onnx", inputs.batch)
    top2 = np.sort(f, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    agree = f.argmax(1) == g.argmax(1)
    print(f"minmax: median FP32 margin {np.median(margin):.3f}, median max|diff| {np.median(np.abs(f - g).max(1)):.3f}")
    for lo, hi in [(0, .1), (.1, .25), (.25, .5), (.5, 1), (1, 2), (2, np.inf)]:
        sel = (margin >= lo) & (margin < hi)
        if sel.any():
            print(f"  margin [{lo}, {hi}): {int(sel.sum())} images, agreement {agree[sel].mean():.3f}")


if __name__ == "__main__":
    main()
