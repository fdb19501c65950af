"""benchmarks.studies.method_factors at a tiny size: real trainings (tiny backbone, one step an epoch) of ours and
baseline per length and per factor, stopped by --max-runs and resumed without training a finished run again; and its
sentences, which say only what the intervals show."""

from __future__ import annotations

import json

import pytest

from benchmarks.studies.method_factors import main, sentences, verdict
from tiny_data import make_mixture

TINY = ["--backbone", "tiny", "--no-pretrained", "--steps-per-epoch", "1", "--input-size", "16", "--threads", "1"]


@pytest.mark.slow  # real tiny trainings
def test_lengths_then_factors_at_the_best_length_resumable(tmp_path):
    data = [a for d in make_mixture(tmp_path / "mix", per_class=(4, 2), size=16) for a in ("--data", d)]
    out = tmp_path / "factors"
    args = ["--out", str(out), "--seeds", "0,1", "--lengths", "1,2", "--factors", "gate-dense,precise_bn-off", *TINY, *data]
    assert main([*args, "--max-runs", "3"]) == 0  # stopped part-way through stage 1
    first = {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    assert len(first) == 3 and json.loads((out / "summary.json").read_text())["best_epochs"] is None
    assert main(args) == 0
    raw = {p.name: json.loads(p.read_text()) for p in (out / "results").iterdir()}
    assert all((out / "results" / n).stat().st_mtime_ns == t for n, t in first.items())  # not trained again
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best_epochs"]
    ours = {e: sum(raw[f"ours.e{e}.s{s}.json"]["mean_top1"] for s in (0, 1)) for e in (1, 2)}
    assert best == max((1, 2), key=lambda e: (ours[e], -e))
    stage1 = {f"{v}.e{e}.s{s}.json" for v in ("ours", "baseline") for e in (1, 2) for s in (0, 1)}
    # gate changes ours only (paired with baseline at the best length); precise BN changes both
    stage2 = {f"ours.e{best}-gate-dense.s{s}.json" for s in (0, 1)} | {
        f"{v}.e{best}-precise_bn-off.s{s}.json" for v in ("ours", "baseline") for s in (0, 1)}
    assert set(raw) == stage1 | stage2
    g = raw[f"ours.e{best}-gate-dense.s1.json"]
    assert g["train_config"]["gate"] == "dense" and g["train_config"]["epochs"] == best and g["options"] == {"gate": "dense"}
    assert raw[f"baseline.e{best}-precise_bn-off.s0.json"]["train_config"]["precise_bn_batches"] == 0
    assert g["train_cpu_s"] > 0 and g["platform"]["torch_threads"] == 1
    rows = {r["tag"]: r for r in summary["rows"]}
    pair = rows[f"e{best}-gate-dense"]["pair"]
    assert pair["per_seed"] == [raw[f"ours.e{best}-gate-dense.s{s}.json"]["mean_top1"]
                                - raw[f"baseline.e{best}.s{s}.json"]["mean_top1"] for s in (0, 1)]
    md = (out / "factors.md").read_text()
    assert f"| {best} epochs, gate dense |" in md and "## What the intervals show" in md and "## Platform" in md
    assert summary["train_cpu_s"] == pytest.approx(sum(r["train_cpu_s"] for r in raw.values()))


def pair(diffs_mean, lo, hi, ahead, behind):
    return {"mean": diffs_mean, "ci95": [lo, hi], "seeds": list(range(ahead + behind)), "first_better": ahead,
            "second_better": behind}


def test_sentences_claim_only_what_the_intervals_show():
    assert verdict(pair(0.02, 0.005, 0.035, 3, 0)) == "ahead"
    assert verdict(pair(0.02, 0.005, 0.035, 2, 1)) == "undecided"  # the interval above 0, but one seed behind
    assert verdict(pair(-0.02, -0.03, -0.01, 0, 3)) == "behind"
    assert verdict(pair(0.01, -0.02, 0.04, 2, 1)) == "undecided"
    rows = [{"setting": "2 epochs", "pair": pair(-0.02, -0.03, -0.01, 0, 3)},
            {"setting": "5 epochs", "pair": pair(0.01, -0.02, 0.04, 2, 1)}]
    said = sentences(rows)
    assert said[0].startswith("At 2 epochs, ours is behind baseline: mean difference -2.00 points (95 % interval -3.00 to -1.00")
    assert "do not decide" in said[1] and said[-1].startswith("At no setting with an interval does ours >= baseline hold across seeds")
    rows.append({"setting": "10 epochs", "pair": pair(0.02, 0.005, 0.035, 3, 0)})
    assert sentences(rows)[-1] == "ours >= baseline holds across seeds at: 10 epochs."
    assert sentences(rows[:1])[-1].startswith("At no setting with an interval is ours >= baseline on this data: every interval lies below 0")
    one_seed = {"setting": "20 epochs", "pair": {**pair(0.03, 0, 0, 1, 0), "ci95": None}}
    said = sentences([rows[0], one_seed])
    assert "Fewer than two seeds paired yet (no interval, nothing said): 20 epochs." in said
    assert said[-1].startswith("At no setting with an interval is ours >= baseline")  # the one-seed setting not counted
