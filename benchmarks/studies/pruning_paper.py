"""Pruning in the paper's setting: ResNet-50 at 224 px, random initialisation (size and latency need no
training), N = 2 and 4 data sets (CUB, Cars; + Aircraft, Flowers: their class counts). For each N: the
erudite network (`ours`) and the Single zoo (a coarse model + N fine models), unpruned and pruned ALIKE
(`prune --ratio R`, the same options for every network of the zoo: train.prune), their parameters, MACs per
frame and ONNX Runtime latency per frame, all four timed interleaved by the bench's timer.

    python -m benchmarks.studies.pruning_paper --work runs/pruning_paper --ratio 0.4 --json benchmarks/results/pruning_paper/pruning_paper.json

A frame: the erudite network once; the zoo's coarse model, then one fine model (they take turns:
benchmarks.prune_latency.frame_step). The networks are exported by the TorchScript exporter (fast; `_export`). MACs per frame: fvcore's count of the deployed graph (for the zoo the
coarse model's plus the mean of the fine models'); parameters: every network's. Goals, judged on paired 95 %
intervals over the rounds only: pruned p50 <= 0.6x the unpruned p50 (erudite and zoo each), and the
erudite/zoo latency ratio kept when both are pruned alike: the interval of (pruned erudite / pruned zoo) /
(erudite / zoo) within [0.9, 1.1]. The raw samples and every model's facts go beside the JSON:
`python -m benchmarks.recompute FILE` re-derives the figures. Needs torch, Torch-Pruning, onnx, onnxruntime,
fvcore.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.latency import Contender, interleaved, summarize
from benchmarks.load import load_summary
from benchmarks.raw import RawSamples, quantise, write_result
from benchmarks.stats import Verdict, latency_ratio_ci, latency_ratio_of_ratios_ci

MODELS = ("erudite", "erudite pruned", "zoo", "zoo pruned")
LATENCY_GOAL = 0.6
KEPT = (0.9, 1.1)


def _networks(n: int, ratio: float, size: int, log: Callable[[str], None]) -> dict[str, list[Any]]:
    import torch

    from benchmarks.complexity import PAPER_CLASS_COUNTS, PAPER_SETS
    from train.model import build_model
    from train.model_spec import ModelConfig
    from train.prune import PruneOptions, prune_model

    counts = [PAPER_CLASS_COUNTS[s] for s in PAPER_SETS[n]]
    torch.manual_seed(0)
    erudite = build_model(ModelConfig(variant="ours", backbone="resnet50", class_counts=counts, pretrained=False)).eval()
    zoo = build_model(ModelConfig(variant="single", backbone="resnet50", class_counts=counts, pretrained=False)).eval()
    pruned_e, pruned_z = copy.deepcopy(erudite), copy.deepcopy(zoo)
    log(f"N={n}: pruning the erudite network and the zoo's {n + 1} networks at ratio {ratio:g}")
    prune_model(pruned_e, (size, size), PruneOptions(ratio=ratio))
    prune_model(pruned_z, (size, size), PruneOptions(ratio=ratio))
    return {"erudite": [erudite.inference_graph()], "erudite pruned": [pruned_e.inference_graph()],
            "zoo": [zoo.coarse, *zoo.fine], "zoo pruned": [pruned_z.coarse, *pruned_z.fine]}


def _facts(graphs: list[Any], size: int) -> dict[str, int]:
    import torch

    from benchmarks.complexity import torch_macs, torch_params

    x = (torch.zeros(1, 3, size, size),)
    macs = [torch_macs(g, x) for g in graphs]
    per_frame = macs[0] + (int(round(float(np.mean(macs[1:])))) if len(macs) > 1 else 0)
    return {"params": sum(torch_params(g) for g in graphs), "macs_per_frame": per_frame}


def _export(graph: Any, path: Path, size: int) -> None:
    """The TorchScript exporter (dynamo=False): about 2 s a ResNet-50 here, against minutes for `export onnx`'s
    torch.export path on this loaded 2-core machine (20 networks); the same Conv/BatchNorm/ReLU/Gemm graph, which
    ONNX Runtime fuses alike. Batch 1, float32 NCHW."""
    import torch

    with torch.no_grad():
        torch.onnx.export(graph.eval(), (torch.zeros(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["logits"])


def measure(args: argparse.Namespace, log: Callable[[str], None]) -> RawSamples:
    from benchmarks.prune_latency import frame_step
    from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner

    raw = RawSamples("pruning_paper")
    x = np.random.default_rng(0).random((1, 3, args.size, args.size)).astype(np.float32)
    for n in args.ns:
        nets = _networks(n, args.ratio, args.size, log)
        steps = []
        for name in MODELS:
            raw.values[f"facts/N{n}/{name}"] = _facts(nets[name], args.size)
            runners = []
            for i, graph in enumerate(nets[name]):
                path = Path(args.work) / f"N{n}" / name.replace(" ", "-") / f"net{i}.onnx"
                if not path.exists():
                    log(f"N={n}: exporting {name} network {i}")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    _export(graph, path, args.size)
                runners.append(OnnxRuntimeRunner(path, threads=args.threads))
            steps.append(Contender(name, 1, frame_step(runners, x)))
        log(f"N={n}: timing {', '.join(MODELS)} interleaved, {args.rounds} rounds, {args.iters} calls each")
        samples = interleaved(steps, warmup=args.warmup, iters=args.iters, rounds=args.rounds)
        for name in MODELS:
            raw.series[f"N{n}/{name}"] = quantise(samples[name])
    return raw


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Per N and model: parameters, MACs per frame, p50 ms; pruned against unpruned (x, paired 95 % interval,
    goal <= 0.6x); erudite against zoo, unpruned and pruned, and whether that ratio is kept; the load."""
    out: dict[str, Any] = {}
    ns = sorted({int(k.split("/")[1][1:]) for k in raw.values if k.startswith("facts/")})
    for n in ns:
        s = {name: raw.series[f"N{n}/{name}"] for name in MODELS}
        rows: dict[str, Any] = {}
        for i, name in enumerate(MODELS):
            f = raw.values[f"facts/N{n}/{name}"]
            row: dict[str, Any] = {**f, "p50_ms": round(summarize(s[name], 1).p50_ms, 4)}
            if name.endswith("pruned"):
                base = name.removesuffix(" pruned")
                fb = raw.values[f"facts/N{n}/{base}"]
                ci = latency_ratio_ci(s[name].round_latency_ms, s[base].round_latency_ms, 50, seed=(n, i))
                row.update(params_vs_unpruned=round(f["params"] / fb["params"], 4),
                           macs_vs_unpruned=round(f["macs_per_frame"] / fb["macs_per_frame"], 4),
                           p50_vs_unpruned=round(row["p50_ms"] / rows[base]["p50_ms"], 4),
                           p50_vs_unpruned_ci95=None if ci is None else [round(ci.lo, 4), round(ci.hi, 4)],
                           latency_goal=Verdict(ci, "<=", LATENCY_GOAL).status)
            rows[name] = row
        pair: dict[str, Any] = {}
        for tag, e, z in (("unpruned", "erudite", "zoo"), ("pruned", "erudite pruned", "zoo pruned")):
            ci = latency_ratio_ci(s[e].round_latency_ms, s[z].round_latency_ms, 50, seed=(n, 7))
            pair[f"erudite_vs_zoo_{tag}"] = round(rows[e]["p50_ms"] / rows[z]["p50_ms"], 4)
            pair[f"erudite_vs_zoo_{tag}_ci95"] = None if ci is None else [round(ci.lo, 4), round(ci.hi, 4)]
        rr = latency_ratio_of_ratios_ci(s["erudite pruned"].round_latency_ms, s["zoo pruned"].round_latency_ms,
                                        s["erudite"].round_latency_ms, s["zoo"].round_latency_ms, 50, seed=(n, 9))
        low, high = Verdict(rr, ">=", KEPT[0]).status, Verdict(rr, "<=", KEPT[1]).status
        pair["ratio_kept_ci95"] = None if rr is None else [round(rr.lo, 4), round(rr.hi, 4)]
        pair["ratio_kept_goal"] = "PASS" if low == high == "PASS" else "FAIL" if "FAIL" in (low, high) else "INCONCLUSIVE"
        out[f"N{n}"] = {"models": rows, **pair}
    return {"by_n": out, "load": load_summary(raw.load_records())}


def render(result: dict[str, Any]) -> str:
    lines = [f"Load: {result['load']['label']}.", ""]
    for key, r in result["by_n"].items():
        lines += [f"### {key}", "",
                  "| model | params | MACs / frame | p50 ms / frame | x unpruned [95 % interval], <= 0.6x? |",
                  "| --- | --- | --- | --- | --- |"]
        for name, m in r["models"].items():
            ci = m.get("p50_vs_unpruned_ci95")
            vs = f"{m['p50_vs_unpruned']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}], {m['latency_goal']}" if ci else "-"
            if "params_vs_unpruned" in m:
                p, mac = f" ({m['params_vs_unpruned']:.2f}x)", f" ({m['macs_vs_unpruned']:.2f}x)"
            else:
                p = mac = ""
            lines.append(f"| {name} | {m['params'] / 1e6:.2f} M{p} | {m['macs_per_frame'] / 1e9:.2f} G{mac} | "
                         f"{m['p50_ms']:.1f} | {vs} |")
        u, p, k = r["erudite_vs_zoo_unpruned_ci95"], r["erudite_vs_zoo_pruned_ci95"], r["ratio_kept_ci95"]
        lines += ["", f"erudite / zoo p50: unpruned {r['erudite_vs_zoo_unpruned']:.2f} [{u[0]:.2f}, {u[1]:.2f}], pruned "
                  f"{r['erudite_vs_zoo_pruned']:.2f} [{p[0]:.2f}, {p[1]:.2f}]; pruned ratio / unpruned ratio "
                  f"[{k[0]:.2f}, {k[1]:.2f}] (kept within [{KEPT[0]}, {KEPT[1]}]?: {r['ratio_kept_goal']})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.pruning_paper", description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="folder for the ONNX models (reused when present)")
    ap.add_argument("--ns", default="2,4", help="numbers of data sets (2, 3, 4)")
    ap.add_argument("--ratio", type=float, default=0.4, help="prune --ratio, the same for every network")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (1: steadiest on a shared machine)")
    ap.add_argument("--json", type=Path, default=None, help="write the result here too (raw samples beside it)")
    args = ap.parse_args(argv)
    args.ns = [int(v) for v in args.ns.split(",") if v.strip()]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    raw = measure(args, log)
    settings = {"ns": args.ns, "ratio": args.ratio, "size": args.size, "warmup": args.warmup, "iters": args.iters,
                "rounds": args.rounds, "threads": args.threads}
    from benchmarks.studies.pruning import versions

    result = {"settings": settings, **derive(raw, settings), "versions": versions(),
              "command": "python -m benchmarks.studies.pruning_paper " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(render(result))
    if args.json:
        write_result(args.json, result, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
