"""The bench's figures under the names MLPerf Inference gives its scenarios, plus the zoo's own case.

* single-stream: one query of one image at a time, the next sent when the last returns; the metric
  is the 90th-percentile latency (the bench's batch-1 series).
* offline: all the images at once, the metric is throughput; the bench reports each model at its
  best batch size among those measured (a model may peak at another batch than its rival).
* mixed batch (not an MLPerf scenario): the zoo's throughput on a batch whose images belong to
  different data sets, forced to split evenly (benchmarks.instrument), against the erudite model on
  the same batch: the case where the zoo pays one fine pass per data set present.

Each erudite/zoo ratio carries its 95 % bootstrap interval (benchmarks.stats): paired over the
interleaved rounds where both sides were timed together (same batch size), unpaired where the best
batches differ (they were timed in different interleaved runs).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from benchmarks.latency import Samples
from benchmarks.stats import throughput_ratio_ci

SINGLE_STREAM = "single-stream"
OFFLINE = "offline"
MIXED = "mixed-batch"


def _ci(v: tuple[float, float] | None) -> list[float] | None:
    return None if v is None else [round(v[0], 5), round(v[1], 5)]


def _row(rows: Sequence[Mapping[str, Any]], p: str, b: int) -> Mapping[str, Any] | None:
    return next((r for r in rows if r["precision"] == p and r["batch"] == b), None)


def scenarios(rows: Sequence[Mapping[str, Any]], samples: Mapping[tuple[str, str, int], Samples],
              precisions: Sequence[str], batches: Sequence[int], models: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """Single-stream, offline and mixed-batch entries per precision, from the latency rows (as
    run_bench builds them) and the samples behind them (keyed (model, precision, batch))."""
    zoo = "zoo" in models
    out: dict[str, Any] = {"single_stream": [], "offline": [], "mixed_batch": []}
    for k, p in enumerate(precisions):
        r1 = _row(rows, p, 1)
        if r1 is not None:
            entry: dict[str, Any] = {"scenario": SINGLE_STREAM, "precision": p, "batch": 1, "metric": "p90 latency (ms)"}
            for m in models:
                entry[m] = {"p90_ms": r1[m]["p90_ms"], "n": r1[m]["n"]}
            if zoo:
                entry["ratio"] = r1["ratio"]["latency_p90"]
                entry["ratio_ci95"] = (r1.get("ratio_ci95") or {}).get("latency_p90")
            out["single_stream"].append(entry)

        measured = [b for b in batches if _row(rows, p, b) is not None]
        if measured:
            entry = {"scenario": OFFLINE, "precision": p, "metric": "throughput (images/s), best batch"}
            best: dict[str, int] = {}
            for m in models:
                best[m] = max(measured, key=lambda b: _row(rows, p, b)[m]["throughput_ips"])  # type: ignore[index]
                rb = _row(rows, p, best[m])
                entry[m] = {"best_batch": best[m], "throughput_ips": rb[m]["throughput_ips"], "n": rb[m]["n"],  # type: ignore[index]
                            "rounds": rb[m].get("rounds")}  # type: ignore[index]
            if zoo:
                e, z = entry["erudite"], entry["zoo"]
                entry["ratio"] = e["throughput_ips"] / z["throughput_ips"]
                entry["paired"] = best["erudite"] == best["zoo"]
                if entry["paired"]:
                    entry["ratio_ci95"] = (_row(rows, p, best["erudite"]).get("ratio_ci95") or {}).get("throughput")  # type: ignore[union-attr]
                else:
                    se, sz = samples.get(("erudite", p, best["erudite"])), samples.get(("zoo", p, best["zoo"]))
                    entry["ratio_ci95"] = (_ci(throughput_ratio_ci(se.round_ips, sz.round_ips, paired=False, seed=(seed, k)))
                                           if se is not None and sz is not None else None)
            out["offline"].append(entry)

        if zoo:
            for b in measured:
                if b == 1:
                    continue
                r = _row(rows, p, b)
                out["mixed_batch"].append({
                    "scenario": MIXED, "precision": p, "batch": b, "metric": "throughput (images/s)",
                    "zoo_split": dict((r.get("calls") or {}).get("zoo") or {}),  # type: ignore[union-attr]
                    "erudite": {"throughput_ips": r["erudite"]["throughput_ips"], "n": r["erudite"]["n"]},  # type: ignore[index]
                    "zoo": {"throughput_ips": r["zoo"]["throughput_ips"], "n": r["zoo"]["n"]},  # type: ignore[index]
                    "ratio": r["ratio"]["throughput"],  # type: ignore[index]
                    "ratio_ci95": (r.get("ratio_ci95") or {}).get("throughput"),  # type: ignore[union-attr]
                })
    return out


__all__ = ["MIXED", "OFFLINE", "SINGLE_STREAM", "scenarios"]
