"""Joint-label-space metrics on hand-made predictions whose answers are known (paper 5.2.1)."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from erudite_edge.core.labels import LabelSpace
from train.evaluate import evaluate, joint_metrics, metrics_table

LABELS = LabelSpace.build(["a", "b"], [["x", "y", "z"], ["u", "v"]])  # joint 0-2: a, 3-4: b


def test_joint_metrics_counts_other_data_sets_classes_as_wrong():
    joint = np.array([0, 1, 2, 0, 3, 4, 3, 4])
    ds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 3, 2, 1, 3, 0, 2, 4])  # a: right, b's class, right, a's other class; b: right, a, a, right
    m = joint_metrics(pred, joint, ds, LABELS)
    a, b = m["datasets"]["a"], m["datasets"]["b"]
    assert a["top1"] == 0.5 and a["images"] == 4 and a["cross_dataset_rate"] == 0.25
    assert b["top1"] == 0.5 and b["images"] == 4 and b["cross_dataset_rate"] == 0.5
    assert a["per_class"] == {"a/x": 0.5, "a/y": 0.0, "a/z": 1.0}
    assert b["per_class"] == {"b/u": 0.5, "b/v": 0.5}
    assert m["mean_top1"] == 0.5 and m["images"] == 8
    # the mean is over data sets, not images
    m2 = joint_metrics(np.array([0, 0, 0, 3]), np.array([0, 0, 0, 4]), np.array([0, 0, 0, 1]), LABELS)
    assert m2["mean_top1"] == pytest.approx(0.5) and m2["datasets"]["b"]["cross_dataset_rate"] == 0.0
    assert metrics_table(m).row_count == 3


class _Fixed(nn.Module):
    """Predicts the joint class written in the first pixel of each image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), 5).float()


def test_evaluate_scores_each_readable_image_once():
    items = [{"image": torch.full((3, 2, 2), float(p)), "joint": j, "dataset": d, "local": 0, "ok": ok}
             for p, j, d, ok in [(0, 0, 0, True), (3, 1, 0, True), (4, 4, 1, True), (0, 3, 1, False)]]
    from train.data import collate_skip_bad

    loader = DataLoader(items, batch_size=3, collate_fn=collate_skip_bad)
    m = evaluate(_Fixed(), loader, LABELS, torch.device("cpu"))
    assert m["images"] == 3 and m["skipped_images"] == 1
    assert m["datasets"]["a"]["top1"] == 0.5 and m["datasets"]["a"]["cross_dataset_rate"] == 0.5
    assert m["datasets"]["b"]["top1"] == 1.0


def test_metrics_table_cells_are_percentages():
    m = joint_metrics(np.array([0, 3, 2, 1]), np.array([0, 1, 2, 0]), np.array([0, 0, 0, 0]), LABELS)
    rows = list(zip(*[list(c.cells) for c in metrics_table(m).columns]))
    assert rows == [("a", "4", "50.00", "25.00"), ("mean", "4", "50.00", "")]


def test_sharded_evaluation_gathers_every_ranks_predictions(tmp_path):
    """A one-process gloo group runs the gathering code for real (two-process runs: test_ddp_equivalence)."""
    import torch.distributed as dist

    from train.data import collate_skip_bad

    items = [{"image": torch.full((3, 2, 2), float(p)), "joint": j, "dataset": d, "local": 0, "ok": ok}
             for p, j, d, ok in [(0, 0, 0, True), (3, 1, 0, True), (4, 4, 1, True), (0, 3, 1, False)]]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        m = evaluate(_Fixed(), DataLoader(items, batch_size=2, collate_fn=collate_skip_bad), LABELS, torch.device("cpu"),
                     sharded=True)
    finally:
        dist.destroy_process_group()
    assert m["images"] == 3 and m["skipped_images"] == 1 and m["datasets"]["a"]["top1"] == 0.5


class _Strict(_Fixed):
    """_Fixed, and records what prediction hands it: never an empty batch, no autograd, the input as loaded on
    the CPU (channels_last and autocast are the GPU's fast path only)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[0] > 0, "the model was called on an empty batch"
        self.seen.append((x.shape[0], x.is_contiguous(), x.dtype, torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")))
        return super().forward(x)


def _items(spec):
    return [{"image": torch.full((3, 2, 2), float(p)), "joint": j, "dataset": d, "local": 0, "ok": ok} for p, j, d, ok in spec]


def test_predict_skips_empty_batches_and_keeps_going():
    """A batch whose images were all unreadable is skipped (the model never sees it) and counted; the batches
    after it still count. On the CPU the input reaches the model as loaded, without a graph or autocast."""
    from train.data import collate_skip_bad

    spec = [(0, 0, 0, True), (1, 1, 0, True), (0, 0, 0, False), (0, 0, 0, False), (4, 4, 1, True), (3, 3, 1, True)]
    model = _Strict()
    m = evaluate(model, DataLoader(_items(spec), batch_size=2, collate_fn=collate_skip_bad), LABELS, torch.device("cpu"),
                 amp_dtype=torch.bfloat16)
    assert m["images"] == 4 and m["skipped_images"] == 2
    assert m["datasets"]["a"]["images"] == 2 and m["datasets"]["b"]["images"] == 2 and m["mean_top1"] == 1.0
    assert model.seen == [(2, True, torch.float32, False, False)] * 2
    # a batch of one image is a batch
    m = evaluate(_Strict(), DataLoader(_items(spec[:1]), batch_size=1, collate_fn=collate_skip_bad), LABELS, torch.device("cpu"))
    assert m["images"] == 1 and m["datasets"]["a"]["top1"] == 1.0


def test_nothing_readable_gives_empty_metrics():
    from train.data import collate_skip_bad

    spec = [(0, 0, 0, False), (4, 4, 1, False), (3, 3, 1, False)]
    m = evaluate(_Strict(), DataLoader(_items(spec), batch_size=2, collate_fn=collate_skip_bad), LABELS, torch.device("cpu"))
    assert m == {"mean_top1": 0.0, "datasets": {}, "images": 0, "skipped_images": 3}


def test_a_data_set_without_images_is_left_out_not_the_ones_after_it():
    m = joint_metrics(np.array([3, 4, 0]), np.array([3, 4, 4]), np.array([1, 1, 1]), LABELS)
    assert list(m["datasets"]) == ["b"] and m["datasets"]["b"]["images"] == 3
    assert m["datasets"]["b"]["top1"] == pytest.approx(2 / 3) and m["datasets"]["b"]["cross_dataset_rate"] == pytest.approx(1 / 3)
    assert m["datasets"]["b"]["per_class"] == {"b/u": 1.0, "b/v": 0.5} and m["mean_top1"] == pytest.approx(2 / 3)
    one = joint_metrics(np.array([3, 0]), np.array([3, 1]), np.array([1, 0]), LABELS)  # one image each
    assert {k: v["top1"] for k, v in one["datasets"].items()} == {"a": 0.0, "b": 1.0}


def test_metrics_table_title_alignment_and_every_cell():
    m = joint_metrics(np.array([0, 3, 2, 1, 4, 0]), np.array([0, 1, 2, 0, 4, 3]), np.array([0, 0, 0, 0, 1, 1]), LABELS)
    t = metrics_table(m, title="val")
    assert t.title == "val" and metrics_table(m).title == "top-1 in the joint label space"
    assert [c.header for c in t.columns] == ["data set", "images", "top-1 %", "lands in another data set %"]
    assert [c.justify for c in t.columns] == ["left", "right", "right", "right"]
    rows = list(zip(*[list(c.cells) for c in t.columns]))
    assert rows == [("a", "4", "50.00", "25.00"), ("b", "2", "50.00", "50.00"), ("mean", "6", "50.00", "")]


def test_eval_autocast_is_bf16_only_where_native(monkeypatch):
    """The CUDA query is replaced (no GPU here): this checks our selection, not the GPU."""
    from train.evaluate import eval_autocast_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)  # a T4
    assert eval_autocast_dtype() == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100, a Jetson Orin
    assert eval_autocast_dtype() == torch.bfloat16


def test_progress_bar_only_when_asked_and_on_a_terminal(monkeypatch):
    import io
    import sys

    from train.data import collate_skip_bad

    class Terminal(io.StringIO):
        def __init__(self, tty):
            super().__init__()
            self.tty = tty

        def isatty(self):
            return self.tty

    loader = DataLoader(_items([(0, 0, 0, True), (4, 4, 1, True)]), batch_size=1, collate_fn=collate_skip_bad)
    shown = {}
    for name, tty, kw in (("default", True, {}), ("asked", True, {"progress": True}), ("log", False, {"progress": True})):
        term = Terminal(tty)
        monkeypatch.setattr(sys, "stderr", term)
        assert evaluate(_Fixed(), loader, LABELS, torch.device("cpu"), **kw)["images"] == 2
        shown[name] = term.getvalue()
    assert shown["default"] == "" and shown["log"] == ""
    assert "eval" in shown["asked"] and "batch" in shown["asked"] and not shown["asked"].endswith("\n")  # left no line


def test_predictions_are_gathered_only_when_sharded(tmp_path, monkeypatch):
    import torch.distributed as dist

    from train.data import collate_skip_bad

    calls = []
    real = dist.all_gather_object
    monkeypatch.setattr(dist, "all_gather_object", lambda *a, **k: calls.append(1) or real(*a, **k))
    loader = DataLoader(_items([(0, 0, 0, True), (0, 3, 1, False)]), batch_size=2, collate_fn=collate_skip_bad)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        plain = evaluate(_Fixed(), loader, LABELS, torch.device("cpu"))
        assert calls == []  # each rank scored the whole set: nothing to gather
        sharded = evaluate(_Fixed(), loader, LABELS, torch.device("cpu"), sharded=True)
        assert calls == [1]
    finally:
        dist.destroy_process_group()
    assert plain == sharded and sharded["images"] == 1 and sharded["skipped_images"] == 1
