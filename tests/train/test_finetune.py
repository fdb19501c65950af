"""`train --finetune RUN_PRUNED [--distill RUN]`: a pruned run fine-tuned with the same two-stage method, its
checkpoints carrying the pruned widths (resume, export), and the distillation term (train/distill.py).
Tiny backbone, tiny images: the path, not the accuracy (benchmarks/results/pruning.md has that)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from erudite_edge.cli.app import main
from tiny_data import make_mixture
from train.checkpoint import load_checkpoint
from train.config import FINETUNE_EPOCH_FRACTION, FINETUNE_LR_FACTOR
from train.distill import Distillation
from trained_model import cli, one_error_line

pytestmark = pytest.mark.slow  # prunes and fine-tunes a trained run (module fixture)

COMMON = ["--backbone", "tiny", "--no-pretrained", "--batch-per-dataset", "4", "--input-size", "32", "--embed-dim", "16",
          "--workers", "0", "--no-progress", "--lr", "0.05", "--backbone-lr", "0.05"]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    data = make_mixture(root / "data")
    run = root / "run"
    args = ["train", "--variant", "ours", "--epochs", "4", "--steps-per-epoch", "3", "--out", str(run)] + COMMON
    assert main(args + sum((["--data", d] for d in data), [])) == 0
    assert main(["prune", "--checkpoint", str(run), "--ratio", "0.5", "--out", str(root / "run-p")]) == 0
    return {"root": root, "data": data, "run": run, "pruned": root / "run-p"}


def test_finetune_defaults_to_a_share_of_the_schedule_at_a_lower_rate_keeps_the_widths_and_resumes(pruned, capsys):
    rc, _, err = cli(capsys, "train", "--finetune", pruned["pruned"], "--steps-per-epoch", "3", "--no-progress",
                     "--workers", "0", "--distill", pruned["run"])
    assert rc == 0, err
    ft = pruned["root"] / "run-p-ft"
    cfg = json.loads((ft / "run.json").read_text())["train_config"]
    assert cfg["epochs"] == max(1, round(4 * FINETUNE_EPOCH_FRACTION)) == 1
    assert cfg["lr"] == pytest.approx(0.05 * FINETUNE_LR_FACTOR) and cfg["backbone_lr"] == pytest.approx(0.05 * FINETUNE_LR_FACTOR)
    assert cfg["finetune"] == str(pruned["pruned"]) and cfg["distill"] == str(pruned["run"])
    start, done = load_checkpoint(pruned["pruned"]), load_checkpoint(ft, prefer="last")
    assert done.model_config.pruned == start.model_config.pruned
    # trained from the pruned weights (same shapes, changed values)
    w0, w1 = start.weights(), done.weights()
    assert w0.keys() == w1.keys() and all(w0[k].shape == w1[k].shape for k in w0)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if w0[k].is_floating_point())
    # resumed for one more epoch: the pruned widths come from the checkpoint
    rc, _, err = cli(capsys, "train", "--resume", "--out", ft, "--epochs", "2", "--no-progress", "--workers", "0")
    assert rc == 0, err
    assert load_checkpoint(ft, prefer="last").epoch == 1 and load_checkpoint(ft, prefer="last").model_config.pruned
    rc, _, err = cli(capsys, "export", "onnx", "--checkpoint", ft, "--out", pruned["root"] / "bundle-ft", "--parity-count", "4",
                     *sum((["--data", d] for d in pruned["data"]), []))
    assert rc == 0, err
    # and quantization-aware fine-tuning of the fine-tuned pruned run builds its pruned widths
    rc, _, err = cli(capsys, "train", "--qat", ft, "--epochs", "1", "--steps-per-epoch", "2", "--qat-calib-batches", "2",
                     "--no-progress", "--workers", "0")
    assert rc == 0, err
    assert load_checkpoint(pruned["root"] / "run-p-ft-qat").model_config.pruned == start.model_config.pruned


def test_finetune_of_an_unpruned_run_is_one_line_exit_2(pruned, capsys):
    out = pruned["root"] / "nope"
    rc, _, err = cli(capsys, "train", "--finetune", pruned["run"], "--out", out, "--no-progress", "--workers", "0")
    assert rc == 2 and "not a pruned run" in one_error_line(err)
    assert not out.exists()


def test_distillation_is_the_tempered_kl_and_zero_when_student_matches_teacher():
    torch.manual_seed(0)
    teacher = torch.nn.Linear(5, 4)
    x = torch.randn(6, 5)
    d = Distillation(teacher, temperature=2.0, weight=0.5)
    with torch.no_grad():
        t = teacher(x)
    assert float(d(x, t.clone())) == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(6, 4, requires_grad=True)
    expected = 0.5 * 4 * F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean")
    got = d(x, s)
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    got.backward()
    assert s.grad is not None and teacher.weight.grad is None  # the teacher is frozen


def test_a_single_run_is_pruned_network_by_network_and_fine_tuned(tmp_path, capsys):
    """Single (the zoo, trained as separate runs): its coarse model and every fine model pruned the same way,
    then `train --finetune` fine-tunes each part from its share of the pruned zoo and assembles the zoo again
    with the pruned widths (before: refused as not supported)."""
    data = make_mixture(tmp_path / "data", per_class=(4, 1))
    run = tmp_path / "single"
    args = ["train", "--variant", "single", "--epochs", "1", "--steps-per-epoch", "1", "--out", str(run)] + COMMON
    assert main(args + sum((["--data", d] for d in data), [])) == 0
    pruned = tmp_path / "single-p"
    # Taylor: each network's own loss (coarse: the data set; fine n: its data set's labels) on the run's data
    rc, _, err = cli(capsys, "prune", "--checkpoint", run, "--ratio", "0.5", "--importance", "taylor", "--taylor-batches",
                     "1", "--out", pruned)
    assert rc == 0, err
    start, original = load_checkpoint(pruned), load_checkpoint(run)
    model, full = start.build_model(), original.build_model()
    for net, net0 in zip([model.coarse, *model.fine], [full.coarse, *full.fine]):
        assert net.backbone.out_channels < net0.backbone.out_channels
    assert len({net.backbone.out_channels for net in [model.coarse, *model.fine]}) == 1  # pruned alike
    rc, _, err = cli(capsys, "train", "--finetune", pruned, "--steps-per-epoch", "1", "--no-progress", "--workers", "0")
    assert rc == 0, err
    tuned = load_checkpoint(tmp_path / "single-p-ft", prefer="last")
    assert tuned.model_config.pruned == start.model_config.pruned and tuned.variant == "single"
    w0, w1 = start.weights(), tuned.weights()
    assert w0.keys() == w1.keys() and all(w0[k].shape == w1[k].shape for k in w0)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if k.startswith("fine.") and w0[k].is_floating_point())
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if k.startswith("coarse.") and w0[k].is_floating_point())
