"""`prune --target-macs F` / `--target-latency-ms T` (train/prune_search.py): the smallest ratio found by
bisection with the real pruner, MACs by Torch-Pruning's counter, latency by the bench's timer on ONNX Runtime
(benchmarks/prune_latency.py); a target the model cannot reach, or one it already meets, is one line, exit 2,
nothing written. Tiny models, real checkpoints, real exports and sessions."""

from __future__ import annotations

import pytest
import torch

from train.checkpoint import load_checkpoint
from train.model import build_model
from train.prune import MAX_RATIO, PruneOptions, prune_model
from train.prune_search import model_macs, search_ratio
from trained_model import SPEC, cli, config, one_error_line, untrained_run


def _model():
    torch.manual_seed(0)
    return build_model(config("ours")).eval()


@pytest.mark.slow  # prunes a copy 8 times, over 1 s
def test_target_macs_finds_the_smallest_ratio_tried_that_reaches_it():
    model = _model()
    base = model_macs(model, SPEC.input_size)
    found = search_ratio(model, SPEC, PruneOptions(target_macs=0.5), steps=4)
    assert found.value <= 0.5 < 1 == found.unpruned
    assert model_macs(model, SPEC.input_size) == base  # the model itself is untouched (copies were pruned)
    pruned = _model()
    prune_model(pruned, SPEC.input_size, PruneOptions(ratio=found.ratio))
    assert model_macs(pruned, SPEC.input_size) / base == pytest.approx(found.value)
    # every ratio tried below the found one missed the target (bisection: the smallest tried that met it)
    assert all(v > 0.5 for r, v in found.tried if r < found.ratio) and found.ratio < MAX_RATIO
    assert found.tried[0] == (MAX_RATIO, pytest.approx(found.tried[0][1]))  # reachability checked first


@pytest.mark.slow  # the CLI pruning 8 copies, over 1 s
def test_target_macs_from_the_cli_records_the_search(tmp_path, capsys):
    run = untrained_run(tmp_path, "ours")
    out = tmp_path / "pruned"
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--target-macs", "0.7", "--out", out)
    assert rc == 0, err
    target = load_checkpoint(out).meta["pruned_from"]["target"]
    assert target["flag"] == "--target-macs" and target["goal"] == 0.7 and target["value"] <= 0.7
    assert load_checkpoint(out).meta["pruned_from"]["ratio"] == target["ratio"]
    assert f"ratio {target['ratio']:g}" in err


@pytest.mark.parametrize("flags,message", [
    (["--target-macs", "0.01"], "not reachable"),  # the tiny model's widths floor at 16: about 0.37 of its MACs
    (["--target-macs", "1.5"], "in (0, 1)"),
    (["--target-macs", "0"], "in (0, 1)"),
    (["--target-latency-ms", "-1"], "positive"),
    (["--ratio", "0.5", "--target-macs", "0.5"], "exactly one of"),
    (["--target-macs", "0.5", "--target-latency-ms", "3"], "exactly one of"),
])
def test_a_bad_or_unreachable_target_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, flags, message):
    run = untrained_run(tmp_path, "ours")
    out = tmp_path / "pruned"
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, *flags, "--out", out)
    assert rc == 2 and message in one_error_line(err)
    assert not out.exists() and not list(tmp_path.glob(".pruned*"))


@pytest.mark.slow  # exports and times on ONNX Runtime
def test_target_latency_is_timed_on_onnx_runtime_and_an_unreachable_or_met_one_refused(tmp_path, capsys):
    run = untrained_run(tmp_path, "ours")
    out = tmp_path / "pruned"
    # far below what the smallest pruned width can run in; far above what the unpruned model takes: the
    # measured figure is in the line
    for goal, message in (("0.0001", "not reachable"), ("100000", "already meets it")):
        rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--target-latency-ms", goal, "--latency-threads", "1",
                         "--out", out)
        line = one_error_line(err)
        assert rc == 2 and message in line and " ms" in line and not out.exists()

