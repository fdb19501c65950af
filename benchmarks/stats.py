"""Paired bootstrap confidence intervals for ratios between interleaved contenders, and the verdict of a
goal judged on an interval.

The bench times its contenders in rounds: within a round every contender ran on the same machine,
minutes apart at most; between rounds the machine may change (other work, clocks, heat). So the
rounds are the unit to resample (a cluster bootstrap), and a ratio resamples the SAME rounds for both
sides (paired): machine drift that slows both cancels in the ratio instead of widening it.

A latency percentile is taken over the pooled calls of the resampled rounds, so the statistic at the
original rounds is exactly the reported p50 / p90; a throughput is the median over the resampled
rounds' images/s, as reported. The interval is the percentile interval of the resampled ratios
(numpy only, seeded). Rounds of more than ROUND_CAP calls are summarised by their quantiles first. With a single round there is nothing to resample between rounds: latency
intervals then resample the calls themselves (unpaired), throughput gets no interval.

Written here on numpy rather than with scipy.stats.bootstrap: scipy is not a dependency of the device
runtime (a Jetson image has numpy), and the pooled percentile over clusters of unequal size is a
few lines of numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
_CHUNK_VALUES = 2_000_000  # values sorted at once (memory bound for fast models with many calls per round)
ROUND_CAP = 256  # calls per round beyond which a round is summarised by its quantiles (see _compress)

MIN_UNITS = 6  # units (rounds, processes) below which a "95 %" interval cannot cover 95 % (module docstring)


class PairingError(ValueError):
    """A paired ratio over rounds that do not pair (unequal counts, or an empty round on a side)."""


class Interval(tuple):  # type: ignore[type-arg]
    """A confidence interval (lo, hi) and the number of independent units (rounds, fresh processes)
    behind it. It compares, unpacks and serialises as the pair (lo, hi)."""

    units: int
    paired: bool

    def __new__(cls, lo: float, hi: float, units: int, paired: bool = True) -> "Interval":
        lo, hi = float(lo), float(hi)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
            raise ValueError(f"an interval needs finite lo <= hi, not ({lo}, {hi})")
        if int(units) < 1:
            raise ValueError(f"an interval needs at least one unit resampled, not {units}")
        self = super().__new__(cls, (lo, hi))
        self.units, self.paired = int(units), bool(paired)
        return self

    def __getnewargs__(self) -> tuple[float, float, int, bool]:  # type: ignore[override]
        return self[0], self[1], self.units, self.paired

    @property
    def lo(self) -> float:
        return float(self[0])

    @property
    def hi(self) -> float:
        return float(self[1])

    @classmethod
    def from_json(cls, ci: Sequence[float] | None, units: int | None, paired: bool = True) -> "Interval | None":
        """The interval a result file holds ([lo, hi]) with its unit count; None where it has none."""
        if not ci or units is None:
            return None
        return cls(ci[0], ci[1], units, paired)


def _rng(seed: int | Sequence[int]) -> np.random.Generator:
    return np.random.default_rng(seed)


def _pooled_percentiles(rounds: Sequence[Sequence[float]], idx: np.ndarray, q: float) -> np.ndarray:
    """For each row of idx (a resample of round indices), the q-th percentile (linear, numpy's default)
    of the pooled calls of those rounds."""
    sizes = np.array([len(r) for r in rounds])
    width = int(sizes.max())
    padded = np.full((len(rounds), width), np.inf)
    for i, r in enumerate(rounds):
        padded[i, : len(r)] = r
    out = np.empty(len(idx))
    step = max(1, _CHUNK_VALUES // max(1, idx.shape[1] * width))
    for start in range(0, len(idx), step):
        part = idx[start : start + step]
        pooled = np.sort(padded[part].reshape(len(part), -1), axis=1)  # padding (inf) sorts last
        n = sizes[part].sum(axis=1)
        pos = (n - 1) * q / 100.0
        lo, hi = np.floor(pos).astype(int), np.ceil(pos).astype(int)
        rows = np.arange(len(part))
        vlo, vhi = pooled[rows, lo], pooled[rows, hi]
        out[start : start + step] = vlo + (vhi - vlo) * (pos - lo)
    return out


def _compress(rounds: list[list[float]], cap: int = ROUND_CAP) -> list[list[float]]:
    """Rounds of a fast model hold thousands of calls (3 s of 0.1 ms calls); pooling them in every
    resample would cost seconds per interval. Beyond `cap` calls in the largest round, each round is
    replaced by its midpoint quantiles, as many as keep the rounds' relative weights (cap for the
    largest): the pooled percentiles move by far less than the rounds differ, which is what the
    interval measures."""
    biggest = max(len(r) for r in rounds)
    if biggest <= cap:
        return rounds
    out = []
    for r in rounds:
        m = max(1, round(cap * len(r) / biggest))
        out.append(list(np.quantile(np.asarray(r, float), (np.arange(m) + 0.5) / m)))
    return out


def _interval(ratios: np.ndarray, level: float) -> tuple[float, float]:
    a = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(ratios, [a, 100.0 - a])
    return float(lo), float(hi)


def latency_ratio_ci(num_rounds: Sequence[Sequence[float]], den_rounds: Sequence[Sequence[float]], q: float, *,
                     paired: bool = True, resamples: int = RESAMPLES, level: float = LEVEL,
                     seed: int | Sequence[int] = 0) -> Interval | None:
    """Interval of percentile_q(num) / percentile_q(den) over the pooled calls of resampled rounds.
    Paired: the same rounds for both sides (as many rounds, none empty: else PairingError); unpaired,
    empty rounds are dropped. None without calls. Its units: the rounds resampled (fewer side), 1
    where one round's calls were resampled."""
    if paired:
        _check_pairs([len(r) for r in num_rounds], [len(r) for r in den_rounds])
    num = [list(r) for r in num_rounds if len(r)]
    den = [list(r) for r in den_rounds if len(r)]
    if not num or not den:
        return None
    num, den = _compress(num), _compress(den)
    rng = _rng(seed)
    units = min(len(num), len(den))
    if len(num) == 1 or len(den) == 1:  # one round: resample the calls themselves (at most ROUND_CAP)
        num, den, paired, units = [[v] for r in num for v in r], [[v] for r in den for v in r], False, 1
    idx_n = rng.integers(0, len(num), size=(resamples, len(num)))
    idx_d = idx_n if paired else rng.integers(0, len(den), size=(resamples, len(den)))
    lo, hi = _interval(_pooled_percentiles(num, idx_n, q) / _pooled_percentiles(den, idx_d, q), level)
    return Interval(lo, hi, units, paired)


def _check_pairs(num_sizes: Sequence[int], den_sizes: Sequence[int]) -> None:
    """Paired rounds: as many on both sides, none empty (an empty round dropped on one side only would
    pair every later round with the wrong one)."""
    if len(num_sizes) != len(den_sizes):
        raise PairingError(f"paired rounds: {len(num_sizes)} against {len(den_sizes)}; rounds pair only when both "
                           "sides ran in every round (pass paired=False for series timed apart)")
    empty = [i for i, (a, b) in enumerate(zip(num_sizes, den_sizes)) if not a or not b]
    if empty:
        raise PairingError(f"paired rounds: round {empty[0]} is empty on one side ({len(empty)} such); rounds pair "
                           "only when both sides ran in every round")


def throughput_ratio_ci(num_ips: Sequence[float], den_ips: Sequence[float], *, paired: bool = True,
                        resamples: int = RESAMPLES, level: float = LEVEL,
                        seed: int | Sequence[int] = 0) -> Interval | None:
    """Interval of median(num round images/s) / median(den round images/s) over resampled rounds.
    None with fewer than two rounds on a side; paired rounds of unequal count, or a missing (NaN) value
    on either side, raise PairingError."""
    num, den = np.asarray(num_ips, float), np.asarray(den_ips, float)
    if paired:
        _check_pairs([0 if np.isnan(v) else 1 for v in num], [0 if np.isnan(v) else 1 for v in den])
    num, den = num[~np.isnan(num)], den[~np.isnan(den)]
    if len(num) < 2 or len(den) < 2:
        return None
    rng = _rng(seed)
    idx_n = rng.integers(0, len(num), size=(resamples, len(num)))
    idx_d = idx_n if paired else rng.integers(0, len(den), size=(resamples, len(den)))
    lo, hi = _interval(np.median(num[idx_n], axis=1) / np.median(den[idx_d], axis=1), level)
    return Interval(lo, hi, min(len(num), len(den)), paired)


def percentile_ci(rounds: Sequence[Sequence[float]], q: float, *, resamples: int = RESAMPLES, level: float = LEVEL,
                  seed: int | Sequence[int] = 0) -> Interval | None:
    """Interval of the q-th percentile of the pooled values of resampled rounds (a cluster bootstrap, as
    latency_ratio_ci's for one side alone). Empty rounds are dropped; one round: its values are
    resampled (units 1). None without values."""
    kept = [list(r) for r in rounds if len(r)]
    if not kept:
        return None
    kept = _compress(kept)
    units = len(kept)
    if units == 1:
        kept = [[v] for v in kept[0]]
    idx = _rng(seed).integers(0, len(kept), size=(resamples, len(kept)))
    a = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(_pooled_percentiles(kept, idx, q), [a, 100.0 - a])
    return Interval(float(lo), float(hi), units, False)


def latency_ratio_of_ratios_ci(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], c: Sequence[Sequence[float]],
                               d: Sequence[Sequence[float]], q: float, *, resamples: int = RESAMPLES, level: float = LEVEL,
                               seed: int | Sequence[int] = 0) -> Interval | None:
    """Interval of (P(a) / P(b)) / (P(c) / P(d)), P the q-th percentile of the pooled calls of resampled
    rounds, the same rounds for all four (paired: as many rounds, none empty, else PairingError); e.g.
    whether a latency ratio between two models is kept when both are changed alike. None without calls."""
    for other in (b, c, d):
        _check_pairs([len(r) for r in a], [len(r) for r in other])
    series = [_compress([list(r) for r in s]) for s in (a, b, c, d)]
    if not series[0]:
        return None
    idx = _rng(seed).integers(0, len(series[0]), size=(resamples, len(series[0])))
    pa, pb, pc, pd = (_pooled_percentiles(s, idx, q) for s in series)
    lo, hi = _interval((pa / pb) / (pc / pd), level)
    return Interval(lo, hi, len(series[0]), True)


def ratio_ci(num: Sequence[float], den: Sequence[float], *, paired: bool = True, resamples: int = RESAMPLES,
             level: float = LEVEL, seed: int | Sequence[int] = 0) -> Interval | None:
    """Interval of median(num) / median(den) over resampled pairs (e.g. peak memory of fresh
    processes, repetition by repetition). None with fewer than two values on a side."""
    return throughput_ratio_ci(num, den, paired=paired, resamples=resamples, level=level, seed=seed)


PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


@dataclass(frozen=True)
class Verdict:
    """A goal judged on an interval: PASS when the whole interval meets `op limit`, FAIL when the
    whole interval misses it, else INCONCLUSIVE; INCONCLUSIVE too without an interval or with fewer
    than `min_units` units behind it. Built from an Interval only: a point value (a float, a bare
    tuple) raises TypeError, so no verdict can come from a point."""

    interval: Interval | None
    op: str
    limit: float
    min_units: int = MIN_UNITS

    def __post_init__(self) -> None:
        if self.interval is not None and not isinstance(self.interval, Interval):
            raise TypeError(f"a verdict is judged on an Interval (benchmarks.stats), not {self.interval!r}: "
                            "a point value cannot PASS or FAIL")
        if self.op not in ("<=", ">="):
            raise ValueError(f"op: <= or >=, not {self.op!r}")

    @property
    def status(self) -> str:
        iv = self.interval
        if iv is None or iv.units < self.min_units:
            return INCONCLUSIVE
        if self.op == "<=":
            return PASS if iv.hi <= self.limit else FAIL if iv.lo > self.limit else INCONCLUSIVE
        return PASS if iv.lo >= self.limit else FAIL if iv.hi < self.limit else INCONCLUSIVE

    @property
    def reason(self) -> str:
        """Why INCONCLUSIVE where the interval itself did not decide (empty otherwise)."""
        if self.interval is None:
            return "no interval"
        if self.interval.units < self.min_units:
            return (f"{self.interval.units} units (rounds / processes) resampled: a 95 % interval needs at least "
                    f"{self.min_units}")
        return ""


def verdict(interval: Interval | None, op: str, limit: float) -> str:
    """Verdict(interval, op, limit).status."""
    return Verdict(interval, op, limit).status
