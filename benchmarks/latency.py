"""Interleaved timing: several contenders take turns, round after round, so that machine noise (other
processes, thermal throttling, a busy shared CPU) hits all of them alike; statistics are medians.

Runs are timed as trtexec times them: a warm-up of at least `warmup` calls AND `warmup_ms`
milliseconds per contender, then at least `iters` calls AND `min_duration_s` seconds per contender,
spread over `rounds` rounds (each round, every contender runs until it has its share of both). Every
call's latency is kept with the round it ran in, so a ratio between two contenders can be bootstrapped
over rounds (benchmarks.stats): within a round both saw the same machine.

Each series records the machine's load over its timed rounds (benchmarks.load): 1-minute load, this
process's CPU time against wall time, other work and steal from /proc/stat.

A contender is a callable that runs one batch and returns the device compute time of that call in
milliseconds where the backend can separate it from host latency (TensorRT), else None.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from benchmarks.load import LoadRecord, snapshot

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
    round_latency_ms: list[list[float]] = field(default_factory=list)  # the calls of each round
    duration_s: float = 0.0  # timed wall time, all rounds (warm-up excluded)
    warmup_calls: int = 0
    load: dict[str, Any] | None = None  # the machine's load over the timed rounds (benchmarks.load.LoadRecord)


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
    cv: float | None = None  # coefficient of variation of the call latencies (stdev / mean)
    rounds: int = 0
    duration_s: float | None = None  # timed wall time of this contender's calls
    warmup_calls: int = 0

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
        cv=coefficient_of_variation(lat),
        rounds=len(samples.round_latency_ms) or len(samples.round_ips),
        duration_s=samples.duration_s or None,
        warmup_calls=samples.warmup_calls,
    )


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Sample standard deviation over mean; None for fewer than two values or a zero mean."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else None


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
    warmup_ms: float = 0.0,
    min_duration_s: float = 0.0,
    on_call: Callable[[], None] | None = None,
    on_block: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Samples]:
    """Warm each contender up (at least `warmup` calls and `warmup_ms` ms), then run the rounds; in
    round r the contenders go in the order rotated by r (A B, then B A, ...), each running back to back
    until it has made its share of `iters` calls (split_rounds) and spent its share of
    `min_duration_s` (min_duration_s / rounds). So every contender makes at least `iters` calls and
    runs for at least `min_duration_s` seconds. `on_call` is called after every call, warm-up
    included; `on_block` after each contender's warm-up and each of its blocks (a progress bar).
    `clock` (seconds) is injectable for tests."""
    if iters < 1:
        raise ValueError("iters must be at least 1")
    if warmup_ms < 0 or min_duration_s < 0:
        raise ValueError("warmup_ms and min_duration_s must not be negative")
    names = [c.name for c in contenders]
    if len(set(names)) != len(names):
        raise ValueError(f"contender names must be unique: {names}")
    out = {c.name: Samples() for c in contenders}
    for c in contenders:
        start, k = clock(), 0
        while k < max(0, warmup) or (clock() - start) * 1e3 < warmup_ms:
            c.step()
            k += 1
            if on_call:
                on_call()
        out[c.name].warmup_calls = k
        if on_block:
            on_block()
    n = len(contenders)
    plan = split_rounds(iters, rounds)
    before = snapshot()
    share_s = min_duration_s / len(plan)
    for r, calls in enumerate(plan):
        order = [contenders[(i + r) % n] for i in range(n)]
        for c in order:
            s = out[c.name]
            block: list[float] = []
            block_start = clock()
            while len(block) < calls or clock() - block_start < share_s:
                t0 = clock()
                compute = c.step()
                block.append((clock() - t0) * 1e3)
                if compute is not None:
                    s.compute_ms.append(float(compute))
                if on_call:
                    on_call()
            elapsed = clock() - block_start
            s.latency_ms.extend(block)
            s.round_latency_ms.append(block)
            s.duration_s += elapsed
            if elapsed > 0:
                s.round_ips.append(len(block) * c.batch / elapsed)
            if on_block:
                on_block()
    rec = LoadRecord.between(before, snapshot()).to_dict()
    for s in out.values():
        s.load = rec
    return out


def blocks_total(contenders: int, iters: int, rounds: int) -> int:
    """How many times `interleaved` calls `on_block` (for a progress bar's total)."""
    return contenders * (1 + len(split_rounds(iters, rounds)))
