"""`erudite-edge prune`: structured channel pruning through Torch-Pruning's dependency graph (train/prune.py),
the pruned widths recorded in the checkpoint (train/layer_shapes.py), and the pruned run loading, exporting
(ONNX parity) and refusing bad input. Tiny models, real checkpoints, the real CLI in-process."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from train.checkpoint import load_checkpoint, save_checkpoint
from train.layer_shapes import layer_shapes
from train.model import build_model
from train.model_spec import ModelConfig
from train.modules import GroupSpatialAttention
from train.prune import PruneOptions, network_parts, prune_model
from trained_model import LABELS, SPEC, cli, config, one_error_line, untrained_run

NEVER_PRUNED = ("classifier", "aux_classifiers", "stage_classifiers", "concat_classifier", "projections", "gate")


def _pruned(variant: str, backbone: str = "tiny", size: int = 32, ratio: float = 0.5, seed: int = 0) -> tuple[nn.Module, nn.Module, ModelConfig]:
    torch.manual_seed(seed)
    cfg = ModelConfig(variant=variant, backbone=backbone, class_counts=[3, 4], embed_dim=16, hidden=16)
    model = build_model(cfg).eval()
    original = build_model(cfg).eval()
    original.load_state_dict(model.state_dict())
    prune_model(model, (size, size), PruneOptions(ratio=ratio))
    return model, original, cfg


@pytest.mark.slow  # trains a model
@pytest.mark.parametrize("variant", ["baseline", "baseline+", "ours", "ours-pcgrad", "ours-pmg", "single"])
def test_every_variant_prunes_keeps_its_classifiers_and_rebuilds_from_its_config_alone(variant):
    size = 32
    model, original, cfg = _pruned(variant)
    assert sum(p.numel() for p in model.parameters()) < 0.6 * sum(p.numel() for p in original.parameters())
    before = dict(original.named_modules())
    for name, m in model.named_modules():
        parts = name.split(".")
        kept = any(p in NEVER_PRUNED for p in parts[:2])
        if isinstance(m, (nn.Conv2d, nn.Linear)) and kept:  # outputs kept; only inputs follow the features
            assert m.weight.shape[0] == before[name].weight.shape[0], name
        elif isinstance(m, nn.Conv2d) and m.out_channels != before[name].out_channels:  # pruned: multiple of 8, >= 16
            assert m.out_channels % 8 == 0 and m.out_channels >= 16, name
    # the classifiers' outputs are the label space's
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        assert model(x).shape == original(x).shape == (3, 7)
    # the widths recorded in the config rebuild the pruned network without the original
    rebuilt = build_model(ModelConfig.from_dict({**cfg.to_dict(), "pruned": layer_shapes(model, original)})).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_the_attention_loses_the_same_channels_in_each_of_its_8_groups_and_computes_what_it_did():
    torch.manual_seed(0)
    model, original, _ = _pruned("ours", ratio=0.5)
    att, att0 = model.attention, original.attention
    assert isinstance(att, GroupSpatialAttention) and att.groups == 8
    c, c0 = att.conv.in_channels, att0.conv.in_channels
    assert c == c0 // 2 and att.conv.weight.shape == (8, c // 8, 1, 1)
    # the pruner on a lone attention layer: drop channels, zero them in the input, compare
    from train.prune import _attention_pruner_class, _import_torch_pruning

    lone = GroupSpatialAttention(32, 8)
    ref = GroupSpatialAttention(32, 8)
    ref.load_state_dict(lone.state_dict())
    drop = [g * 4 + p for g in range(8) for p in (1, 3)]  # positions 1 and 3 of every group of 4
    _attention_pruner_class(_import_torch_pruning())().prune_in_channels(lone, drop)
    keep = [i for i in range(32) if i not in drop]
    x = torch.randn(2, 32, 5, 5)
    x[:, drop] = 0  # the dropped channels carried nothing: the masks must not change
    with torch.no_grad():
        out, masks = lone(x[:, keep])
        out0, masks0 = ref(x)
    assert torch.allclose(masks, masks0, atol=1e-6) and torch.allclose(out, out0[:, keep], atol=1e-6)
    with pytest.raises(ValueError, match="same number"):
        _attention_pruner_class(_import_torch_pruning())().prune_in_channels(GroupSpatialAttention(32, 8), [0])


@pytest.mark.slow  # trains a model
@pytest.mark.parametrize("backbone,size", [("efficientnet_lite0", 64), ("resnet50", 64)])
def test_both_deployed_backbones_prune_depthwise_and_residual_groups_coupled(backbone, size):
    model, original, cfg = _pruned("ours", backbone=backbone, size=size, ratio=0.4)
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert any(m.groups > 1 for m in convs) == (backbone == "efficientnet_lite0")
    for m in convs:
        if m.groups > 1:  # depthwise: in == out == groups
            assert m.in_channels == m.out_channels == m.groups
        assert m.out_channels % 8 == 0 and m.out_channels >= 16
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
    assert sum(p.numel() for p in model.backbone.parameters()) < 0.5 * sum(p.numel() for p in original.backbone.parameters())
    shapes = layer_shapes(model, original)
    rebuilt = build_model(ModelConfig.from_dict({**cfg.to_dict(), "pruned": shapes})).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert model.backbone.out_channels == rebuilt.backbone.out_channels < original.backbone.out_channels


@pytest.mark.slow  # trains a model
def test_a_zoo_prunes_each_of_its_networks():
    model, original, _ = _pruned("single")
    parts = network_parts(model)
    assert [p.name for p in parts] == ["coarse", "fine.0", "fine.1"]
    for net, net0 in zip([model.coarse, *model.fine], [original.coarse, *original.fine]):
        assert net.backbone.out_channels < net0.backbone.out_channels


# -- the command ----------------------------------------------------------------------------------

@pytest.mark.slow  # trains a model
def test_prune_command_writes_a_run_that_loads_and_exports_with_onnx_parity(tmp_path, capsys):
    run = untrained_run(tmp_path, "ours")
    out = tmp_path / "pruned"
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--ratio", "0.5", "--out", out)
    assert rc == 0, err
    assert "parameters" in err and str(out) in err
    ckpt = load_checkpoint(out)
    assert ckpt.model_config.pruned and ckpt.meta["pruned_from"]["ratio"] == 0.5
    model = ckpt.build_model()  # from the config alone
    original = load_checkpoint(run).build_model()
    assert sum(p.numel() for p in model.parameters()) < 0.6 * sum(p.numel() for p in original.parameters())
    assert (out / "best").is_dir() and (out / "last").is_dir()
    bundle = tmp_path / "bundle"
    rc, _, err = cli(capsys, "export", "onnx", "--checkpoint", out, "--out", bundle, "--parity-count", "4")
    assert rc == 0, err
    parity = json.loads((bundle / "bundle.json").read_text())["parity"]["main"]["fp32"]
    assert parity["passed"] and parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] <= parity["tolerance"]


@pytest.mark.slow  # trains a model
def test_prune_command_prunes_a_single_run_and_exports_its_zoo(tmp_path, capsys):
    run = untrained_run(tmp_path, "single")
    out = tmp_path / "pruned"
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--ratio", "0.5", "--out", out)
    assert rc == 0, err
    rc, _, err = cli(capsys, "export", "zoo", "--checkpoint", out, "--out", tmp_path / "zoo", "--parity-count", "2")
    assert rc == 0, err


@pytest.mark.parametrize("ratio", ["0", "-0.1", "0.96", "1"])
def test_a_ratio_outside_its_range_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, ratio):
    run = untrained_run(tmp_path, "ours")
    out = tmp_path / "pruned"
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--ratio", ratio, "--out", out)
    assert rc == 2 and "(0, 0.95]" in one_error_line(err)
    assert not out.exists() and not list(tmp_path.glob(".pruned*"))


def test_a_ratio_that_removes_no_channel_is_refused(tmp_path, capsys):
    run = untrained_run(tmp_path, "ours")  # tiny: 16/32/64 channels; 3 % rounds back to the same widths
    out = tmp_path / "pruned"
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--ratio", "0.03", "--out", out)
    assert rc == 2 and "removes no channel" in one_error_line(err)
    assert not out.exists() and not list(tmp_path.glob(".pruned*"))


def test_a_run_of_an_unknown_layout_is_refused(tmp_path, capsys):
    torch.manual_seed(0)
    run = tmp_path / "odd"
    save_checkpoint(run, "best", build_model(config("ours")), model_config=ModelConfig(**{**config("ours").to_dict(), "variant": "mystery"}),
                    labels=LABELS, preprocess=SPEC)
    out = tmp_path / "pruned"
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--ratio", "0.5", "--out", out)
    assert rc == 2 and "mystery" in one_error_line(err)
    assert not out.exists()


def test_an_existing_out_is_never_replaced(tmp_path, capsys):
    run = untrained_run(tmp_path, "ours")
    out = tmp_path / "pruned"
    out.mkdir()
    (out / "note.txt").write_text("mine")
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--ratio", "0.5", "--out", out)
    assert rc == 2 and "already exists" in one_error_line(err)
    assert (out / "note.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


# -- 2:4 sparsity (NVIDIA ModelOpt) ---------------------------------------------------------------

def test_is_2_4_reads_the_pattern_along_input_channels_at_each_kernel_position():
    from train.sparsity import is_2_4

    w = torch.ones(2, 8, 3, 3)
    w[:, 0::2] = 0  # every other input channel zero: 2 of every 4
    assert is_2_4(w)
    w[0, 0, 1, 1] = 1.0  # one kernel position with 3 non-zeros in a group of 4
    assert not is_2_4(w)
    assert not is_2_4(torch.zeros(4, 3, 3, 3))  # 3 input channels: no groups of 4
    lin = torch.tensor([[1.0, 0, 2.0, 0, 0, 0, 3.0, 4.0]])
    assert is_2_4(lin) and not is_2_4(torch.ones(1, 8))


@pytest.mark.slow  # trains a model
def test_prune_sparsity_2_4_makes_the_backbone_sparse_records_it_keeps_it_through_finetune_and_exports_it(tmp_path, capsys):
    from tiny_data import make_mixture
    from train.sparsity import is_2_4, layers_2_4

    data = make_mixture(tmp_path / "data")
    run = tmp_path / "run"
    args = ["train", "--variant", "ours", "--epochs", "2", "--steps-per-epoch", "2", "--out", run, "--backbone", "tiny",
            "--no-pretrained", "--batch-per-dataset", "4", "--input-size", "32", "--embed-dim", "16", "--workers", "0",
            "--no-progress", *sum((["--data", d] for d in data), [])]
    assert cli(capsys, *args)[0] == 0
    out = tmp_path / "sparse"
    rc, stdout, err = cli(capsys, "prune", "--checkpoint", run, "--sparsity", "2:4", "--out", out)
    assert rc == 0, err
    assert stdout == "" and "2:4 sparse weights in 3 backbone layers" in err  # ModelOpt's per-layer lines kept out
    ckpt = load_checkpoint(out)
    assert ckpt.meta["sparsity"] == {"pattern": "2:4", "layers": ["backbone.3", "backbone.6", "backbone.9"]}
    assert ckpt.model_config.pruned is None  # weights only: the widths are the run's
    model = ckpt.build_model()
    assert layers_2_4(model) == ckpt.meta["sparsity"]["layers"]
    # fine-tuned: the zeros stay zero (without the masks, SGD fills them in the first step)
    rc, _, err = cli(capsys, "train", "--finetune", out, "--steps-per-epoch", "2", "--no-progress", "--workers", "0")
    assert rc == 0, err
    tuned = load_checkpoint(tmp_path / "sparse-ft", prefer="last")
    assert tuned.meta["sparsity"] == ckpt.meta["sparsity"]
    weights, start = tuned.weights(), ckpt.weights()
    assert all(is_2_4(weights[f"{n}.weight"]) for n in ckpt.meta["sparsity"]["layers"])
    assert any(not torch.equal(weights[k], start[k]) for k in start if start[k].is_floating_point())
    rc, _, err = cli(capsys, "export", "onnx", "--checkpoint", tmp_path / "sparse-ft", "--out", tmp_path / "bundle",
                     "--parity-count", "2")
    assert rc == 0, err
    meta = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert meta["sparsity"]["count"] == 3 and meta["sparsity"]["layers"]["main"] == ckpt.meta["sparsity"]["layers"]


def test_an_unknown_sparsity_pattern_and_no_pruning_at_all_are_refused(tmp_path, capsys):
    run = untrained_run(tmp_path, "ours")
    out = tmp_path / "pruned"
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--sparsity", "1:4", "--out", out)
    assert rc == 2 and "--sparsity 1:4" in one_error_line(err)
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--out", out)
    assert rc == 2 and "--ratio" in one_error_line(err)
    assert not out.exists()
