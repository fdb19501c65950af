"""Joint-label-space metrics on hand-made predictions whose answers are known (paper 5.2.1)."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from erudite_edge.labels import LabelSpace
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
