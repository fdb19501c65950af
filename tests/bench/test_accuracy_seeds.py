"""benchmarks.studies.accuracy_seeds at a tiny size: real trainings (tiny backbone, two steps) of two variants at two
seeds, raw results with their platform, per-variant summaries and paired differences with t intervals across seeds."""

from __future__ import annotations

import json

import pytest

from benchmarks.studies.accuracy_seeds import main, summarize
from tiny_data import make_mixture


@pytest.mark.slow  # trains each variant per seed
def test_study_trains_each_variant_per_seed_and_pairs_them(tmp_path):
    data = make_mixture(tmp_path / "mix", per_class=(4, 2), size=16)
    out = tmp_path / "study"
    args = ["--out", str(out), "--seeds", "0,1", "--variants", "ours,single", "--backbone", "tiny",
            "--quick", "--no-pretrained", "--epochs", "1", "--steps-per-epoch", "2", "--input-size", "16", "--threads", "1",
            *[a for d in data for a in ("--data", d)]]
    assert main(args) == 0
    raw = {p.name: json.loads(p.read_text()) for p in (out / "results").iterdir()}
    assert sorted(raw) == sorted(f"{v}.s{s}.json" for v in ("ours", "single") for s in (0, 1))
    r = raw["ours.s1.json"]
    assert r["train_config"]["seed"] == 1 and r["train_config"]["backbone"] == "tiny" and set(r["top1"]) == {"a", "b"}
    p = r["platform"]
    assert p["torch_threads"] == 1 and p["torch"] and "isa_flags" in p and p["onednn"] and p["deterministic_algorithms"] is False
    assert raw["single.s0.json"]["train_config"]["parts_epochs"] is None  # the fair schedule (the run's config holds it)
    saved = json.loads((out / "summary.json").read_text())
    pair = saved["summary"]["paired"]["ours - single"]
    assert pair["seeds"] == [0, 1] and pair["ci95"] is not None
    assert pair["per_seed"] == [raw[f"ours.s{s}.json"]["mean_top1"] - raw[f"single.s{s}.json"]["mean_top1"] for s in (0, 1)]
    md = (out / "accuracy.md").read_text()
    assert "## Paired differences" in md and "| ours - single | 0,1 |" in md and "## Platform" in md
    # a second invocation skips what has finished
    before = {n: (out / "results" / n).stat().st_mtime_ns for n in raw}
    assert main(args) == 0
    assert {n: (out / "results" / n).stat().st_mtime_ns for n in raw} == before


def test_summary_pairs_only_the_seeds_both_variants_finished():
    rows = [{"variant": v, "seed": s, "mean_top1": m, "top1": {"a": m}} for v, s, m in
            [("ours", 0, 0.9), ("baseline", 0, 0.8), ("ours", 1, 0.7), ("baseline", 1, 0.75), ("ours", 2, 0.95)]]
    s = summarize(rows)
    pair = s["paired"]["ours - baseline"]
    assert pair["seeds"] == [0, 1] and pair["per_seed"] == pytest.approx([0.1, -0.05])
    assert pair["first_better"] == 1 and pair["second_better"] == 1
    lo, hi = pair["ci95"]
    assert lo < 0 < hi  # one seed each way: the interval holds 0
    assert s["variants"]["ours"]["mean_top1"]["n"] == 3 and "ours - single" not in s["paired"]
