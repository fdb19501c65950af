"""The issue's goals, judged from a bench result (the dict bench.run_bench returns / bench.json holds).

They were set for ResNet-50 at 224 px on ONNX Runtime on the CPU, N = 2 and N = 4; a run in another
setting is still judged, with a note saying the goal was set for that one. A goal whose measurement
is missing from the run (no batch 8, no --source, no INT8 model, ...) says what to add; it is
neither PASS nor FAIL. Goals are reported, never asserted: the bench exits 0 either way.

Every measured goal (erudite/zoo latency and throughput, end to end / pure inference, INT8 against
FP32) is judged on its 95 % interval through benchmarks.stats.Verdict, which cannot be built from a
point value: PASS only when the whole interval meets the goal, FAIL when the whole interval misses
it, else INCONCLUSIVE (the run cannot tell the ratio from noise, or it resampled fewer than 6 rounds;
rerun longer or on a quieter machine). Peak memory has no goal: it is reported (INFO), with an
interval from 10 fresh processes on and as the "spread of n" below. Exact quantities (model size)
are judged on their value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.stats import FAIL, INCONCLUSIVE, PASS, Interval, Verdict

GOAL_SETTING = "ResNet-50 at 224 px on ONNX Runtime CPU"
LATENCY_RATIO_B1 = 0.52
THROUGHPUT_RATIO_B8 = 1.9
SIZE_RATIO = {2: 0.45, 4: 0.30}
E2E_FRACTION_B8 = 0.85


@dataclass
class Goal:
    name: str
    status: str  # "PASS", "FAIL", "INCONCLUSIVE", "INFO" (reported, no threshold) or "N/A" (not measured)
    value: float | None
    threshold: str  # e.g. "<= 0.52"
    detail: str = ""
    ci95: list[float] | None = None  # the value's 95 % interval, where it has one

    def line(self) -> str:
        return goal_line(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def goal_line(g: dict[str, Any]) -> str:
    """`STATUS: name: value [lo, hi] threshold (detail)`."""
    v = "-" if g.get("value") is None else f"{g['value']:.3f}"
    ci = g.get("ci95")
    if ci:
        v += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    extra = f" ({g['detail']})" if g.get("detail") else ""
    return f"{g['status']}: {g['name']}: {v} {g['threshold']}{extra}".replace("  ", " ")


def _judge_exact(name: str, value: float | None, op: str, limit: float, detail: str, missing: str) -> Goal:
    """An exact quantity (a file size), judged on its value: never a measured one."""
    if value is None:
        return Goal(name, "N/A", None, f"{op} {limit:g}", missing)
    ok = value <= limit if op == "<=" else value >= limit
    return Goal(name, "PASS" if ok else "FAIL", value, f"{op} {limit:g}", detail)


def _judge_interval(name: str, value: float | None, ci: list[float] | None, units: int | None, op: str, limit: float,
                    detail: str, missing: str, paired: bool = True) -> Goal:
    """A measured ratio, judged on its 95 % interval over `units` rounds (no interval, or too few rounds:
    INCONCLUSIVE, saying why)."""
    if value is None:
        return Goal(name, "N/A", None, f"{op} {limit:g}", missing)
    v = Verdict(Interval.from_json(ci, units, paired), op, limit)
    why = v.reason
    if why == "no interval":
        why = "no interval (needs 2 or more rounds)"
    if why:
        detail = (detail + "; " if detail else "") + why
    return Goal(name, v.status, value, f"{op} {limit:g}", detail, list(ci) if ci else None)


def _row(result: dict[str, Any], precision: str, batch: int) -> dict[str, Any] | None:
    for r in result.get("latency", []):
        if r["precision"] == precision and r["batch"] == batch:
            return r
    return None


def _main_precision(result: dict[str, Any]) -> str:
    precs = result.get("settings", {}).get("precisions", [])
    return "fp32" if "fp32" in precs else (precs[0] if precs else "fp32")


def setting_note(result: dict[str, Any]) -> str:
    """Empty when the run is in the goals' setting, else what differs."""
    b = result.get("bundles", {}).get("erudite", {})
    backbone, size = b.get("backbone", "?"), b.get("input_size", [0, 0])
    backends = {r.get("backend", {}).get("erudite") for r in result.get("latency", [])}
    providers = result.get("host", {}).get("providers", [])
    cpu = backends <= {"onnxruntime"} and (not providers or providers[0] == "CPUExecutionProvider")
    if backbone == "resnet50" and list(size) == [224, 224] and cpu:
        return ""
    return (f"goals set for {GOAL_SETTING}; this run: {backbone} at {size[0]} px on "
            f"{'/'.join(sorted(x for x in backends if x)) or '?'}{' ' + providers[0] if providers else ''}")


def evaluate(result: dict[str, Any]) -> list[Goal]:
    goals: list[Goal] = []
    has_zoo = "zoo" in result.get("bundles", {})
    p = _main_precision(result)
    n = result.get("bundles", {}).get("erudite", {}).get("num_datasets")
    tag = f"N={n}, {p}"

    if has_zoo:
        r1 = _row(result, p, 1)
        goals.append(_judge_interval(f"latency erudite/zoo at batch 1 ({tag})",
                                     r1["ratio"]["latency_p50"] if r1 else None,
                                     (r1.get("ratio_ci95") or {}).get("latency_p50") if r1 else None, _rounds(r1),
                                     "<=", LATENCY_RATIO_B1,
                                     "p50 latencies, 95 % interval" if r1 else "", "not measured: add 1 to --batch"))
        r8 = _row(result, p, 8)
        goals.append(_judge_interval(f"throughput erudite/zoo at batch 8, mixed batch ({tag})",
                                     r8["ratio"]["throughput"] if r8 else None,
                                     (r8.get("ratio_ci95") or {}).get("throughput") if r8 else None, _rounds(r8),
                                     ">=", THROUGHPUT_RATIO_B8,
                                     "zoo batch split evenly across the data sets, 95 % interval" if r8 else "",
                                     "not measured: add 8 to --batch"))
        size = result.get("size_mb", {}).get(p) or {}
        limit = SIZE_RATIO.get(int(n)) if n else None
        if limit is None:
            goals.append(Goal(f"model size erudite/zoo ({tag})", "INFO", size.get("ratio"), "(goal set for N=2 and N=4)"))
        else:
            goals.append(_judge_exact(f"model size erudite/zoo ({tag})", size.get("ratio"), "<=", limit,
                                f"{size.get('erudite', 0):.1f} MB vs {size.get('zoo', 0):.1f} MB" if size.get("ratio") else "",
                                "model files missing"))

        mem = (result.get("memory") or {}).get(p) or {}
        if mem.get("ratio") is not None:
            spread = mem.get("ratio_spread") if not mem.get("ratio_ci95") else None
            goals.append(Goal(f"peak memory erudite/zoo, fresh processes ({tag})", "INFO", mem["ratio"], "(reported)",
                              f"RSS {mem['erudite']['median_mb']:.0f} vs {mem['zoo']['median_mb']:.0f} MB, median of "
                              f"{mem['repeats']}; without the interpreter's {mem['baseline']['median_mb']:.0f} MB: "
                              + ("-" if mem.get("net_ratio") is None else f"{mem['net_ratio']:.3f}")
                              + (f"; spread of {mem['repeats']} {spread[0]:.3f}-{spread[1]:.3f}, no interval below 10 processes"
                                 if spread else ""),
                              mem.get("ratio_ci95")))

    e2e = next((e for e in result.get("end_to_end", []) if e["precision"] == p and e["batch"] == 8), None)
    frac = e2e["erudite"]["ratio"] if e2e else None
    goals.append(_judge_interval(f"end-to-end folder throughput at batch 8 / pure inference (erudite, {p})", frac,
                                 e2e["erudite"].get("ratio_ci95") if e2e else None,
                                 e2e["erudite"].get("rounds") if e2e else None, ">=", E2E_FRACTION_B8,
                                 f"{e2e['erudite']['e2e_ips']:.1f} vs {e2e['erudite']['pure_ips']:.1f} images/s, medians "
                                 f"of {e2e['erudite'].get('rounds', '?')} rounds" if e2e else "",
                                 "not measured: give --source FOLDER and 8 in --batch"))

    precs = result.get("settings", {}).get("precisions", [])
    models: list[str] = ["erudite"] + (["zoo"] if has_zoo else [])
    for model in models:
        if "int8" not in precs or "fp32" not in precs:
            goals.append(Goal(f"INT8 faster than FP32 ({model})", "N/A", None, "< 1 (int8/fp32 p50 latency)",
                              "not measured: --precision fp32,int8"))
            continue
        goals.append(_int8_goal(result, model))
        agree = result.get("agreement", {}).get(model, {}).get("int8_vs_fp32")
        on = result.get("agreement", {}).get("on", "")
        goals.append(Goal(f"INT8 vs FP32 top-1 agreement ({model})", "INFO" if agree is not None else "N/A", agree,
                          "(reported)", f"on {result.get('agreement', {}).get('images', 0)} {on} images" if agree is not None
                          else "give --source FOLDER or --data SPEC"))
    return goals



def _rounds(row: dict[str, Any] | None) -> int | None:
    """The rounds both sides of a latency row were timed in (the units of its intervals)."""
    if not row:
        return None
    r = [row[m].get("rounds") for m in ("erudite", "zoo") if isinstance(row.get(m), dict) and row[m].get("rounds")]
    return min(r) if r else None


def _int8_goal(result: dict[str, Any], model: str) -> Goal:
    """INT8 faster than FP32 at every batch: each batch's int8/fp32 p50 latency ratio judged on its
    interval (bench's precision_ratios); PASS when every batch passes, FAIL when one fails, else
    INCONCLUSIVE. The value shown is the slowest batch's ratio."""
    name = f"INT8 faster than FP32 ({model}: int8/fp32 p50 latency, every batch)"
    entries = [e for e in result.get("precision_ratios") or [] if e["model"] == model and e["precision"] == "int8"]
    if not entries:
        return Goal(name, "N/A", None, "<= 1", "no batch measured at both precisions with intervals (rerun the bench)")
    verdicts = [(e, Verdict(Interval.from_json(e.get("ci95"), e.get("units"), e.get("paired", True)), "<=", 1.0))
                for e in entries]
    statuses = [v.status for _, v in verdicts]
    status = FAIL if FAIL in statuses else PASS if all(s == PASS for s in statuses) else INCONCLUSIVE
    worst, _ = max(verdicts, key=lambda ev: ev[0]["latency_p50"])
    parts = []
    for e, v in verdicts:
        ci = e.get("ci95")
        parts.append(f"batch {e['batch']}: {e['latency_p50']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
                     + f" {v.status}" + (f" ({v.reason})" if v.reason else ""))
    return Goal(name, status, worst["latency_p50"], "<= 1", "; ".join(parts), worst.get("ci95"))
