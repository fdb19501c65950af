"""Where an erudite model's time goes: backbone against the erudite modules, from ONNX Runtime's profiler.

    python -m benchmarks.studies.time_by_module --bundle runs/paper_setting/N4/erudite [--zoo runs/paper_setting/N4/zoo]
        [--batch 1] [--iters 60] [--out benchmarks/results/time_by_module_N4.json]

Issue 17 item 8 asks, when the erudite/zoo latency ratio misses its goal, where the erudite model's extra
time goes (heads, gate, softmax, host work). This runs the bundle's FP32 model with ONNX Runtime's own
profiler (`SessionOptions.enable_profiling`, the session settings `run` uses: spinning off) and sums the
per-node kernel times of each part of the graph:

  preprocess   the uint8 input's Cast / Transpose / Mul / Add (bundles exported with `--input uint8`)
  backbone     every node up to the attention layer
  attention    the first Sigmoid (the attention's) and the nodes that apply it, up to the heads' Conv
  heads+gate   the dataset-specific projection heads, the gated re-fusion (softmax over heads) and pooling
  classifier   the joint classifier G (from its BatchNorm / first FC after the gate's softmax)

The parts are told apart by position in the topologically sorted graph, anchored on op types (the
attention's Sigmoid: the backbones exported here have none of their own; the first Conv after it is the
heads'; G's first BatchNorm or FC after the gate's Softmax). ONNX Runtime renames the nodes it rewrites
("fused X", "X_nchwc"); the names are mapped back, and a kernel it adds itself (a layout reorder) is
counted with the kernel before it. With `--zoo`, each zoo model's total is profiled the same way, so the
erudite backbone's time can be set against one ResNet-50 of the zoo. The session's wall time per call
is reported beside the sum of kernel times: the difference is ONNX Runtime's own overhead between kernels.

With --out, the raw samples (every profiled call's wall time and kernel time per part, and the load) go
beside the JSON (OUT.samples.json.gz): `python -m benchmarks.recompute OUT` re-derives every figure.

ONNX Runtime's profiler is used rather than timing sub-graphs by hand: it times each kernel inside the
real session, with the real fusions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load import load_summary, recorded
from benchmarks.raw import RawSamples, rounded, write_result
from erudite_edge.core.bundle import Bundle

PARTS = ("preprocess", "backbone", "attention", "heads+gate", "classifier")


def classify_nodes(model_path: Path) -> dict[str, str]:
    """Node name, and node output name, -> part of the graph (see the module docstring)."""
    import onnx

    nodes = list(onnx.load(str(model_path), load_external_data=False).graph.node)
    ops = [n.op_type for n in nodes]
    first_conv = ops.index("Conv") if "Conv" in ops else 0
    sig = ops.index("Sigmoid") if "Sigmoid" in ops else None
    heads = next((i for i in range(sig + 1, len(nodes)) if ops[i] == "Conv"), None) if sig is not None else None
    # G starts at its BatchNorm / first FC after the gate's softmax (or, without a gate, after the last Conv)
    after = ops.index("Softmax") if "Softmax" in ops else max((i for i, o in enumerate(ops) if o == "Conv"), default=0)
    g = next((i for i in range(after + 1, len(nodes)) if ops[i] in ("BatchNormalization", "Gemm", "MatMul")), len(nodes))
    parts = {}
    for i, n in enumerate(nodes):
        if i < first_conv:
            part = "preprocess"
        elif i >= g:
            part = "classifier"
        elif sig is None or i < sig:
            part = "backbone"
        elif heads is None or i < heads:
            part = "attention"
        else:
            part = "heads+gate"
        parts[n.name] = part
        for out in n.output:  # ONNX Runtime names an NCHWc kernel after the output of the nodes it fused
            parts.setdefault(out, part)
    return parts


def event_part(name: str, parts: dict[str, str]) -> str | None:
    """The part of a profiled kernel, through ONNX Runtime's renaming of the nodes it rewrote ("fused X",
    "X_nchwc" for NCHWc convolutions); None for a node it made itself (a layout reorder), which belongs to
    the part of the kernel before it."""
    base = name.removeprefix("fused ").removesuffix("_nchwc")
    for candidate in (base, "node_" + base):
        if candidate in parts:
            return parts[candidate]
    return None


def _session(path: Path, profile_prefix: str | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _feed(sess, batch: int) -> dict[str, np.ndarray]:
    inp = sess.get_inputs()[0]
    shape = [batch] + [int(d) for d in inp.shape[1:]]
    rng = np.random.default_rng(0)
    if "uint8" in inp.type:
        return {inp.name: rng.integers(0, 256, shape, dtype=np.uint8)}
    return {inp.name: rng.standard_normal(shape).astype(np.float32)}


def per_call_parts(events: list[dict[str, Any]], parts_of: dict[str, str], iters: int) -> tuple[list[dict[str, float]], int]:
    """Per-part kernel ms of each of the last `iters` model runs in a profile, and how many kernels were
    named by position (ONNX Runtime's own, counted with the kernel before them)."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[-iters:]
    kernels = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                     key=lambda e: e["ts"])
    per_call: list[dict[str, float]] = []
    unknown: set[str] = set()
    for r in runs:
        start, end = r["ts"], r["ts"] + r["dur"]
        acc: dict[str, float] = {p: 0.0 for p in PARTS}
        part = "preprocess"
        for e in kernels:
            if start <= e["ts"] <= end:
                name = e["name"][: -len("_kernel_time")]
                found = event_part(name, parts_of)
                if found is None:
                    unknown.add(name)
                part = found or part
                acc[part] += e["dur"] / 1e3
        per_call.append(acc)
    return per_call, len(unknown)


def split_calls(per_call: list[dict[str, float]]) -> dict[str, Any]:
    """Median per part over the calls, the median total, and each part's share of it."""
    med = {p: statistics.median(c.get(p, 0.0) for c in per_call) for p in PARTS}
    total = statistics.median(sum(c.values()) for c in per_call)
    return {"n": len(per_call), "kernels_p50_ms": total, "parts_p50_ms": med,
            "parts_share": {p: (med[p] / total if total else None) for p in PARTS}}


def split_profile(events: list[dict[str, Any]], parts_of: dict[str, str], iters: int) -> dict[str, Any]:
    """Per-part kernel time of the last `iters` model runs in a profile (median over runs, ms)."""
    per_call, unknown = per_call_parts(events, parts_of, iters)
    return {**split_calls(per_call), "kernels_named_by_position": unknown}


def profile_calls(paths: dict[str, Path], batch: int, iters: int, warmup: int = 5) -> RawSamples:
    """Profile several models with their calls interleaved (one call of each in turn), so that a burst of
    other work on the machine falls on all of them alike. The raw samples: per model every timed call's
    wall ms and its kernel ms per part (rounded), kernels named by position, and the load."""
    raw = RawSamples("time_by_module")
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {k: _session(p, os.path.join(tmp, f"prof{i}")) for i, (k, p) in enumerate(paths.items())}
        feeds = {k: _feed(s, batch) for k, s in sessions.items()}
        walls: dict[str, list[float]] = {k: [] for k in sessions}
        with recorded(raw.loads, "profiled calls"):
            for i in range(warmup + iters):
                for k, sess in sessions.items():
                    t = time.perf_counter()
                    sess.run(None, feeds[k])
                    if i >= warmup:
                        walls[k].append((time.perf_counter() - t) * 1e3)
        for k, sess in sessions.items():
            events = json.loads(Path(sess.end_profiling()).read_text())
            per_call, unknown = per_call_parts(events, classify_nodes(paths[k]), iters)
            raw.values[k] = {"wall_ms": rounded(walls[k]), "parts_ms": rounded(per_call), "kernels_named_by_position": unknown}
    return raw


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure from the raw samples (what `python -m benchmarks.recompute` runs again): per model the
    median wall time per call, the median kernel time per part and in all, the shares; the load."""
    models = {k: {"model": settings["models"][k], "batch": settings["batch"],
                  "wall_p50_ms": statistics.median(v["wall_ms"]), **split_calls(v["parts_ms"]),
                  "kernels_named_by_position": v["kernels_named_by_position"]} for k, v in raw.values.items()}
    return {"erudite": models.pop("erudite"), "zoo": models, "load": load_summary(raw.load_records())}


def profile_models(paths: dict[str, Path], batch: int, iters: int, warmup: int = 5) -> dict[str, dict[str, Any]]:
    """profile_calls, summarised per model."""
    raw = profile_calls(paths, batch, iters, warmup)
    return {k: {"model": str(paths[k]), "batch": batch, "wall_p50_ms": statistics.median(v["wall_ms"]),
                **split_calls(v["parts_ms"]), "kernels_named_by_position": v["kernels_named_by_position"]}
            for k, v in raw.values.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--zoo", type=Path)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    bundle = Bundle.load(a.bundle)
    paths = {"erudite": bundle.path(bundle.entry("main"))}
    if a.zoo:
        zoo = Bundle.load(a.zoo)
        paths.update({f"zoo {role}": zoo.path(zoo.entry(role)) for role in zoo.roles()})
    raw = profile_calls(paths, a.batch, a.iters)
    settings = {"batch": a.batch, "iters": a.iters, "models": {k: str(p) for k, p in paths.items()}}
    result: dict[str, Any] = {"settings": settings,
                              "command": "python -m benchmarks.studies.time_by_module " + " ".join(argv or sys.argv[1:]),
                              **derive(raw, settings)}
    e = result["erudite"]
    print(f"erudite, batch {a.batch}, n = {e['n']}: wall p50 {e['wall_p50_ms']:.2f} ms, kernels {e['kernels_p50_ms']:.2f} ms")
    for p in PARTS:
        print(f"  {p:<11} {e['parts_p50_ms'][p]:8.2f} ms  {100 * (e['parts_share'][p] or 0):5.1f} %")
    for role, z in result["zoo"].items():
        print(f"{role}: wall p50 {z['wall_p50_ms']:.2f} ms, kernels {z['kernels_p50_ms']:.2f} ms (n = {z['n']})")
    print(f"load: {result['load']['label']}")
    if a.out:
        write_result(a.out, result, raw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
