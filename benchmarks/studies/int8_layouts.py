"""FP32 against both INT8 layouts (`export int8 --target tensorrt | onnxruntime`) on ONNX Runtime's CPU
provider: latency at each batch size, interleaved, medians, and top-1 agreement with FP32 on scikit-image's
sample photographs (with crops and flips).

    python -m benchmarks.studies.int8_layouts --bundle runs/paper_setting/N2/erudite --calib runs/paper_setting/photos

The two INT8 models are made from the bundle's FP32 model by the real export path
(export.int8.make_int8) in temporary copies of the bundle, so the bundle itself is not changed. For
each model it also counts what ONNX Runtime's optimised graph (extended level) runs: integer
convolutions (QLinearConv), float ones, and the QuantizeLinear / DequantizeLinear left around them,
which is why one layout is fast there and the other is not. Each INT8 model's p50 against FP32 has a
paired 95 % interval over the rounds, and "INT8 faster than FP32" (the bench's goal: the interval <= 1)
is judged on it. With --json the raw samples (every timed call, round by round, with the load; each
model's top-1 per photograph) go beside it (FILE.samples.json.gz): `python -m benchmarks.recompute FILE`
re-derives every figure. Needs onnx and onnxruntime, no torch.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.latency import Contender, interleaved, summarize
from benchmarks.load import load_summary
from benchmarks.raw import RawSamples, quantise, write_result
from benchmarks.stats import Verdict, latency_ratio_ci
from erudite_edge.core.bundle import Bundle


def optimised_ops(path: Path, work: Path) -> Counter[str]:
    """Op types of the graph ONNX Runtime's CPU provider runs (extended optimisations: the QDQ fusions)."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(work / f"optimised.{path.parent.name}.{path.name}")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _step(sess: Any, batch: np.ndarray) -> Callable[[], float | None]:
    """One timed call: run the batch (no device time to report on the CPU)."""

    def step() -> float | None:
        sess.run(None, {"images": batch})
        return None

    return step


def series_name(model: str, batch: int) -> str:
    return f"{model} batch {batch}"


def measure(args: argparse.Namespace, log: Any) -> tuple[dict[str, Any], RawSamples]:
    """The models' facts (file size, what ORT's optimised graph runs) and the raw samples: every timed call
    of every model at every batch size, round by round, with the load; each model's top-1 per photograph."""
    from export.images import check_inputs
    from export.int8 import TARGETS, Int8Options, make_int8

    bundle = Bundle.load(args.bundle, verify=True)
    role = args.role
    fp32_path = bundle.path(bundle.entry(role, "fp32"))
    inputs = check_inputs(bundle.preprocess, images=None, count=args.eval_count, log_fn=log)
    if len(inputs.batch) < max(args.batch):
        raise SystemExit(f"only {len(inputs.batch)} photographs; --batch at most that")
    facts: dict[str, Any] = {"bundle": str(args.bundle), "role": role, "threads": args.threads,
                             "agreement_images": inputs.source, "agreement_count": int(len(inputs.batch)), "models": {}}
    raw = RawSamples("int8_layouts")
    with tempfile.TemporaryDirectory(prefix="erudite-int8-layouts-") as tmp:
        work = Path(tmp)
        paths = {"fp32": fp32_path}
        for target in TARGETS:
            copy = work / target
            shutil.copytree(args.bundle, copy, ignore=shutil.ignore_patterns("*.engine", "*.engine.json"))
            log(f"making the int8 model for --target {target}")
            options = Int8Options(method="minmax", target=target, calib_images=args.calib, calib_count=args.calib_count,
                                  images=None, eval_count=args.eval_count)
            make_int8(Bundle.load(copy, verify=True), options, log=log)
            paths[f"int8 {target}"] = copy / Bundle.load(copy).entry(role, "int8").file
        sessions = {name: session(path, args.threads) for name, path in paths.items()}
        for name, sess in sessions.items():
            raw.values[f"top1/{name}"] = [int(v) for v in sess.run(None, {"images": inputs.batch})[0].argmax(1)]
        for name, path in paths.items():
            ops = optimised_ops(path, work)
            facts["models"][name] = {
                "file_mb": round(path.stat().st_size / 1e6, 2),
                "optimised_graph": {k: ops[k] for k in ("QLinearConv", "Conv", "FusedConv", "QGemm", "Gemm",
                                                        "QuantizeLinear", "DequantizeLinear")},
            }
        for b in args.batch:
            x = np.ascontiguousarray(inputs.batch[:b])
            contenders = [Contender(name, b, _step(s, x)) for name, s in sessions.items()]
            log(f"timing batch {b}: {', '.join(sessions)} interleaved, {args.rounds} rounds")
            samples = interleaved(contenders, warmup=args.warmup, iters=args.iters, rounds=args.rounds)
            for name in sessions:
                raw.series[series_name(name, b)] = quantise(samples[name])
    return facts, raw


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure from the raw samples (what `python -m benchmarks.recompute` runs again): each model's
    top-1 agreement with FP32; per batch size each model's latency statistics, its p50 against FP32 with
    the paired 95 % interval over the rounds, and for an INT8 model the bench's goal "INT8 faster than
    FP32" judged on that interval (<= 1; benchmarks.stats.Verdict); the load."""
    models = [k.removeprefix("top1/") for k in raw.values if k.startswith("top1/")]
    fp32_top1 = np.asarray(raw.values["top1/fp32"])
    out: dict[str, Any] = {"top1_agreement_vs_fp32": {m: float((np.asarray(raw.values[f"top1/{m}"]) == fp32_top1).mean())
                                                      for m in models if m != "fp32"}, "latency": {}}
    for i, b in enumerate(settings["batch"]):
        base = raw.series[series_name("fp32", b)]
        stats = {m: summarize(raw.series[series_name(m, b)], b) for m in models}
        row: dict[str, Any] = {}
        for m, st in stats.items():
            row[m] = {**st.to_dict(), "p50_vs_fp32": round(st.p50_ms / stats["fp32"].p50_ms, 3)}
            if m == "fp32":
                continue
            ci = latency_ratio_ci(raw.series[series_name(m, b)].round_latency_ms, base.round_latency_ms, 50, seed=(i, 1))
            v = Verdict(ci, "<=", 1.0)
            row[m].update(p50_vs_fp32_ci95=None if ci is None else [round(ci.lo, 5), round(ci.hi, 5)],
                          rounds=None if ci is None else ci.units, faster_than_fp32=v.status, reason=v.reason)
        out["latency"][str(b)] = row
    out["load"] = load_summary(raw.load_records())
    return out


def render(result: dict[str, Any]) -> str:
    batches = list(result["latency"])
    head = "| model | " + " | ".join(f"p50 ms, batch {b} (x FP32 [95 % interval])" for b in batches) + \
        " | top-1 agreement | QLinearConv / float Conv / DQ in ORT's graph |"
    lines = [f"Load: {result['load']['label']}.", "", head, "| --- " * (len(batches) + 3) + "|"]
    for name, m in result["models"].items():
        cells = []
        for b in batches:
            r = result["latency"][b][name]
            ci = r.get("p50_vs_fp32_ci95")
            cells.append(f"{r['p50_ms']:.1f} ({r['p50_vs_fp32']:.2f}"
                         + (f" [{ci[0]:.2f}, {ci[1]:.2f}] {r['faster_than_fp32']}" if ci else "") + ")")
        g = m["optimised_graph"]
        agree = "-" if name == "fp32" else f"{100 * result['top1_agreement_vs_fp32'][name]:.1f} %"
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {agree} | {g['QLinearConv']} / {g['Conv'] + g['FusedConv']} / {g['DequantizeLinear']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.int8_layouts", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True, help="bundle with an fp32 model (export onnx / zoo)")
    ap.add_argument("--role", default="main")
    ap.add_argument("--calib", type=Path, required=True, help="folder of calibration images")
    ap.add_argument("--calib-count", type=int, default=32)
    ap.add_argument("--eval-count", type=int, default=64, help="photographs for the agreement check")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1,
                    help="ONNX Runtime intra-op threads per session (1: steadiest on a shared machine)")
    ap.add_argument("--json", type=Path, default=None, help="write the result here too")
    args = ap.parse_args(argv)
    args.batch = sorted({int(v) for v in args.batch.split(",") if v.strip()})

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    facts, raw = measure(args, log)
    settings = {"batch": args.batch, "warmup": args.warmup, "iters": args.iters, "rounds": args.rounds}
    result = {"settings": settings, **facts, **derive(raw, settings),
              "command": "python -m benchmarks.studies.int8_layouts " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(render(result))
    if args.json:
        write_result(args.json, result, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
