"""Gradients for `prune --importance taylor`: Torch-Pruning's TaylorImportance ranks a channel by
|weight x gradient of the loss|, so before each ranking a few batches of the run's OWN training data (the
data paths in its run.json) go through each network's loss, the gradients summed over the batches:

* an erudite network: cross-entropy of its joint logits against the joint label (the deployed graph's
  output; the auxiliary G_n are not part of the graph that is pruned);
* a Single run's coarse model: cross-entropy against the data set; each fine model: against its own data
  set's labels, on batches of that data set only.

The images are read without augmentation (the evaluation transform) in an order fixed by the seed, so the
same run pruned twice loses the same channels. The network stays in eval mode: BatchNorm's running
statistics are not touched.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from erudite_edge.errors import UsageError
from train.data import check_matches_labels, collate_skip_bad, load_datasets, make_joint_dataset
from train.prune import Gradients, Part

BATCH_SIZE = 16


def taylor_gradients(data: Sequence[str], labels: Any, spec: Any, batches: int, *, batch_size: int = BATCH_SIZE,
                     seed: int = 0, source: str = "the run") -> Gradients:
    """A Gradients callable over `batches` batches of the training splits of `data` (the run's data specs)."""
    if not data:
        raise UsageError(f"--importance taylor needs the run's training data, and {source} names none; use l1 or l2")
    splits = load_datasets(list(data))
    for s in splits:
        check_matches_labels(s, labels)
    joint, _ = make_joint_dataset(splits, labels, spec, False, which="train")

    def fill(part: Part) -> None:
        dataset: Dataset[Any] = joint
        target = "dataset" if part.name == "coarse" else "joint"
        if part.name.startswith("fine."):
            dataset, target = joint.datasets[int(part.name.split(".")[1])], "local"
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_skip_bad, num_workers=0,
                            generator=torch.Generator().manual_seed(seed))
        part.graph.eval()
        part.graph.zero_grad(set_to_none=True)
        used = 0
        with torch.enable_grad():
            for batch in loader:
                if used == batches:
                    break
                if len(batch["image"]) == 0:
                    continue
                F.cross_entropy(part.graph(batch["image"]), batch[target]).backward()
                used += 1
        if used == 0:
            raise UsageError(f"--importance taylor: {source}'s training data has no readable image"
                             f"{' for ' + part.name if part.name else ''}; use l1 or l2")

    return fill
