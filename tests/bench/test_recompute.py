"""benchmarks/recompute.py and benchmarks/raw.py: a committed bench result (a short real `erudite-edge bench` run on
the tiny colour bundles, benchmarks/results/recompute_example/) re-derived from its raw samples gives every published
figure and verdict; a figure changed by hand is caught; a result without its raw file is refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks.raw import RawSamples, samples_path
from benchmarks.recompute import main, recompute
from paths import REPO

EXAMPLE = REPO / "benchmarks" / "results" / "recompute_example" / "bench.json"


def test_a_committed_result_recomputes_to_its_published_figures():
    checks = recompute(EXAMPLE)
    bad = [c for c in checks if not c.ok]
    assert not bad, bad[:5]
    names = [c.figure for c in checks]
    published = json.loads(EXAMPLE.read_text())
    # every erudite/zoo interval, every end-to-end interval, every precision ratio and every goal was re-derived
    assert sum("erudite/zoo" in n and "95 % CI" in n for n in names) == 3 * len(published["latency"])
    assert sum(n.startswith("end to end") and "95 % CI" in n for n in names) == 2 * len(published["end_to_end"])
    assert sum(n.startswith("goal ") for n in names) == len(published["goals"])
    assert len(published["precision_ratios"]) == 4 and published["load"]["label"].startswith(("quiet", "under load"))
    raw = RawSamples.read(EXAMPLE)
    assert raw.kind == "bench" and len(raw.series) == 8 and all(s.load for s in raw.series.values())


@pytest.mark.slow  # runs the bench or a study on real models
def test_a_figure_changed_by_hand_is_caught(tmp_path, capsys):
    shutil.copy(EXAMPLE, tmp_path / "bench.json")
    shutil.copy(samples_path(EXAMPLE), samples_path(tmp_path / "bench.json"))
    assert main([str(tmp_path / "bench.json")]) == 0
    r = json.loads((tmp_path / "bench.json").read_text())
    lo, hi = r["latency"][0]["ratio_ci95"]["latency_p50"]
    r["latency"][0]["ratio_ci95"]["latency_p50"] = [lo - 0.01, hi]
    r["goals"][0]["status"] = "PASS" if r["goals"][0]["status"] != "PASS" else "FAIL"
    (tmp_path / "bench.json").write_text(json.dumps(r))
    capsys.readouterr()
    assert main([str(tmp_path / "bench.json")]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS erudite/zoo fp32 batch 1 latency_p50 95 % CI" in out and "DIFFERS goal " in out


def test_a_result_without_raw_samples_is_refused_in_one_line(tmp_path, capsys):
    shutil.copy(EXAMPLE, tmp_path / "bench.json")
    assert main([str(tmp_path / "bench.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bench.samples.json.gz: not found" in err[0] and "not re-derivable" in err[0]


def test_raw_file_round_trips_and_lies_beside_its_summary(tmp_path):
    from benchmarks.latency import Samples
    from benchmarks.raw import quantise

    s = quantise(Samples(round_latency_ms=[[1.234567891, 2.0], [3.00004999]], round_ips=[10.123456789, 11.0]))
    assert s.round_latency_ms == [[1.2346, 2.0], [3.0]] and s.latency_ms == [1.2346, 2.0, 3.0] and s.round_ips == [10.1235, 11.0]
    raw = RawSamples("bench", {"a/fp32/1": s}, {"fp32/8/erudite": {"e2e_ips": [1.0, 2.0], "pure_ips": [2.0, 3.0]}})
    path = raw.write(tmp_path / "x.json")
    assert path.name == "x.samples.json.gz"
    back = RawSamples.read(tmp_path / "x.json")
    assert back.series["a/fp32/1"].round_latency_ms == s.round_latency_ms and back.end_to_end == raw.end_to_end
    path.write_bytes(b"\x1f\x8b" + b"junk")
    with pytest.raises((OSError, EOFError)):
        RawSamples.read(tmp_path / "x.json")


def test_replicates_give_a_verdict_only_where_every_run_was_quiet_and_agrees():
    """benchmarks/studies/replicates.py's report on three copies of the committed run: quiet and agreeing runs keep
    their verdict; one run under load, or runs that disagree, make it INCONCLUSIVE with the reason."""
    import copy

    from benchmarks.studies.replicates import combine

    base = json.loads(EXAMPLE.read_text())
    runs = [copy.deepcopy(base) for _ in range(3)]

    def series(run):  # type: ignore[no-untyped-def]
        return [row["load"] for row in run["latency"]] + [e[m]["load"] for e in run["end_to_end"] for m in ("erudite", "zoo") if m in e]

    for r in runs:  # every series measured quiet; the 1-minute load at the start high (the run before, back to back)
        for rec in series(r):
            rec.update(other_fraction=0.02, steal_fraction=0.0)
        r["load"] = {"busy_at_start": "1-minute load 1.89 on 2 cores", "quiet": False, "label": "under load (...)"}
    name = "p50 latency erudite/zoo, batch 1, fp32 (<= 0.52)"
    fig = next(f for f in combine(runs)["figures"] if f["figure"] == name)
    assert fig["status"] == base["goals"][0]["status"] == "PASS" and fig["reason"] == ""
    assert fig["spread"] == [base["latency"][0]["ratio"]["latency_p50"]] * 2
    series(runs[1])[0]["other_fraction"] = 0.4  # one series under other work
    fig = next(f for f in combine(runs)["figures"] if f["figure"] == name)
    assert fig["status"] == "INCONCLUSIVE" and fig["reason"] == "1 of 3 runs under load, 2 quiet (a verdict needs 3 quiet runs)"
    # a fourth run, quiet: the verdict rests on the three quiet ones; the loaded run is listed, not judged
    fig = next(f for f in combine(runs + [copy.deepcopy(runs[0])])["figures"] if f["figure"] == name)
    assert fig["status"] == "PASS" and fig["reason"] == "run 2 under load: listed, not judged"
    series(runs[1])[0]["other_fraction"] = 0.02
    runs[1]["load"]["busy_measured_at_start"] = "other processes used 40 % of the 2 usable cores"  # measured at the start
    fig = next(f for f in combine(runs)["figures"] if f["figure"] == name)
    assert fig["status"] == "INCONCLUSIVE" and fig["reason"].startswith("1 of 3 runs under load")
    runs[1]["load"]["busy_measured_at_start"] = None
    runs[2]["latency"][0]["ratio_ci95"]["latency_p50"] = [0.53, 0.60]  # this run's interval misses the goal
    fig = next(f for f in combine(runs)["figures"] if f["figure"] == name)
    assert fig["status"] == "INCONCLUSIVE" and fig["reason"] == "the quiet runs disagree (FAIL, PASS)"


def test_the_label_is_measured_the_load_average_only_warns():
    """A run is quiet when every series was and nothing measured at the start said otherwise; the 1-minute load
    average (which counts a run that has just ended) never makes it "under load" by itself. Records written before
    `busy_measured_at_start` existed are read from their joined sentence."""
    from benchmarks.load import measured_busy, run_label

    quiet = {"other_fraction": 0.03, "steal_fraction": 0.0}
    assert run_label([quiet, quiet], None) == (True, "quiet")
    assert run_label([quiet, {"other_fraction": 0.3, "steal_fraction": 0.0}], None)[0] is False
    assert run_label([quiet], "other processes used 40 % of the 2 usable cores") == (
        False, "under load (at the start: other processes used 40 % of the 2 usable cores)")
    assert run_label([], None)[0] is False
    assert measured_busy({"busy_at_start": "1-minute load 1.89 on 2 cores"}) is None
    assert measured_busy({"busy_at_start": "other processes used 40 % of the 2 usable cores; 1-minute load 3.1 on 2 cores"}) \
        == "other processes used 40 % of the 2 usable cores"
    assert measured_busy({"busy_at_start": "x", "busy_measured_at_start": None}) is None
