"""Re-derive every interval and verdict of a published result from its raw samples.

    python -m benchmarks.recompute FILE.json [FILE.json ...]

FILE.json is a bench.json (or a study's JSON written with raw samples); its raw per-round samples
lie beside it as FILE.samples.json.gz (benchmarks.raw). Every figure the summary publishes from
samples (each series' p50 / p90 / throughput, each erudite/zoo ratio and its interval, INT8 against
FP32, end to end against pure inference, memory, and every goal's verdict) is computed again from
the raw file with the code the run used and compared with the published one. A study's file is
recomputed by the study's own `derive(raw, settings)` (the function its run published with): every
figure it returns, load label and verdicts included, against the file's. Prints one line per
figure that differs and a count; exit 0 when every figure matched, 1 when any differed, 2 when a
file is missing or unreadable.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchmarks.raw import RawSamples, samples_path


@dataclass
class Check:
    figure: str
    published: Any
    recomputed: Any

    @property
    def ok(self) -> bool:
        return _same(self.published, self.recomputed)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _ci(v: Any) -> list[float] | None:
    return None if v is None else [round(v[0], 5), round(v[1], 5)]


def recompute_bench(result: dict[str, Any], raw: RawSamples) -> list[Check]:
    """Every sample-derived figure of a bench.json, from its raw samples."""
    from benchmarks.bench import e2e_name, e2e_seed, erudite_zoo_ratios, precision_ratios, ratio_seed, series_name
    from benchmarks.end_to_end import ratio_interval
    from benchmarks.goals import evaluate
    from benchmarks.latency import summarize
    from benchmarks.memory import ratio_figures

    s = result["settings"]
    precisions, batches, seed = s["precisions"], s["batches"], s.get("seed", 0)
    models = [m for m in ("erudite", "zoo") if m in result.get("bundles", {})]
    checks: list[Check] = []
    again = json.loads(json.dumps(result))  # the result with every derived figure replaced by its recomputation
    kept = {}
    for row, new in zip(result.get("latency", []), again.get("latency", [])):
        p, b = row["precision"], row["batch"]
        for m in models:
            sm = raw.series[series_name(m, p, b)]
            kept[m, p, b] = sm
            st = summarize(sm, b).to_dict()
            for k in ("n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_ips", "cv", "rounds"):
                checks.append(Check(f"{m} {p} batch {b} {k}", row[m].get(k), st[k]))
                new[m][k] = st[k]
        if "ratio" in row:
            ratio, ci = erudite_zoo_ratios(kept["erudite", p, b], kept["zoo", p, b], new,
                                           seed=ratio_seed(seed, b, precisions.index(p)))
            for k in ratio:
                checks.append(Check(f"erudite/zoo {p} batch {b} {k}", row["ratio"].get(k), ratio[k]))
                checks.append(Check(f"erudite/zoo {p} batch {b} {k} 95 % CI", (row.get("ratio_ci95") or {}).get(k), ci[k]))
            new["ratio"], new["ratio_ci95"] = ratio, ci
    if "precision_ratios" in result:
        pr = precision_ratios(kept, precisions, batches, models, seed, paired=s.get("interleave_precisions", True))
        for pub, rec in zip(result["precision_ratios"], pr):
            tag = f"{rec['model']} {rec['precision']}/fp32 batch {rec['batch']}"
            checks.append(Check(f"{tag} p50 latency ratio", pub["latency_p50"], rec["latency_p50"]))
            checks.append(Check(f"{tag} 95 % CI", pub["ci95"], rec["ci95"]))
        checks.append(Check("INT8/FP32 entries", len(result["precision_ratios"]), len(pr)))
        again["precision_ratios"] = pr
    for row, new in zip(result.get("end_to_end", []), again.get("end_to_end", [])):
        p, b = row["precision"], row["batch"]
        for m in models:
            if m not in row:
                continue
            r = raw.end_to_end[e2e_name(p, b, m)]
            e2e, pure = statistics.median(r["e2e_ips"]), statistics.median(r["pure_ips"])
            ci = _ci(ratio_interval(r["e2e_ips"], r["pure_ips"], e2e_seed(seed, b, m)))
            checks.append(Check(f"end to end {m} {p} batch {b} ratio", row[m]["ratio"], round(e2e / pure, 4)))
            checks.append(Check(f"end to end {m} {p} batch {b} 95 % CI", row[m].get("ratio_ci95"), ci))
            new[m]["ratio"], new[m]["ratio_ci95"], new[m]["rounds"] = round(e2e / pure, 4), ci, len(r["e2e_ips"])
    for p, mem in (result.get("memory") or {}).items():
        if "error" in mem or p not in raw.memory or "zoo" not in raw.memory[p]:
            continue
        pk = raw.memory[p]
        fig = ratio_figures(pk["erudite"], pk["zoo"], pk["baseline"], seed)
        for k in ("ratio", "ratio_ci95", "net_ratio", "net_ratio_ci95", "ratio_spread"):
            if k in mem:
                checks.append(Check(f"memory {p} {k}", mem[k], fig[k]))
        again["memory"][p].update(fig)
    published = {g["name"]: g for g in result.get("goals", [])}
    for g in evaluate(again):
        pub = published.get(g.name)
        checks.append(Check(f"goal {g.name}", None if pub is None else (pub["status"], pub.get("ci95")), (g.status, g.ci95)))
    return checks


def recompute_step_time(result: dict[str, Any], raw: RawSamples) -> list[Check]:
    """The training step-time study: its ratios, intervals and goal, from its raw samples."""
    from benchmarks.studies.step_time import derive

    again = derive(raw.series, result["settings"])
    checks = [Check(f"{k} 95 % CI", v.get("ci95"), again["ratios"].get(k, {}).get("ci95"))
              for k, v in result.get("ratios", {}).items()]
    checks += [Check(f"{k} median ratio", v.get("median_ratio"), again["ratios"].get(k, {}).get("median_ratio"))
               for k, v in result.get("ratios", {}).items()]
    if "goal" in result:
        checks.append(Check("goal", (result["goal"]["status"], result["goal"].get("ci95")),
                            (again["goal"]["status"], again["goal"].get("ci95"))))
    return checks


def compare(published: Any, recomputed: Any, figure: str = "") -> list[Check]:
    """One Check per leaf of `recomputed` (a derived dict) against the same place in `published`."""
    if isinstance(recomputed, dict):
        if not isinstance(published, dict):
            return [Check(figure, published, recomputed)]
        return [c for k, v in recomputed.items() for c in compare(published.get(k), v, f"{figure} {k}".strip())]
    if (isinstance(recomputed, list) and isinstance(published, list) and len(published) == len(recomputed)
            and any(isinstance(v, (dict, list)) for v in recomputed)):
        return [c for i, (p, r) in enumerate(zip(published, recomputed)) for c in compare(p, r, f"{figure}[{i}]")]
    return [Check(figure, published, recomputed)]


def study_recomputer(module: str) -> Callable[[dict[str, Any], RawSamples], list[Check]]:
    """A study whose module has `derive(raw, settings) -> figures`: every figure it derives, compared."""

    def recompute_study(result: dict[str, Any], raw: RawSamples) -> list[Check]:
        derive = importlib.import_module(module).derive
        return compare(result, derive(raw, result.get("settings") or {}))

    return recompute_study


STUDIES = ("api_overhead", "int8_entropy_diagnosis", "int8_layouts", "int8_paper_setting", "int8_quality", "live_frames",
           "meta_features_accuracy", "multistream", "preprocess_uint8", "pruning", "pruning_paper", "stream_latency",
           "time_by_module")
RECOMPUTERS: dict[str, Callable[[dict[str, Any], RawSamples], list[Check]]] = {
    "bench": recompute_bench, "step_time": recompute_step_time,
    **{kind: study_recomputer(f"benchmarks.studies.{kind}") for kind in STUDIES},
    "triton": study_recomputer("benchmarks.triton"),
}


def recompute(path: str | Path) -> list[Check]:
    """Read FILE and FILE.samples.json.gz and recompute (ValueError / OSError where they cannot be read)."""
    path = Path(path)
    result = json.loads(path.read_text())
    raw = RawSamples.read(path)
    fn = RECOMPUTERS.get(raw.kind)
    if fn is None:
        raise ValueError(f"{samples_path(path)}: samples of a {raw.kind!r} run; this code recomputes {', '.join(RECOMPUTERS)}")
    return fn(result, raw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.recompute", description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="bench.json (or a study's JSON) with FILE.samples.json.gz beside it")
    args = ap.parse_args(argv)
    worst = 0
    for f in args.files:
        try:
            checks = recompute(f)
        except FileNotFoundError as e:
            print(f"error: {e.filename}: not found; a result is recomputed from the raw samples file written beside "
                  f"it ({samples_path(f).name}); results published before the raw files existed are not re-derivable",
                  file=sys.stderr)
            return 2
        except (ValueError, KeyError, OSError, EOFError) as e:
            print(f"error: {f}: cannot recompute ({type(e).__name__}: {e})", file=sys.stderr)
            return 2
        bad = [c for c in checks if not c.ok]
        for c in bad:
            print(f"{f}: DIFFERS {c.figure}: published {c.published}, recomputed {c.recomputed}")
        print(f"{f}: {len(checks) - len(bad)} of {len(checks)} figures re-derived from {samples_path(f).name}"
              + ("" if not bad else f"; {len(bad)} differ"))
        worst = max(worst, 1 if bad else 0)
    return worst


if __name__ == "__main__":
    sys.exit(main())
