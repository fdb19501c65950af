"""The demo pruning study's bookkeeping (its trainings are a study: benchmarks/results/pruning_seeds/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.studies.pruning import tuned_dir
from train.config import FINETUNE_LR_FACTOR, finetune_values


def test_each_fine_tuning_setting_has_its_own_run(tmp_path: Path) -> None:
    """A second invocation with another fine-tuning must train its own run, never reuse one tuned otherwise
    (the study reuses what it finds)."""
    settings = [(None, None, False), (None, None, True), (2, None, True), (2, 1.0, True), (4, 1.0, True), (4, 0.1, True)]
    dirs = [tuned_dir(tmp_path, 0.4, *s) for s in settings]
    assert len(set(dirs)) == len(settings)
    assert tuned_dir(tmp_path, 0.4, 2, 1.0, True) == tmp_path / "r0.4-ft-e2-lr1-kd"
    assert tuned_dir(tmp_path, 0.3, 2, 1.0, True) != tuned_dir(tmp_path, 0.4, 2, 1.0, True)


@pytest.mark.parametrize("factor", [None, 1.0, 0.5])
def test_finetune_learning_rates_scale_by_the_factor(tmp_path: Path, factor: float | None) -> None:
    run = tmp_path / "run-p"
    run.mkdir()
    config = {"lr": 0.05, "backbone_lr": 0.005, "theta_lr": 0.002, "epochs": 8}
    (run / "run.json").write_text(json.dumps({"train_config": config, "pruned_from": "run"}))
    values = finetune_values(run, {}) if factor is None else finetune_values(run, {}, lr_factor=factor)
    f = FINETUNE_LR_FACTOR if factor is None else factor
    assert values["lr"] == pytest.approx(0.05 * f) and values["backbone_lr"] == pytest.approx(0.005 * f)
    assert values["theta_lr"] == pytest.approx(0.002 * f) and values["epochs"] == 2
    assert finetune_values(run, {"lr": 0.3}, lr_factor=factor or 0.1)["lr"] == 0.3  # given options win


def test_accuracy_goal_needs_the_mean_within_1_point_and_the_lower_end_above_minus_3() -> None:
    from benchmarks.studies.meta_features_accuracy import t_interval
    from benchmarks.studies.pruning import accuracy_verdict

    def judge(diffs: list[float]) -> str:
        return accuracy_verdict(sum(diffs) / len(diffs), t_interval(diffs))[0]

    assert judge([-0.5, -0.2, -0.8]) == "PASS"
    assert judge([-2.55, -0.78, -0.78]) == "NOT SHOWN"  # mean -1.37: misses by the point estimate, interval holds -1
    assert judge([0.5, -0.5, -6.0]) == "NOT SHOWN"  # mean within 1 point, but the lower end far below -3
    assert judge([-2.88, -3.55, -4.33]) == "FAIL"  # the whole interval below -1
    assert accuracy_verdict(-0.1, None)[0] == "NOT SHOWN"


@pytest.mark.parametrize("flags, says", [
    (["--finetune-lr-factor", "0"], "a number in (0, 10]"),
    (["--finetune-lr-factor", "-1"], "a number in (0, 10]"),
])
def test_bad_finetune_lr_factor_is_one_line_exit_2_nothing_written(tmp_path: Path, capsys, flags, says) -> None:  # type: ignore[no-untyped-def]
    from trained_model import cli, one_error_line

    run = tmp_path / "run-p"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"train_config": {"lr": 0.05, "epochs": 2}, "pruned_from": "run"}))
    rc, _, err = cli(capsys, "train", "--finetune", run, *flags, "--out", tmp_path / "out")
    assert rc == 2 and says in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_finetune_lr_factor_without_finetune_is_one_line_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from trained_model import cli, one_error_line

    rc, _, err = cli(capsys, "train", "--data", tmp_path, "--finetune-lr-factor", "1", "--out", tmp_path / "out")
    assert rc == 2 and "needs --finetune" in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_the_combined_pareto_plot_of_the_committed_results(tmp_path: Path) -> None:
    """The README's plot from the committed results: every setting's pruned models, the front over all of them
    (the default's 0.4 lies behind 4 epochs at 1x on both axes, so it is off the front)."""
    from benchmarks.studies.pruning_plot import main

    d = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "pruning_seeds"
    out = tmp_path / "all.svg"
    assert main([str(out), f"default={d / 'pruning_seeds.json'}", f"4 epochs, 1x={d / 'ft_e4_lr1.json'}"]) == 0
    svg = out.read_text()
    assert svg.startswith("<?xml") and "unpruned, trained as long" in svg
    from benchmarks.studies.pruning_plot import plot_many

    front = plot_many({"default": json.loads((d / "pruning_seeds.json").read_text()),
                       "4 epochs, 1x": json.loads((d / "ft_e4_lr1.json").read_text())}, tmp_path / "again.svg")
    assert "4 epochs, 1x: pruned 0.4" in front and "default: pruned 0.4" not in front
    assert (tmp_path / "again.svg").read_bytes() == out.read_bytes()  # the same results give the same file
