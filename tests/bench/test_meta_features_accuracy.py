"""benchmarks.studies.meta_features_accuracy's aggregation on hand-made numbers (no training here)."""

import math

import pytest

from benchmarks.studies.meta_features_accuracy import markdown, summarize


def run(setting, seed, digits, faces):
    return {"setting": setting, "seed": seed, "top1": {"digits": digits, "faces": faces}, "mean_top1": (digits + faces) / 2}


def test_summarize_pairs_by_seed_and_uses_sample_std():
    results = [run("fresh", 0, 0.90, 1.00), run("reuse", 0, 0.80, 1.00),
               run("fresh", 1, 0.70, 0.90), run("reuse", 1, 0.80, 0.90),
               run("fresh", 2, 0.60, 0.80)]  # seed 2's reuse has not finished: not paired
    s = summarize(results)
    fresh = s["settings"]["fresh"]
    assert fresh["seeds"] == [0, 1, 2]
    # mean top-1 per run: 0.95, 0.80, 0.70 -> mean 0.8167, sample std (n - 1) 0.1258
    assert fresh["mean_top1"]["mean"] == pytest.approx(0.816667, abs=1e-6)
    assert fresh["mean_top1"]["std"] == pytest.approx(math.sqrt((0.1333333**2 + 0.0166667**2 + 0.1166667**2) / 2), abs=1e-6)
    assert fresh["top1"]["digits"]["std"] == pytest.approx(math.sqrt(0.07 / 3))  # 0.9, 0.7, 0.6
    p = s["paired_fresh_minus_reuse"]
    assert p["seeds"] == [0, 1]
    assert p["mean_top1_diff"] == pytest.approx([0.05, -0.05])
    assert p["mean"] == pytest.approx(0.0) and p["std"] == pytest.approx(math.sqrt(0.005))
    assert p["top1_diff"]["digits"]["per_seed"] == pytest.approx([0.10, -0.10])
    assert (p["fresh_better"], p["reuse_better"], p["ties"]) == (1, 1, 0)
    lo, hi = p["ci95"]  # t(0.975, df 1) = 12.706: half-width 12.706 * 0.0707 / sqrt(2) = 0.6353
    assert lo == pytest.approx(-0.63531, abs=1e-4) and hi == pytest.approx(0.63531, abs=1e-4)
    md = markdown(results, s, "cmd")
    assert "| 0 | +10.00 | +0.00 | +5.00 |" in md and "| 1 | -10.00 | +0.00 | -5.00 |" in md


def test_summarize_one_seed_has_no_spread():
    s = summarize([run("fresh", 3, 0.5, 0.5), run("reuse", 3, 0.4, 0.5)])
    assert s["settings"]["reuse"]["mean_top1"] == {"n": 1, "mean": pytest.approx(0.45), "std": None}
    assert s["paired_fresh_minus_reuse"]["ci95"] is None
    assert s["paired_fresh_minus_reuse"]["mean"] == pytest.approx(0.05)
    md = markdown([run("fresh", 3, 0.5, 0.5), run("reuse", 3, 0.4, 0.5)], s, "cmd")
    assert "| fresh | 3 | 50.00 | 50.00 | 50.00 |" in md and "| mean +- std | +10.00 | +0.00 | +5.00 |" in md
