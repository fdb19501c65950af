"""benchmarks/stats.py: the paired bootstrap intervals of the bench's ratios and the verdict of a goal judged on an
interval. Independent checks: coverage of a known ratio simulated with realistic noise (drift per round, shared and
per contender, heavy tails, CV 20-40 %) must be 92-98 % at 95 %; analytic cases with known answers (an exact ratio
under any drift, the bootstrap median of three values, the order-statistic bound behind MIN_UNITS); pairing of
uneven or empty rounds refused; a verdict from a point value impossible. Then exact numbers on fixed inputs against
a loop-by-loop computation with the same seeded draws (a check of the vectorised code, not of the method)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.stats import Interval


def I(lo, hi, units=10):  # noqa: E743
    return Interval(lo, hi, units)


def _drifting_rounds(rng, rounds, calls, level, drift):
    """Calls of one contender per round: its true median `level`, times the round's machine drift
    (shared by all contenders of that round), times per-call noise."""
    return [list(level * d * np.exp(rng.normal(0, 0.05, calls))) for d in drift]


def _realistic(rng, trials, rounds, calls, level, shared):
    """Call latencies (trials, rounds, calls) of one contender on a shared, drifting machine: the round's drift
    shared by every contender (`shared`) times its own drift that round (5 %), times per-call lognormal noise
    (sigma 0.25), 3 % of calls stretched by a Pareto(2) tail (a preemption, a page fault). The noise has the
    same shape for every contender, so the ratio of two contenders' population medians is their level ratio."""
    own = np.exp(rng.normal(0, 0.05, (trials, rounds, 1)))
    noise = np.exp(rng.normal(0, 0.25, (trials, rounds, calls)))
    tail = rng.random((trials, rounds, calls)) < 0.03
    noise = np.where(tail, noise * (1 + rng.pareto(2.0, (trials, rounds, calls))), noise)
    return level * shared * own * noise


@pytest.mark.slow  # thousands of simulated intervals
def test_coverage_under_realistic_noise_is_92_to_98_percent():
    """2000 simulated bench runs (10 rounds of 20 calls) at a true ratio of 0.5 (latency) and 2 (throughput): the
    95 % intervals must cover it 92-98 % of the time; a miscalibrated interval (an 80 % one called 95 %) falls
    below 92 % on the same runs: the band tells them apart."""
    from benchmarks.stats import latency_ratio_ci, throughput_ratio_ci

    rng = np.random.default_rng(2026)
    trials, rounds, calls = 2000, 10, 20
    shared = np.exp(rng.normal(0, 0.2, (trials, rounds, 1)))  # the machine changes between rounds
    e, z = _realistic(rng, trials, rounds, calls, 50.0, shared), _realistic(rng, trials, rounds, calls, 100.0, shared)
    cv = e.std(axis=(1, 2)) / e.mean(axis=(1, 2))
    assert 0.2 <= np.median(cv) <= 0.4, np.median(cv)  # the noise the issue asks for
    ips_e, ips_z = calls / e.sum(axis=2), calls / z.sum(axis=2)  # each round's images/s (batch 1, ms -> 1/ms)
    lat = np.array([latency_ratio_ci(e[t], z[t], 50, resamples=1000, seed=t) for t in range(trials)])
    thr = np.array([throughput_ratio_ci(ips_e[t], ips_z[t], resamples=1000, seed=t) for t in range(trials)])
    lat_cov = np.mean((lat[:, 0] <= 0.5) & (0.5 <= lat[:, 1]))
    thr_cov = np.mean((thr[:, 0] <= 2.0) & (2.0 <= thr[:, 1]))
    assert 0.92 <= lat_cov <= 0.98 and 0.92 <= thr_cov <= 0.98, (lat_cov, thr_cov)
    narrow = [latency_ratio_ci(e[t], z[t], 50, resamples=1000, level=0.8, seed=t) for t in range(500)]
    narrow_cov = np.mean([lo <= 0.5 <= hi for lo, hi in narrow])
    assert narrow_cov < 0.92, narrow_cov


def test_analytic_an_exact_ratio_under_any_drift_gives_a_point_interval_paired():
    """Every round of one side exactly half the other's, under drift of a factor 3 between rounds: the paired
    interval is exactly [0.5, 0.5] (latency) and [2, 2] (throughput); unpaired, the drift widens it."""
    from benchmarks.stats import latency_ratio_ci, throughput_ratio_ci

    rng = np.random.default_rng(5)
    z = [list(d * (1 + rng.random(7))) for d in np.linspace(1.0, 3.0, 8)]
    e = [[v / 2 for v in r] for r in z]
    assert latency_ratio_ci(e, z, 50) == pytest.approx((0.5, 0.5), abs=1e-12)
    assert latency_ratio_ci(e, z, 90) == pytest.approx((0.5, 0.5), abs=1e-12)
    ips_z = [len(r) / sum(r) for r in z]
    assert throughput_ratio_ci([2 * v for v in ips_z], ips_z) == pytest.approx((2.0, 2.0), abs=1e-12)
    lo, hi = latency_ratio_ci(e, z, 50, paired=False)
    assert lo < 0.45 and hi > 0.55


def test_analytic_bootstrap_median_of_three_values():
    """Resampling {1, 2, 3} with replacement, the median is 1 with probability 7/27 (two or three draws of 1), 3
    likewise, 2 with 13/27: both tails hold far more than 2.5 %, so the 95 % interval of median(num) / median(1, 1, 1)
    is exactly [1, 3]; with {1..5}, P(median = 1) = 0.058 > 2.5 %: [1, 5]."""
    from benchmarks.stats import throughput_ratio_ci

    assert throughput_ratio_ci([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]) == (1.0, 3.0)
    assert throughput_ratio_ci([3.0, 1.0, 5.0, 2.0, 4.0], [1.0] * 5) == (1.0, 5.0)
    draws = np.random.default_rng(0).integers(0, 3, size=(200_000, 3))
    assert np.mean(np.median(draws, axis=1) == 0) == pytest.approx(7 / 27, abs=0.005)


def test_analytic_min_units_is_where_a_95_percent_interval_becomes_possible():
    """Over n units, no interval within the data's range can cover the median of a continuous quantity more
    often than [min, max] does: 1 - 2^(1-n), checked by simulation; below 95 % up to n = 5, so verdicts need 6."""
    from benchmarks.stats import MIN_UNITS

    rng = np.random.default_rng(1)
    for n in (3, 5, 6):
        x = rng.standard_normal((100_000, n))  # median 0
        covered = np.mean((x.min(axis=1) <= 0) & (0 <= x.max(axis=1)))
        assert covered == pytest.approx(1 - 2 ** (1 - n), abs=0.005)
    assert 1 - 2 ** (1 - (MIN_UNITS - 1)) < 0.95 <= 1 - 2 ** (1 - MIN_UNITS) and MIN_UNITS == 6


def test_pairing_refuses_uneven_or_empty_rounds_loudly():
    """A round empty on one side used to be dropped from that side only, so every later round paired with the
    wrong one; now any paired ratio over rounds that do not pair raises PairingError. Unpaired, empty rounds
    are dropped."""
    from benchmarks.stats import PairingError, latency_ratio_ci, throughput_ratio_ci

    e, z = [[1.0, 1.1], [], [2.0], [3.0]], [[2.0], [4.0, 4.1], [], [6.0]]
    with pytest.raises(PairingError, match="round 1 is empty"):
        latency_ratio_ci(e, z, 50)
    with pytest.raises(PairingError, match="round 0 is empty"):
        latency_ratio_ci([[], [1.0]], [[], [2.0]], 50)  # empty on both sides: still not a round both ran in
    with pytest.raises(PairingError, match="paired rounds: 3 against 2"):
        latency_ratio_ci([[1.0]] * 3, [[2.0]] * 2, 50)
    with pytest.raises(PairingError, match="paired rounds: 3 against 2"):
        throughput_ratio_ci([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(PairingError, match="round 1 is empty"):
        throughput_ratio_ci([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0])
    assert latency_ratio_ci(e, z, 50, paired=False) is not None


def test_a_verdict_cannot_be_built_from_a_point_value():
    from benchmarks.stats import FAIL, INCONCLUSIVE, PASS, Interval, Verdict, verdict

    for point in (0.5, (0.45, 0.50), [0.45, 0.50], np.float64(0.5)):
        with pytest.raises(TypeError, match="not a point|a point value cannot"):
            Verdict(point, "<=", 0.52)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            verdict(point, "<=", 0.52)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Interval(0.6, 0.5, 10)  # lo above hi
    with pytest.raises(ValueError):
        Interval(0.5, float("nan"), 10)
    assert Verdict(Interval(0.45, 0.50, 10), "<=", 0.52).status == PASS
    assert Verdict(Interval(0.53, 0.60, 10), "<=", 0.52).status == FAIL
    few = Verdict(Interval(0.45, 0.50, 3), "<=", 0.52)  # three rounds: not a 95 % interval, whatever its width
    assert few.status == INCONCLUSIVE and "3 units" in few.reason
    assert Verdict(None, ">=", 1.9).status == INCONCLUSIVE and Verdict(None, ">=", 1.9).reason == "no interval"


def test_verdict_pass_fail_inconclusive():
    from benchmarks.stats import verdict

    assert verdict(I(0.45, 0.51), "<=", 0.52) == "PASS"
    assert verdict(I(0.53, 0.60), "<=", 0.52) == "FAIL"
    assert verdict(I(0.50, 0.55), "<=", 0.52) == "INCONCLUSIVE"
    assert verdict(I(1.95, 2.30), ">=", 1.9) == "PASS"
    assert verdict(I(1.50, 1.89), ">=", 1.9) == "FAIL"
    assert verdict(I(1.85, 1.95), ">=", 1.9) == "INCONCLUSIVE"
    assert verdict(I(0.52, 0.52), "<=", 0.52) == "PASS"  # the bound itself meets the goal
    assert verdict(None, "<=", 0.52) == "INCONCLUSIVE"
    with pytest.raises(ValueError):
        verdict(I(0.1, 0.2), "<", 0.5)



def test_verdict_at_the_bounds():
    from benchmarks.stats import verdict

    lo_goal, hi_goal = float("0.52"), float("1.9")  # limits as parsed, not the literals of the intervals
    # <=: PASS needs the whole interval at or below, FAIL the whole interval above; touching is not missing
    assert verdict(I(0.40, 0.52), "<=", lo_goal) == "PASS"
    assert verdict(I(0.52, 0.60), "<=", lo_goal) == "INCONCLUSIVE"
    assert verdict(I(0.5201, 0.60), "<=", lo_goal) == "FAIL"
    # >=: the mirror image
    assert verdict(I(1.9, 2.5), ">=", hi_goal) == "PASS"
    assert verdict(I(1.5, 1.9), ">=", hi_goal) == "INCONCLUSIVE"
    assert verdict(I(1.5, 1.8999), ">=", hi_goal) == "FAIL"
    assert verdict(None, ">=", hi_goal) == "INCONCLUSIVE"
    with pytest.raises(ValueError, match="op: <= or >=, not '=='"):
        verdict(I(0.1, 0.2), "==", 0.5)


def _pooled(rounds, rows, q):
    """Reference: the q-th percentile of the calls of the chosen rounds, pooled (one numpy call per resample)."""
    return np.array([np.percentile(np.concatenate([rounds[i] for i in row]), q) for row in rows])


ROUNDS_E = [[5.0, 7.0, 6.0], [9.0, 4.0], [6.5, 5.5, 8.0, 7.5], [3.0]]
ROUNDS_Z = [[10.0, 12.0], [15.0, 11.0, 13.0], [9.5], [12.5, 14.0, 10.5]]


@pytest.mark.parametrize("q", [0, 37, 50, 90, 100])
def test_pooled_percentiles_equal_numpy_on_the_pooled_calls(q, monkeypatch):
    import benchmarks.stats as st

    rows = np.random.default_rng(0).integers(0, 4, size=(25, 4))
    want = _pooled([np.array(r) for r in ROUNDS_E], rows, q)
    assert np.allclose(st._pooled_percentiles(ROUNDS_E, rows, q), want, rtol=0, atol=1e-12)
    monkeypatch.setattr(st, "_CHUNK_VALUES", 5)  # fewer values than one resample holds: one at a time, the same
    assert np.allclose(st._pooled_percentiles(ROUNDS_E, rows, q), want, rtol=0, atol=1e-12)


def test_interval_is_the_central_percentile_interval():
    from benchmarks.stats import _interval

    assert _interval(np.arange(1001.0), 0.95) == pytest.approx((25.0, 975.0), abs=1e-9)
    assert _interval(np.arange(1001.0), 0.90) == pytest.approx((50.0, 950.0), abs=1e-9)


def test_compress_keeps_small_rounds_and_summarises_big_ones_by_quantiles():
    from benchmarks.stats import ROUND_CAP, _compress

    small = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0]]
    assert _compress(small, cap=4) is small  # the largest round holds exactly cap calls: kept as is
    big = [list(np.arange(8.0)), [10.0, 20.0, 30.0, 40.0]]
    out = _compress(big, cap=4)
    # the largest round gets cap quantiles, the others as many as keep their weight (4 * 4 / 8 = 2)
    assert out[0] == pytest.approx(list(np.quantile(np.arange(8.0), [0.125, 0.375, 0.625, 0.875])))
    assert out[1] == pytest.approx(list(np.quantile([10.0, 20.0, 30.0, 40.0], [0.25, 0.75])))
    assert _compress([[1.0] * 9, [2.0]], cap=4)[1] == [2.0]  # at least one value per round
    assert [len(r) for r in _compress([list(np.arange(8.0)), list(np.arange(7.0)), list(np.arange(5.0))], cap=4)] == [4, 4, 2]  # 3.5 -> 4, 2.5 -> 2
    # the default cap: 256 calls in a round are kept, 257 summarised to 256
    r256 = [list(np.linspace(1.0, 2.0, 256))]
    assert ROUND_CAP == 256 and _compress(r256) is r256 and len(_compress([list(np.linspace(1.0, 2.0, 257))])[0]) == 256


def _reference_latency_ci(num, den, q, paired, resamples, level, seed):
    rng = np.random.default_rng(seed)
    num, den = [np.array(r) for r in num], [np.array(r) for r in den]
    idx_n = rng.integers(0, len(num), size=(resamples, len(num)))
    idx_d = idx_n if paired else rng.integers(0, len(den), size=(resamples, len(den)))
    ratios = _pooled(num, idx_n, q) / _pooled(den, idx_d, q)
    a = (1 - level) / 2 * 100
    return tuple(np.percentile(ratios, [a, 100 - a]))


def test_latency_ratio_interval_exact_on_a_fixed_input():
    from benchmarks.stats import latency_ratio_ci

    for q, paired, seed in ((50, True, 0), (90, True, 7), (50, False, 3)):
        got = latency_ratio_ci(ROUNDS_E, ROUNDS_Z, q, paired=paired, resamples=300, level=0.9, seed=seed)
        assert got == pytest.approx(_reference_latency_ci(ROUNDS_E, ROUNDS_Z, q, paired, 300, 0.9, seed), abs=1e-12)
    # defaults: 2000 resamples, 95 %, seed 0, paired; an empty round does not pair (refused), unpaired it is dropped
    got = latency_ratio_ci(ROUNDS_E, ROUNDS_Z, 50)
    assert got == pytest.approx(_reference_latency_ci(ROUNDS_E, ROUNDS_Z, 50, True, 2000, 0.95, 0), abs=1e-12)
    with pytest.raises(ValueError, match="round 4 is empty"):
        latency_ratio_ci(ROUNDS_E + [[]], ROUNDS_Z + [[]], 50)
    got = latency_ratio_ci(ROUNDS_E + [[]], ROUNDS_Z, 50, paired=False, resamples=300, seed=3)
    assert got == pytest.approx(_reference_latency_ci(ROUNDS_E, ROUNDS_Z, 50, False, 300, 0.95, 3), abs=1e-12)
    # one round on a side: its calls are resampled, unpaired
    one = [[v] for r in ROUNDS_E for v in r]
    with pytest.raises(ValueError, match="paired rounds: 1 against 4"):  # one round against four does not pair
        latency_ratio_ci([sum(ROUNDS_E, [])], ROUNDS_Z, 50)
    got = latency_ratio_ci([sum(ROUNDS_E, [])], ROUNDS_Z, 50, paired=False, resamples=300, seed=2)
    want = _reference_latency_ci(one, [[v] for r in ROUNDS_Z for v in r], 50, False, 300, 0.95, 2)
    assert got == pytest.approx(want, abs=1e-12)
    got = latency_ratio_ci(ROUNDS_E, [sum(ROUNDS_Z, [])], 90, paired=False, resamples=300, seed=2)  # the other side in one round
    want = _reference_latency_ci(one, [[v] for r in ROUNDS_Z for v in r], 90, False, 300, 0.95, 2)
    assert got == pytest.approx(want, abs=1e-12)
    assert latency_ratio_ci([[]], ROUNDS_Z, 50, paired=False) is None and latency_ratio_ci(ROUNDS_E, [], 50, paired=False) is None
    with pytest.raises(ValueError, match="paired rounds: 4 against 3"):
        latency_ratio_ci(ROUNDS_E, ROUNDS_Z[:3], 50)
    assert latency_ratio_ci(ROUNDS_E, ROUNDS_Z[:3], 50, paired=False) is not None


def _reference_median_ci(num, den, paired, resamples, level, seed):
    rng = np.random.default_rng(seed)
    num, den = np.array(num), np.array(den)
    idx_n = rng.integers(0, len(num), size=(resamples, len(num)))
    idx_d = idx_n if paired else rng.integers(0, len(den), size=(resamples, len(den)))
    ratios = [np.median(num[a]) / np.median(den[b]) for a, b in zip(idx_n, idx_d)]
    a = (1 - level) / 2 * 100
    return tuple(np.percentile(ratios, [a, 100 - a]))


def test_throughput_and_plain_ratio_intervals_exact_on_a_fixed_input():
    from benchmarks.stats import ratio_ci, throughput_ratio_ci

    e, z = [210.0, 180.0, 250.0, 190.0, 205.0], [100.0, 95.0, 120.0, 90.0, 101.0]
    assert throughput_ratio_ci(e, z) == pytest.approx(_reference_median_ci(e, z, True, 2000, 0.95, 0), abs=1e-12)
    got = throughput_ratio_ci(e, z[:4], paired=False, resamples=300, level=0.8, seed=4)
    assert got == pytest.approx(_reference_median_ci(e, z[:4], False, 300, 0.8, 4), abs=1e-12)
    # ratio_ci (peak memory of fresh processes) is the same statistic, every option passed through
    assert ratio_ci(e, z[:4], paired=False, resamples=300, level=0.8, seed=4) == got
    assert ratio_ci(e, z) == throughput_ratio_ci(e, z)
    # two rounds a side are enough; one is not
    assert throughput_ratio_ci(e[:2], z[:2], resamples=50) is not None
    assert throughput_ratio_ci(e[:1], z[:2], paired=False) is None and throughput_ratio_ci(e[:2], z[:1], paired=False) is None
    with pytest.raises(ValueError, match="paired rounds: 5 against 4"):
        throughput_ratio_ci(e, z[:4])


def test_defaults_are_2000_resamples_95_percent_seed_0():
    """On twenty rounds of distinct values (few ties between neighbouring resampled ratios), so that a
    different number of resamples or seed moves the interval."""
    from benchmarks.stats import latency_ratio_ci, ratio_ci, throughput_ratio_ci

    rng = np.random.default_rng(11)
    e, z = list(100 + 20 * rng.random(20)), list(50 + 20 * rng.random(20))
    want = _reference_median_ci(e, z, True, 2000, 0.95, 0)
    assert throughput_ratio_ci(e, z) == pytest.approx(want, abs=1e-12)
    assert ratio_ci(e, z) == pytest.approx(want, abs=1e-12)
    assert throughput_ratio_ci(e, z, resamples=2001) != pytest.approx(want, abs=1e-12)
    assert throughput_ratio_ci(e, z, seed=1) != pytest.approx(want, abs=1e-12)
    rounds_e, rounds_z = [[v, v + 1.0] for v in e], [[v, v + 2.0] for v in z]
    want = _reference_latency_ci(rounds_e, rounds_z, 50, True, 2000, 0.95, 0)
    assert latency_ratio_ci(rounds_e, rounds_z, 50) == pytest.approx(want, abs=1e-12)
    assert latency_ratio_ci(rounds_e, rounds_z, 50, resamples=2001) != pytest.approx(want, abs=1e-12)


def test_analytic_a_kept_ratio_of_ratios_is_a_point_interval_under_drift_and_a_changed_one_is_not():
    """(a / b) / (c / d) with a = b / 2 and c = d / 2 in every round, under drift: exactly [1, 1]; with
    c = d / 4 instead: exactly [2, 2]; rounds that do not pair are refused."""
    from benchmarks.stats import PairingError, latency_ratio_of_ratios_ci

    rng = np.random.default_rng(3)
    b = [list(k * (1 + rng.random(5))) for k in np.linspace(1.0, 3.0, 6)]
    d = [list(k * (2 + rng.random(5))) for k in np.linspace(3.0, 1.0, 6)]
    half = [[v / 2 for v in r] for r in b]
    assert latency_ratio_of_ratios_ci(half, b, [[v / 2 for v in r] for r in d], d, 50) == pytest.approx((1.0, 1.0), abs=1e-12)
    iv = latency_ratio_of_ratios_ci(half, b, [[v / 4 for v in r] for r in d], d, 50)
    assert iv == pytest.approx((2.0, 2.0), abs=1e-12) and iv.units == 6 and iv.paired
    with pytest.raises(PairingError):
        latency_ratio_of_ratios_ci(half, b, d[:5], d, 50)
