"""benchmarks/stats.py: the paired bootstrap intervals of the bench's ratios and the verdict of a goal judged on an
interval. Coverage of a known ratio under machine drift, and exact numbers on fixed inputs against an independent
loop-by-loop computation with the same seeded draws."""

from __future__ import annotations

import numpy as np
import pytest


def _drifting_rounds(rng, rounds, calls, level, drift):
    """Calls of one contender per round: its true median `level`, times the round's machine drift
    (shared by all contenders of that round), times per-call noise."""
    return [list(level * d * np.exp(rng.normal(0, 0.05, calls))) for d in drift]


def test_bootstrap_interval_covers_a_known_ratio():
    from benchmarks.stats import latency_ratio_ci, throughput_ratio_ci

    rng = np.random.default_rng(1)
    covered, widths, widths_unpaired, thr_covered = 0, [], [], 0
    trials = 60
    for t in range(trials):
        drift = np.exp(rng.normal(0, 0.3, 10))  # the machine changes a lot between rounds
        e, z = _drifting_rounds(rng, 10, 5, 50.0, drift), _drifting_rounds(rng, 10, 5, 100.0, drift)
        lo, hi = latency_ratio_ci(e, z, 50, resamples=400, seed=t)
        covered += lo <= 0.5 <= hi
        widths.append(hi - lo)
        ulo, uhi = latency_ratio_ci(e, z, 50, paired=False, resamples=400, seed=t)
        widths_unpaired.append(uhi - ulo)
        ips_e, ips_z = 2.0 / drift * np.exp(rng.normal(0, 0.05, 10)), 1.0 / drift * np.exp(rng.normal(0, 0.05, 10))
        tlo, thi = throughput_ratio_ci(ips_e, ips_z, resamples=400, seed=t)
        thr_covered += tlo <= 2.0 <= thi
    assert covered >= 0.85 * trials and thr_covered >= 0.85 * trials, (covered, thr_covered)
    # pairing by round cancels the drift both sides saw: far narrower than resampling each side alone
    assert np.median(widths) * 3 < np.median(widths_unpaired)
    # the statistic at the original rounds is the reported one: the interval holds the point ratio
    all_e, all_z = [v for r in e for v in r], [v for r in z for v in r]
    assert lo <= np.percentile(all_e, 50) / np.percentile(all_z, 50) <= hi
    # seeded: the same interval twice; one round: the calls are resampled, one throughput value gives none
    assert latency_ratio_ci(e, z, 90, seed=3) == latency_ratio_ci(e, z, 90, seed=3)
    one = latency_ratio_ci([all_e], [all_z], 50, seed=0)
    assert one is not None and one[0] < 0.5 < one[1]
    assert throughput_ratio_ci([2.0], [1.0]) is None
    # a fast model's rounds (thousands of calls each) are summarised by quantiles: same answer, bounded cost
    drift = np.exp(rng.normal(0, 0.3, 10))
    big_e, big_z = _drifting_rounds(rng, 10, 3000, 50.0, drift), _drifting_rounds(rng, 10, 3000, 100.0, drift)
    lo, hi = latency_ratio_ci(big_e, big_z, 50, resamples=400, seed=0)
    assert lo <= 0.5 <= hi and hi - lo < 0.02


def test_verdict_pass_fail_inconclusive():
    from benchmarks.stats import verdict

    assert verdict((0.45, 0.51), "<=", 0.52) == "PASS"
    assert verdict((0.53, 0.60), "<=", 0.52) == "FAIL"
    assert verdict((0.50, 0.55), "<=", 0.52) == "INCONCLUSIVE"
    assert verdict((1.95, 2.30), ">=", 1.9) == "PASS"
    assert verdict((1.50, 1.89), ">=", 1.9) == "FAIL"
    assert verdict((1.85, 1.95), ">=", 1.9) == "INCONCLUSIVE"
    assert verdict((0.52, 0.52), "<=", 0.52) == "PASS"  # the bound itself meets the goal
    assert verdict(None, "<=", 0.52) == "INCONCLUSIVE"
    with pytest.raises(ValueError):
        verdict((0.1, 0.2), "<", 0.5)



def test_verdict_at_the_bounds():
    from benchmarks.stats import verdict

    lo_goal, hi_goal = float("0.52"), float("1.9")  # limits as parsed, not the literals of the intervals
    # <=: PASS needs the whole interval at or below, FAIL the whole interval above; touching is not missing
    assert verdict((0.40, 0.52), "<=", lo_goal) == "PASS"
    assert verdict((0.52, 0.60), "<=", lo_goal) == "INCONCLUSIVE"
    assert verdict((0.5201, 0.60), "<=", lo_goal) == "FAIL"
    # >=: the mirror image
    assert verdict((1.9, 2.5), ">=", hi_goal) == "PASS"
    assert verdict((1.5, 1.9), ">=", hi_goal) == "INCONCLUSIVE"
    assert verdict((1.5, 1.8999), ">=", hi_goal) == "FAIL"
    assert verdict(None, ">=", hi_goal) == "INCONCLUSIVE"
    with pytest.raises(ValueError, match="op: <= or >=, not '=='"):
        verdict((0.1, 0.2), "==", 0.5)


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
    # defaults: 2000 resamples, 95 %, seed 0, paired; empty rounds are dropped
    got = latency_ratio_ci(ROUNDS_E + [[]], ROUNDS_Z + [[]], 50)
    assert got == pytest.approx(_reference_latency_ci(ROUNDS_E, ROUNDS_Z, 50, True, 2000, 0.95, 0), abs=1e-12)
    # one round on a side: its calls are resampled, unpaired
    one = [[v] for r in ROUNDS_E for v in r]
    got = latency_ratio_ci([sum(ROUNDS_E, [])], ROUNDS_Z, 50, resamples=300, seed=2)
    want = _reference_latency_ci(one, [[v] for r in ROUNDS_Z for v in r], 50, False, 300, 0.95, 2)
    assert got == pytest.approx(want, abs=1e-12)
    got = latency_ratio_ci(ROUNDS_E, [sum(ROUNDS_Z, [])], 90, resamples=300, seed=2)  # the other side in one round
    want = _reference_latency_ci(one, [[v] for r in ROUNDS_Z for v in r], 90, False, 300, 0.95, 2)
    assert got == pytest.approx(want, abs=1e-12)
    assert latency_ratio_ci([[]], ROUNDS_Z, 50) is None and latency_ratio_ci(ROUNDS_E, [], 50) is None
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
