"""Single's fair schedule (train/single_schedule.py): each fine model sees at least as many images of its data set as
the joint run, the coarse model as many in total; the schedule in the run's config; --parts-epochs overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from erudite_edge.cli.app import main
from tiny_data import make_mixture
from train.config import TrainConfig
from train.data import load_datasets
from train.single import coarse_splits
from train.single_schedule import fair_schedule, steps_per_epoch, train_sizes
from trained_model import one_error_line

COMMON = ["--backbone", "tiny", "--no-pretrained", "--batch-per-dataset", "2", "--input-size", "16", "--hidden", "8",
          "--workers", "0", "--no-progress", "--val-fraction", "0", "--lr", "0.05", "--backbone-lr", "0.05"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[str]:
    # a: 3 classes x 4 = 12 training images, b: 2 x 4 = 8: the joint run's epoch is 6 balanced steps (a fills them),
    # which cycles b's 8 images to 12; b's run alone has 4 steps (8 images) per epoch
    return make_mixture(tmp_path_factory.mktemp("mix"), per_class=(4, 1), size=16)


def epochs_trained(run: Path) -> int:
    return len((run / "history.jsonl").read_text().splitlines())


@pytest.mark.parametrize("epochs, val_fraction, cap", [(1, 0.0, None), (3, 0.0, None), (2, 0.25, None), (2, 0.0, 3), (5, 0.2, 2)])
def test_every_part_sees_at_least_what_the_joint_run_sees(data, epochs, val_fraction, cap):
    splits = load_datasets(data)
    cfg = TrainConfig(data=data, variant="single", epochs=epochs, batch_per_dataset=2, val_fraction=val_fraction,
                      steps_per_epoch=cap)
    joint = epochs * steps_per_epoch(train_sizes(splits, cfg), cfg) * 2  # images of each data set in the joint run
    s = fair_schedule(cfg, splits, coarse_splits(splits))
    assert list(s) == ["coarse", "a", "b"]
    for name in ("a", "b"):
        assert s[name].joint_images == joint and s[name].images >= joint, name
        assert s[name].epochs == max(epochs, -(-joint // (s[name].steps_per_epoch * 2)))  # the fewest epochs that do it
    assert s["coarse"].joint_images == 2 * joint and s["coarse"].images >= 2 * joint and s["coarse"].epochs >= epochs
    if cap is None and val_fraction == 0:
        assert (s["a"].epochs, s["b"].epochs, s["coarse"].epochs) == (epochs, -(-3 * epochs // 2), epochs)


@pytest.mark.slow  # trains a model
def test_single_trains_the_fair_schedule_and_writes_it_in_the_config(tmp_path, data):
    run = tmp_path / "single"
    args = ["train", "--variant", "single", "--epochs", "1", "--out", str(run), *COMMON]
    for d in data:
        args += ["--data", d]
    assert main(args) == 0
    # b alone: 8 images per epoch, the joint run 12 of b in its one epoch: 2 epochs; a and coarse: 1, as the joint run
    assert {p: epochs_trained(run / "parts" / p) for p in ("coarse", "fine.a", "fine.b")} == {"coarse": 1, "fine.a": 1, "fine.b": 2}
    assert yaml.safe_load((run / "config.yaml").read_text())["parts_epochs"] == {"coarse": 1, "a": 1, "b": 2}
    record = json.loads((run / "run.json").read_text())
    assert record["schedule"]["b"] == {"epochs": 2, "steps_per_epoch": 4, "images": 16, "joint_images": 12, "rule": "fair"}
    # a finished run resumes with its own schedule: nothing more to train
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert epochs_trained(run / "parts" / "fine.b") == 2


@pytest.mark.slow  # trains a model
def test_parts_epochs_overrides_the_parts_it_names(tmp_path, data):
    run = tmp_path / "single"
    args = ["train", "--variant", "single", "--epochs", "1", "--parts-epochs", "b=1,coarse=2", "--out", str(run), *COMMON]
    for d in data:
        args += ["--data", d]
    assert main(args) == 0
    assert {p: epochs_trained(run / "parts" / p) for p in ("coarse", "fine.a", "fine.b")} == {"coarse": 2, "fine.a": 1, "fine.b": 1}
    schedule = json.loads((run / "run.json").read_text())["schedule"]
    assert {k: v["rule"] for k, v in schedule.items()} == {"coarse": "given", "a": "fair", "b": "given"}


@pytest.mark.parametrize("flags, message", [
    (["--variant", "single", "--parts-epochs", "faces=3"], "--parts-epochs faces: no such part; the parts are coarse, a, b"),
    (["--variant", "single", "--parts-epochs", "b:3"], "--parts-epochs b:3: expected PART=EPOCHS[,PART=EPOCHS...]"),
    (["--variant", "single", "--parts-epochs", "b=0"], "--parts-epochs: every part's epochs must be 1 or more"),
    (["--variant", "ours", "--parts-epochs", "b=3"], "--parts-epochs is for --variant single"),
])
def test_bad_parts_epochs_is_one_line_and_exit_2(tmp_path, data, capsys, flags, message):
    args = ["train", *flags, "--epochs", "1", "--out", str(tmp_path / "r"), *COMMON]
    for d in data:
        args += ["--data", d]
    assert main(args) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()  # nothing written
