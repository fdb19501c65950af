"""benchmarks.studies.meta_bn at a tiny size: real gradients under the three modes from a really trained state, real
trainings per mode, the default mode's result taken from accuracy_seeds' folder when its settings are the same."""

from __future__ import annotations

import json

import pytest

from benchmarks.studies import accuracy_seeds, meta_bn
from tiny_data import make_mixture

TINY = ["--backbone", "tiny", "--no-pretrained", "--epochs", "1", "--steps-per-epoch", "2", "--input-size", "16", "--threads", "1"]


@pytest.mark.slow  # real tiny trainings
def test_cosines_and_accuracy_per_mode_reusing_accuracy_seeds_default_run(tmp_path):
    data = [a for d in make_mixture(tmp_path / "mix", per_class=(4, 2), size=16) for a in ("--data", d)]
    acc = tmp_path / "acc"
    assert accuracy_seeds.main(["--out", str(acc), "--seeds", "0", "--variants", "ours", *TINY, *data]) == 0
    out = tmp_path / "study"
    args = ["--out", str(out), "--states", "0,1", "--batches", "2", "--seeds", "0", "--modes", "train,eval",
            "--reuse", str(acc / "results"), *TINY, *data]
    assert meta_bn.main(args) == 0
    cos = json.loads((out / "cosines.json").read_text())
    assert set(cos["samples"]) == {"0", "1"} and cos["platform"]["torch_threads"] == 1 and cos["cpu_s"] > 0
    sample = cos["samples"]["1"][0]
    assert set(sample["cosine"]) == {"train-eval", "train-frozen", "eval-frozen"} and sample["meta_test"] in ("a", "b")
    assert all(-1.0 <= c <= 1.0 for c in sample["cosine"].values()) and sample["cosine"]["train-eval"] < 0.9999
    batches = {s["batch"] for s in cos["samples"]["0"]}  # at most 2 (the tiny mixture may hold fewer per epoch)
    assert 1 <= len(batches) <= 2 and len(cos["samples"]["0"]) == 2 * len(batches)  # each data set meta-test in turn
    md = (out / "cosines.md").read_text()
    assert "| train-eval |" in md and "| 1 | a |" in md
    (out / "cosines.md").unlink()
    assert meta_bn.main(["--out", str(out), "--part", "report"]) == 0  # again from the raw samples
    assert (out / "cosines.md").read_text() == md
    raw = {p.name: json.loads(p.read_text()) for p in (out / "results").iterdir()}
    assert sorted(raw) == ["ours.meta_bn-eval.s0.json", "ours.meta_bn-train.s0.json"]
    assert raw["ours.meta_bn-train.s0.json"]["reused_from"] == str(acc / "results" / "ours.s0.json")
    assert raw["ours.meta_bn-eval.s0.json"]["train_config"]["meta_bn"] == "eval" and "reused_from" not in raw["ours.meta_bn-eval.s0.json"]
    pair = json.loads((out / "summary.json").read_text())["summary"]["paired"]["ours@meta_bn-eval - ours@meta_bn-train"]
    assert pair["per_seed"] == [raw["ours.meta_bn-eval.s0.json"]["mean_top1"] - raw["ours.meta_bn-train.s0.json"]["mean_top1"]]
    # a rerun trains nothing again
    before = {n: (out / "results" / n).stat().st_mtime_ns for n in raw}
    assert meta_bn.main([*args[:2], "--part", "accuracy", *args[2:]]) == 0
    assert {n: (out / "results" / n).stat().st_mtime_ns for n in raw} == before


def test_a_default_run_with_other_settings_is_trained_again(tmp_path):
    data = [a for d in make_mixture(tmp_path / "mix", per_class=(4, 2), size=16) for a in ("--data", d)]
    acc = tmp_path / "acc"
    assert accuracy_seeds.main(["--out", str(acc), "--seeds", "0", "--variants", "ours", *TINY, "--set", "lr=0.2",
                                "--tag", "lr02", *data]) == 0
    (acc / "results" / "ours.lr02.s0.json").rename(acc / "results" / "ours.s0.json")  # settings differ from meta_bn's
    out = tmp_path / "study"
    assert meta_bn.main(["--out", str(out), "--part", "accuracy", "--seeds", "0", "--modes", "train",
                         "--reuse", str(acc / "results"), *TINY, *data]) == 0
    r = json.loads((out / "results" / "ours.meta_bn-train.s0.json").read_text())
    assert "reused_from" not in r and r["train_config"]["lr"] == 0.05


def test_accuracy_seeds_set_needs_a_tag_and_checks_the_option(tmp_path, capsys):
    with pytest.raises(SystemExit):
        accuracy_seeds.main(["--out", str(tmp_path), "--set", "meta_bn=eval"])
    assert "give --tag NAME" in capsys.readouterr().err
    from erudite_edge.errors import UsageError

    with pytest.raises(UsageError, match="unknown training option"):
        accuracy_seeds.parse_overrides(["meta_bm=eval"])
    assert accuracy_seeds.parse_overrides(["theta_lr=0.002", "gate=dense", "precise_bn_batches=0"]) == {
        "theta_lr": 0.002, "gate": "dense", "precise_bn_batches": 0}
