"""How `prune` ranks channels: --scope uniform|global, --steps K (re-ranked after each step) and
--importance taylor (gradients of the loss over the run's own training data, train/prune_taylor.py).
Small real networks with planted weights, real Torch-Pruning, real images (tiny_data)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tiny_data import make_mixture
from train.data import build_label_space, load_datasets
from train.prune import Part, PruneOptions, prune_part
from train.prune_taylor import taylor_gradients
from trained_model import cli, one_error_line, untrained_run


def _net(seed: int = 0) -> nn.Sequential:
    """conv1 (64) -> conv2 (64) -> pool -> linear (5 classes: the mixture's a and b)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 5))
    with torch.no_grad():  # every channel's weights about equally large, none tied
        for conv in (net[0], net[3]):
            w = conv.weight
            w.copy_(w.sign() * (1 + 0.1 * torch.rand(w.shape[0], 1, 1, 1)))
    return net.eval()


def _plant_weak_half(net: nn.Sequential) -> None:
    """conv1's channels 0..31 (weights, BatchNorm scale, conv2's columns reading them) made 1000x smaller."""
    with torch.no_grad():
        net[0].weight[:32] *= 1e-3
        net[1].weight[:32] *= 1e-3
        net[3].weight[:, :32] *= 1e-3


def _widths(net: nn.Sequential) -> tuple[int, int]:
    return net[0].out_channels, net[3].out_channels


def _prune(net: nn.Sequential, gradients=None, **kw) -> int:
    return prune_part(Part("", net, [net[8]]), torch.randn(2, 3, 16, 16), PruneOptions(**kw), gradients)


def test_uniform_takes_the_ratio_from_every_layer_global_takes_the_globally_weakest_channels():
    uniform, global_ = _net(), _net()
    _plant_weak_half(uniform)
    _plant_weak_half(global_)
    _prune(uniform, ratio=0.25, scope="uniform")
    _prune(global_, ratio=0.25, scope="global")
    assert _widths(uniform) == (48, 48)
    # one ranking over both layers (each normalised by its mean, as Torch-Pruning's default): the 32 weakest
    # channels of all 128 are conv1's planted half; conv2 keeps all of its channels
    assert _widths(global_) == (32, 64)
    kept = global_[0].weight.abs().flatten(1).mean(1)
    assert bool((kept > 0.5).all())  # the weak half went, the strong half stayed


@pytest.mark.slow  # over 1 s
def test_steps_reach_the_same_widths_re_ranking_the_network_of_the_step_before():
    one_shot, stepped = _net(), _net()
    _prune(one_shot, ratio=0.5)
    calls = []

    def count(part: Part) -> None:  # records the widths each step ranks
        calls.append(_widths(part.graph))

    _prune(stepped, ratio=0.5, steps=4, importance="taylor", gradients=_taylor_over_mixture(count))
    assert _widths(stepped) == _widths(one_shot) == (32, 32)
    # step k ranks the network step k-1 left: 64 (before), 56 (0.125), 48 (0.25), 40 (0.375)
    assert calls == [(64, 64), (56, 56), (48, 48), (40, 40)]


_MIXTURE: dict[str, list[str]] = {}


def _taylor_over_mixture(also=None, batches: int = 2):
    import tempfile
    from pathlib import Path

    if "specs" not in _MIXTURE:
        _MIXTURE["specs"] = make_mixture(Path(tempfile.mkdtemp(prefix="taylor-mix-")), per_class=(6, 1), size=16)
    specs = _MIXTURE["specs"]
    labels = build_label_space(load_datasets(specs))
    from erudite_edge.core.preprocess import PreprocessSpec

    fill = taylor_gradients(specs, labels, PreprocessSpec.square(16), batches)

    def run(part: Part) -> None:
        if also:
            also(part)
        fill(part)

    return run


@pytest.mark.slow  # over 1 s
def test_taylor_drops_channels_the_loss_does_not_use_which_magnitude_keeps():
    # conv1's channels 0..31: LARGE weights (magnitude keeps them) whose BatchNorm outputs -1 whatever comes in
    # (scale 0, shift -1), so after the ReLU the loss never sees them: every gradient through them is zero and
    # Taylor's |w x g| is zero
    l1, taylor = _net(), _net()
    for net in (l1, taylor):
        with torch.no_grad():
            net[0].weight[:32] *= 10
            net[1].weight[:32] = 0
            net[1].bias[:32] = -1
    _prune(l1, ratio=0.5, importance="l1")
    _prune(taylor, ratio=0.5, importance="taylor", gradients=_taylor_over_mixture())
    assert _widths(l1)[0] == _widths(taylor)[0] == 32
    assert bool((l1[0].weight.abs().flatten(1).mean(1) > 5).all())  # magnitude kept the unused, large channels
    assert bool((taylor[0].weight.abs().flatten(1).mean(1) < 5).all())  # Taylor kept the used ones


def test_taylor_needs_the_runs_training_data(tmp_path, capsys):
    run = untrained_run(tmp_path, "ours")  # a checkpoint with no run.json: no training data to name
    out = tmp_path / "pruned"
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--ratio", "0.5", "--importance", "taylor", "--out", out)
    assert rc == 2 and "needs the run's training data" in one_error_line(err)
    assert not out.exists()


@pytest.mark.slow  # trains a tiny run
def test_prune_with_taylor_global_and_steps_from_the_cli_on_a_trained_run(tmp_path, capsys):
    import json

    from train.checkpoint import load_checkpoint

    data = make_mixture(tmp_path / "data", per_class=(4, 1), size=24)
    run = tmp_path / "run"
    args = ["train", "--variant", "ours", "--epochs", "1", "--steps-per-epoch", "1", "--out", run, "--backbone", "tiny",
            "--no-pretrained", "--batch-per-dataset", "4", "--input-size", "32", "--embed-dim", "16", "--workers", "0",
            "--no-progress", *sum((["--data", d] for d in data), [])]
    assert cli(capsys, *args)[0] == 0
    out = tmp_path / "pruned"
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--ratio", "0.5", "--importance", "taylor", "--taylor-batches",
                     "2", "--scope", "global", "--steps", "2", "--out", out)
    assert rc == 0, err
    meta = load_checkpoint(out).meta["pruned_from"]
    assert (meta["importance"], meta["scope"], meta["steps"], meta["taylor_batches"]) == ("taylor", "global", 2, 2)
    assert json.loads((out / "run.json").read_text())["pruned_from"]["scope"] == "global"
    # the data moved away: one line, exit 2, nothing written
    (tmp_path / "data").rename(tmp_path / "moved")
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--ratio", "0.5", "--importance", "taylor", "--out", tmp_path / "p2")
    assert rc == 2 and not (tmp_path / "p2").exists()
    one_error_line(err)


@pytest.mark.parametrize("flags,message", [
    (["--scope", "layer"], "--scope layer"),
    (["--steps", "0"], "--steps 0"),
    (["--importance", "hessian"], "--importance hessian"),
    (["--importance", "taylor", "--taylor-batches", "0"], "--taylor-batches 0"),
])
def test_bad_ranking_options_are_one_line_exit_2(tmp_path, capsys, flags, message):
    run = untrained_run(tmp_path, "ours")
    out = tmp_path / "pruned"
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--ratio", "0.5", *flags, "--out", out)
    assert rc == 2 and message in one_error_line(err)
    assert not out.exists()
