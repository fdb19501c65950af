"""The raw per-round samples behind a benchmark's summary, kept beside it as FILE.samples.json.gz.

A summary (bench.json, a study's JSON) holds medians, ratios and intervals; this file holds what they
were computed from: for every timed series its calls, round by round, and each round's images/s,
with the machine's load over the series; for the end-to-end measurement each round's images/s of
both sides; for memory each fresh process's peak. `python -m benchmarks.recompute FILE` re-derives
every interval and verdict of FILE from it.

Latencies are kept to 0.1 microsecond (4 decimals of a millisecond) and images/s to 4 decimals; the
bench rounds its samples so BEFORE computing anything from them (`quantise`), so the file holds exactly
the numbers the summary came from. Written atomically, gzip-compressed JSON.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.latency import Samples
from erudite_edge.core.fileio import write_bytes_atomic

FORMAT = "erudite-edge-samples"
FORMAT_VERSION = 1
SUFFIX = ".samples.json.gz"
DECIMALS = 4


def samples_path(summary: str | Path) -> Path:
    """bench.json -> bench.samples.json.gz (beside it)."""
    p = Path(summary)
    return p.with_name((p.name[: -len(p.suffix)] if p.suffix else p.name) + SUFFIX)


def quantise(s: Samples) -> Samples:
    """Round the samples in place to what the raw file keeps (so figures computed after this are the
    ones the file re-derives)."""
    s.round_latency_ms = [[round(v, DECIMALS) for v in r] for r in s.round_latency_ms]
    s.latency_ms = [v for r in s.round_latency_ms for v in r] if s.round_latency_ms else [round(v, DECIMALS) for v in s.latency_ms]
    s.round_ips = [round(v, DECIMALS) for v in s.round_ips]
    s.compute_ms = [round(v, DECIMALS) for v in s.compute_ms]
    return s


def series_to_json(s: Samples) -> dict[str, Any]:
    return {"round_latency_ms": s.round_latency_ms, "round_ips": s.round_ips, "compute_ms": s.compute_ms,
            "duration_s": round(s.duration_s, 6), "warmup_calls": s.warmup_calls, "load": s.load}


def series_from_json(d: dict[str, Any]) -> Samples:
    rounds = [list(map(float, r)) for r in d.get("round_latency_ms", [])]
    return Samples(latency_ms=[v for r in rounds for v in r], compute_ms=list(d.get("compute_ms", [])),
                   round_ips=list(map(float, d.get("round_ips", []))), round_latency_ms=rounds,
                   duration_s=float(d.get("duration_s", 0.0)), warmup_calls=int(d.get("warmup_calls", 0)),
                   load=d.get("load"))


@dataclass
class RawSamples:
    """What a run measured, before any statistic: named series (Samples), end-to-end rounds, memory peaks."""

    kind: str  # "bench", "step_time", ...
    series: dict[str, Samples] = field(default_factory=dict)
    end_to_end: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # name -> {"e2e_ips": [...], "pure_ips": [...]}
    memory: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # precision -> {model: peaks MB}

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind,
                "series": {k: series_to_json(v) for k, v in self.series.items()},
                "end_to_end": self.end_to_end, "memory": self.memory}

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = "") -> "RawSamples":
        if d.get("format") != FORMAT:
            raise ValueError(f"{where or 'raw samples'}: not an {FORMAT} file (format {d.get('format')!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{where}: {FORMAT} version {d.get('format_version')}, this code reads {FORMAT_VERSION}")
        return cls(d.get("kind", ""), {k: series_from_json(v) for k, v in (d.get("series") or {}).items()},
                   d.get("end_to_end") or {}, d.get("memory") or {})

    def write(self, summary: str | Path) -> Path:
        """Beside `summary`, atomically (a killed write leaves the previous file or none)."""
        path = samples_path(summary)
        data = json.dumps(self.to_json(), separators=(",", ":")).encode()
        write_bytes_atomic(path, gzip.compress(data, mtime=0))
        return path

    @classmethod
    def read(cls, summary: str | Path) -> "RawSamples":
        path = samples_path(summary)
        with gzip.open(path, "rt") as f:
            return cls.from_json(json.load(f), str(path))
