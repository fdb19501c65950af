"""`erudite-edge train --help` names every variant of the registry (train/variants.py)."""

from __future__ import annotations

from train.variants import VARIANTS
from trained_model import cli


def test_train_help_lists_every_variant_of_the_registry(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: a name is never cut by wrapping
    rc, out, _ = cli(capsys, "train", "--help")
    assert rc == 0
    line = next(ln for ln in out.splitlines() if "--variant " in ln and "<str>" in ln)
    listed = [w.strip(" │") for w in line.split("<str>", 1)[1].split("(default")[0].split("|")]
    assert listed == list(VARIANTS)
    assert {"ours-pmg", "single-joint"} <= set(listed)
