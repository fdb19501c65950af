"""Replicate bench runs: the same erudite/zoo bench run several times, minutes apart, each in its own
process, and one report of what holds across them.

    python -m benchmarks.studies.replicates --bundle ERUDITE --zoo ZOO --runs 3 --gap-s 600 --out runs/replicates \\
        -- --backend onnxruntime --precision fp32,int8 --batch 1,8 --min-duration-s 10 --rounds 10

(everything after `--` goes to `erudite-edge bench` as is). Run k writes OUT/run<k>/bench.json with its raw
samples and its measured load (benchmarks.load); `--report-only` rebuilds the report from runs already there.

The report (OUT/replicates.md and .json) lists, for every erudite/zoo ratio the goals judge (p50
latency at batch 1, throughput at batch 8) and every INT8/FP32 ratio, at every precision: each run's
point, 95 % interval and load label, and the between-run spread of the points. A verdict stands only
on at least 3 quiet runs whose own verdicts (benchmarks.stats.Verdict on each interval) agree; a run under
load is listed, labelled so, and left out of the verdict where 3 quiet runs remain; otherwise INCONCLUSIVE
with the reason (too few quiet runs, or quiet runs that disagree).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.goals import LATENCY_RATIO_B1, THROUGHPUT_RATIO_B8
from benchmarks.load import measured_busy, run_label
from benchmarks.stats import INCONCLUSIVE, Interval, Verdict
from erudite_edge.core.fileio import write_json_atomic, write_text_atomic

# (figure, batch, ratio key, op, limit)
FIGURES = (("p50 latency erudite/zoo", 1, "latency_p50", "<=", LATENCY_RATIO_B1),
           ("throughput erudite/zoo, mixed batch", 8, "throughput", ">=", THROUGHPUT_RATIO_B8))


def run_once(out: Path, bundle: Path, zoo: Path, bench_args: list[str]) -> Path:
    """One bench run in a fresh process (its own interpreter, allocator and thread pools)."""
    cmd = [sys.executable, "-m", "erudite_edge.cli.app", "bench", "--bundle", str(bundle), "--zoo", str(zoo),
           "--out", str(out), "--no-plot", *bench_args]
    print("+ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"bench run {out} exited {proc.returncode}")
    return out / "bench.json"


def _entries(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The figures of one run: name -> point, interval, verdict."""
    out: dict[str, dict[str, Any]] = {}
    for name, batch, key, op, limit in FIGURES:
        for row in result.get("latency", []):
            if row["batch"] != batch or "ratio" not in row:
                continue
            ci = (row.get("ratio_ci95") or {}).get(key)
            units = min(row[m].get("rounds", 0) for m in ("erudite", "zoo"))
            v = Verdict(Interval.from_json(ci, units), op, limit)
            out[f"{name}, batch {batch}, {row['precision']} ({op} {limit:g})"] = {
                "point": row["ratio"][key], "ci95": ci, "status": v.status, "reason": v.reason}
    for e in result.get("precision_ratios") or []:
        v = Verdict(Interval.from_json(e.get("ci95"), e.get("units"), e.get("paired", True)), "<=", 1.0)
        out[f"{e['model']} {e['precision']}/fp32 p50 latency, batch {e['batch']} (<= 1)"] = {
            "point": e["latency_p50"], "ci95": e.get("ci95"), "status": v.status, "reason": v.reason}
    return out


MIN_QUIET_RUNS = 3  # a replicate verdict rests on at least this many quiet runs


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure: every run's point, interval, verdict and load; the between-run spread (of every run); one
    verdict only from at least MIN_QUIET_RUNS quiet runs that agree. Runs under load are listed with their
    load; where there are enough quiet runs besides them they are left out of the verdict (and said so),
    otherwise they make it INCONCLUSIVE."""
    runs = []
    for r in results:  # labelled by today's rule (benchmarks.load.run_label) from what each run recorded
        series = [row.get("load") for row in r.get("latency", [])] + [e[m].get("load") for e in r.get("end_to_end", [])
                                                                     for m in ("erudite", "zoo") if m in e]
        quiet, label = run_label(series, measured_busy(r.get("load") or {})) if r.get("load") else (False, "load not measured")
        runs.append({"created": r.get("created"), "load": label, "quiet": quiet, "figures": _entries(r)})
    names = list(dict.fromkeys(n for run in runs for n in run["figures"]))
    quiet_runs = [k for k, run in enumerate(runs) if run["quiet"]]
    loaded = [k + 1 for k, run in enumerate(runs) if not run["quiet"]]
    figures = []
    for n in names:
        per = [run["figures"].get(n) for run in runs]
        points = [p["point"] for p in per if p]
        judged = [per[k] for k in quiet_runs] if len(quiet_runs) >= MIN_QUIET_RUNS else per
        statuses = {p["status"] for p in judged if p}
        aside = f"; run {', '.join(map(str, loaded))} under load: listed, not judged" if loaded and judged is not per else ""
        if any(p is None for p in judged):
            status, why = INCONCLUSIVE, "not measured in every run"
        elif judged is per and loaded:
            status, why = INCONCLUSIVE, (f"{len(loaded)} of {len(runs)} runs under load, {len(quiet_runs)} quiet "
                                         f"(a verdict needs {MIN_QUIET_RUNS} quiet runs)")
        elif len(statuses) > 1:
            status, why = INCONCLUSIVE, f"the quiet runs disagree ({', '.join(sorted(statuses))}){aside}"
        else:
            status, why = statuses.pop(), aside[2:]
        figures.append({"figure": n, "runs": per, "spread": [min(points), max(points)] if points else None,
                        "status": status, "reason": why})
    return {"runs": runs, "figures": figures}


def to_markdown(report: dict[str, Any], command: str) -> str:
    lines = ["# Replicate bench runs\n", f"`{command}`\n", "| run | started | load |", "| --- | --- | --- |"]
    lines += [f"| {k + 1} | {r['created']} | {r['load']} |" for k, r in enumerate(report["runs"])]
    head = "| figure | " + " | ".join(f"run {k + 1}" for k in range(len(report["runs"]))) + " | between-run spread | verdict |"
    lines += ["", head, "|" + " --- |" * (len(report["runs"]) + 3)]
    for f in report["figures"]:
        cells = ["-" if p is None else f"{p['point']:.3f} " + (f"[{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}] " if p["ci95"] else "")
                 + p["status"] for p in f["runs"]]
        spread = "-" if not f["spread"] else f"{f['spread'][0]:.3f}-{f['spread'][1]:.3f}"
        lines.append(f"| {f['figure']} | " + " | ".join(cells) + f" | {spread} | {f['status']}"
                     + (f" ({f['reason']})" if f["reason"] else "") + " |")
    lines.append(f"\nA verdict stands only on at least {MIN_QUIET_RUNS} quiet runs (benchmarks/README.md, \"Load\") whose own "
                 "verdicts on their intervals agree; a run under load is listed with its load, never as quiet, and left "
                 "out of the verdict (the spread still counts it).\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.replicates", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="the erudite bundle")
    ap.add_argument("--zoo", type=Path, help="the zoo bundle")
    ap.add_argument("--runs", type=int, default=3, help="separate bench runs (at least 3 for a replicate verdict)")
    ap.add_argument("--gap-s", type=float, default=0.0, help="seconds to wait between runs (different times of the machine)")
    ap.add_argument("--out", type=Path, required=True, help="OUT/run<k>/bench.json, OUT/replicates.{md,json}")
    ap.add_argument("--report-only", action="store_true", help="only rebuild the report from OUT/run*/bench.json")
    args = ap.parse_args(own)
    command = "python -m benchmarks.studies.replicates " + " ".join(shlex.quote(a) for a in argv)
    if not args.report_only:
        if args.bundle is None or args.zoo is None:
            ap.error("--bundle and --zoo (or --report-only)")
        if args.runs < 1:
            ap.error("--runs: at least 1")
        for k in range(args.runs):
            if k and args.gap_s:
                time.sleep(args.gap_s)
            run_once(args.out / f"run{k + 1}", args.bundle, args.zoo, bench_args)
    files = sorted(args.out.glob("run*/bench.json"), key=lambda p: int(p.parent.name[3:] or 0))
    if not files:
        print(f"error: {args.out}: no run*/bench.json to report on; run without --report-only first", file=sys.stderr)
        return 2
    report = combine([json.loads(f.read_text()) for f in files])
    report["command"] = command
    write_json_atomic(args.out / "replicates.json", report)
    write_text_atomic(args.out / "replicates.md", to_markdown(report, command))
    print(to_markdown(report, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
