"""Evaluate a saved run on data sets given on the command line (`erudite-edge eval`)."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader

from erudite_edge.errors import UsageError
from train.checkpoint import load_checkpoint
from train.data import check_matches_labels, collate_skip_bad, load_datasets, make_joint_dataset
from train.evaluate import eval_autocast_dtype, evaluate, metrics_table
from train.loop import DistInfo, resolve_device


def evaluate_run(
    checkpoint: str | os.PathLike[str],
    data: Sequence[str],
    *,
    split: str = "test",
    batch_size: int = 64,
    workers: int = 4,
    device: str = "auto",
) -> tuple[dict[str, Any], Any]:
    if split not in ("train", "test"):
        raise UsageError(f"--split {split}: train or test")
    ckpt = load_checkpoint(checkpoint)
    labels = ckpt.labels
    given = load_datasets(list(data))
    by_name = {s.name: s for s in given}
    # every data set of the label space takes part in the joint argmax; only the given ones are scored
    for s in given:
        check_matches_labels(s, labels)
    splits = [by_name.get(n) for n in labels.datasets]
    samples = [getattr(s, split) if s is not None else [] for s in splits]
    placeholder = next(s for s in splits if s is not None)
    filled = [s if s is not None else type(placeholder)(name=n, format="none", root=placeholder.root,
                                                       classes=list(labels.classes[i]), train=[], test=[])
              for i, (n, s) in enumerate(zip(labels.datasets, splits))]
    dataset, _ = make_joint_dataset(filled, labels, ckpt.preprocess, False, samples=samples)
    dev = resolve_device(device, DistInfo())
    cuda = dev.type == "cuda"
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_skip_bad, num_workers=workers,
                        pin_memory=cuda)
    model = ckpt.build_model().to(dev)
    if cuda:  # the GPU's fast path: channels_last and autocast
        model.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        metrics = evaluate(model, loader, labels, dev, progress=True, amp_dtype=eval_autocast_dtype() if cuda else None)
    metrics["checkpoint"] = str(ckpt.path)
    metrics["variant"] = ckpt.variant
    metrics["split"] = split
    title = f"{ckpt.variant} ({'routed through the coarse model' if ckpt.is_zoo else 'one pass'}): top-1 in the joint label space"
    return metrics, metrics_table(metrics, title)
