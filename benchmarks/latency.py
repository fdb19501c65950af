"""Interleaved timing: several contenders take turns, round after round, so that machine noise (other
processes, thermal throttling, a busy shared CPU) hits all of them alike; statistics are medians.

A contender is a callable that runs one batch and returns the device compute time of that call in
milliseconds where the backend can separate it from host latency (TensorRT), else None.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

Step = Callable[[], "float | None"]


@dataclass
class Contender:
    name: str
    batch: int  # images per call
    step: Step


@dataclass
class Samples:
    """What one contender's calls took: host latency per call, device compute per call (where known),
    and per round the images per second of that round's block of calls."""

    latency_ms: list[float] = field(default_factory=list)
    compute_ms: list[float] = field(default_factory=list)
    round_ips: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class LatencyStats:
    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    throughput_ips: float  # median over rounds of (images in the round's block / its wall time)
    compute_p50_ms: float | None = None  # device compute time apart from host latency, where known

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    if not values:
        raise ValueError("no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples: Samples, batch: int) -> LatencyStats:
    lat = samples.latency_ms
    if not lat:
        raise ValueError("no timed calls")
    ips = statistics.median(samples.round_ips) if samples.round_ips else batch * 1e3 / statistics.median(lat)
    compute = statistics.median(samples.compute_ms) if samples.compute_ms else None
    return LatencyStats(
        n=len(lat),
        mean_ms=statistics.fmean(lat),
        p50_ms=percentile(lat, 50),
        p90_ms=percentile(lat, 90),
        p99_ms=percentile(lat, 99),
        min_ms=min(lat),
        throughput_ips=ips,
        compute_p50_ms=compute,
    )


def split_rounds(iters: int, rounds: int) -> list[int]:
    """Calls per round: `iters` spread over `rounds` rounds as evenly as possible (none empty)."""
    rounds = max(1, min(int(rounds), int(iters)))
    base, extra = divmod(int(iters), rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def interleaved(
    contenders: Sequence[Contender],
    *,
    warmup: int,
    iters: int,
    rounds: int,
    on_call: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Samples]:
    """Warm each contender up, then run `rounds` rounds; in round r the contenders go in the order
    rotated by r (A B, then B A, ...), each running its share of `iters` calls back to back.
    `on_call` is called after every call, warm-up included (a progress bar)."""
    if iters < 1:
        raise ValueError("iters must be at least 1")
    names = [c.name for c in contenders]
    if len(set(names)) != len(names):
        raise ValueError(f"contender names must be unique: {names}")
    for c in contenders:
        for _ in range(max(0, warmup)):
            c.step()
            if on_call:
                on_call()
    out = {c.name: Samples() for c in contenders}
    n = len(contenders)
    for r, calls in enumerate(split_rounds(iters, rounds)):
        order = [contenders[(i + r) % n] for i in range(n)]
        for c in order:
            s = out[c.name]
            block_start = clock()
            for _ in range(calls):
                t0 = clock()
                compute = c.step()
                s.latency_ms.append((clock() - t0) * 1e3)
                if compute is not None:
                    s.compute_ms.append(float(compute))
                if on_call:
                    on_call()
            elapsed = clock() - block_start
            if elapsed > 0:
                s.round_ips.append(calls * c.batch / elapsed)
    return out


def calls_total(contenders: int, warmup: int, iters: int) -> int:
    """How many calls `interleaved` makes (for a progress bar's total)."""
    return contenders * (max(0, warmup) + iters)
