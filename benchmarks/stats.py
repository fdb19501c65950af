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

from typing import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
_CHUNK_VALUES = 2_000_000  # values sorted at once (memory bound for fast models with many calls per round)
ROUND_CAP = 256  # calls per round beyond which a round is summarised by its quantiles (see _compress)

Interval = tuple[float, float]


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


def _interval(ratios: np.ndarray, level: float) -> Interval:
    a = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(ratios, [a, 100.0 - a])
    return float(lo), float(hi)


def latency_ratio_ci(num_rounds: Sequence[Sequence[float]], den_rounds: Sequence[Sequence[float]], q: float, *,
                     paired: bool = True, resamples: int = RESAMPLES, level: float = LEVEL,
                     seed: int | Sequence[int] = 0) -> Interval | None:
    """Interval of percentile_q(num) / percentile_q(den) over the pooled calls of resampled rounds.
    Paired: the same rounds for both sides (they must have as many rounds). None without calls."""
    num = [list(r) for r in num_rounds if len(r)]
    den = [list(r) for r in den_rounds if len(r)]
    if not num or not den:
        return None
    num, den = _compress(num), _compress(den)
    rng = _rng(seed)
    if len(num) == 1 or len(den) == 1:  # one round: resample the calls themselves (at most ROUND_CAP)
        num, den, paired = [[v] for r in num for v in r], [[v] for r in den for v in r], False
    if paired and len(num) != len(den):
        raise ValueError(f"paired rounds: {len(num)} against {len(den)}")
    idx_n = rng.integers(0, len(num), size=(resamples, len(num)))
    idx_d = idx_n if paired else rng.integers(0, len(den), size=(resamples, len(den)))
    return _interval(_pooled_percentiles(num, idx_n, q) / _pooled_percentiles(den, idx_d, q), level)


def throughput_ratio_ci(num_ips: Sequence[float], den_ips: Sequence[float], *, paired: bool = True,
                        resamples: int = RESAMPLES, level: float = LEVEL,
                        seed: int | Sequence[int] = 0) -> Interval | None:
    """Interval of median(num round images/s) / median(den round images/s) over resampled rounds.
    None with fewer than two rounds on a side."""
    num, den = np.asarray(num_ips, float), np.asarray(den_ips, float)
    if len(num) < 2 or len(den) < 2:
        return None
    if paired and len(num) != len(den):
        raise ValueError(f"paired rounds: {len(num)} against {len(den)}")
    rng = _rng(seed)
    idx_n = rng.integers(0, len(num), size=(resamples, len(num)))
    idx_d = idx_n if paired else rng.integers(0, len(den), size=(resamples, len(den)))
    return _interval(np.median(num[idx_n], axis=1) / np.median(den[idx_d], axis=1), level)


def ratio_ci(num: Sequence[float], den: Sequence[float], *, paired: bool = True, resamples: int = RESAMPLES,
             level: float = LEVEL, seed: int | Sequence[int] = 0) -> Interval | None:
    """Interval of median(num) / median(den) over resampled pairs (e.g. peak memory of fresh
    processes, repetition by repetition). None with fewer than two values on a side."""
    return throughput_ratio_ci(num, den, paired=paired, resamples=resamples, level=level, seed=seed)


PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


def verdict(interval: Interval | None, op: str, limit: float) -> str:
    """PASS when the whole interval meets the goal, FAIL when the whole interval misses it, else
    INCONCLUSIVE (no interval included: the run cannot tell)."""
    if op not in ("<=", ">="):
        raise ValueError(f"op: <= or >=, not {op!r}")
    if interval is None:
        return INCONCLUSIVE
    lo, hi = interval
    if op == "<=":
        return PASS if hi <= limit else FAIL if lo > limit else INCONCLUSIVE
    return PASS if lo >= limit else FAIL if hi < limit else INCONCLUSIVE
