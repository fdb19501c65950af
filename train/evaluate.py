"""Evaluation in the joint label space (paper 5.2.1): argmax over every class, so a class of another
data set counts as wrong; per-data-set top-1, their arithmetic mean, per-class accuracy, and how often
an image lands in another data set's classes. A zoo model routes each image through its coarse model.

On CUDA, prediction takes the GPU's fast path (channels_last inputs, autocast in the given dtype); the
loaders built for it pin memory. Under DDP each rank scores a shard and `sharded=True` gathers the
predictions, so every rank computes the same metrics over every image once."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from erudite_edge.core.labels import LabelSpace


def eval_autocast_dtype() -> torch.dtype:
    """bf16 where the GPU computes it natively, else fp16 (argmax is insensitive to either)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, progress: bool = False,
            amp_dtype: torch.dtype | None = None) -> dict[str, np.ndarray]:
    """Predicted joint class of every readable image of `loader`. On CUDA: channels_last inputs and, with
    amp_dtype, autocast (the model should be channels_last too: `model.to(memory_format=torch.channels_last)`)."""
    model.eval()
    cuda = device.type == "cuda"
    amp = torch.autocast("cuda", dtype=amp_dtype) if cuda and amp_dtype is not None else contextlib.nullcontext()
    preds, joint, ds = [], [], []
    skipped = 0
    it = loader
    if progress and sys.stderr.isatty():  # a log gets no carriage-return frames
        from tqdm import tqdm

        it = tqdm(loader, desc="eval", unit="batch", leave=False)
    for batch in it:
        skipped += int(batch["skipped"])
        if batch["image"].shape[0] == 0:
            continue
        x = batch["image"].to(device, non_blocking=True)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp:
            preds.append(model(x).argmax(1).cpu())
        joint.append(batch["joint"])
        ds.append(batch["dataset"])
    cat = lambda xs: torch.cat(xs).numpy() if xs else np.zeros(0, dtype=np.int64)  # noqa: E731
    return {"pred": cat(preds), "joint": cat(joint), "dataset": cat(ds), "skipped": np.array(skipped)}


def joint_metrics(pred: np.ndarray, joint: np.ndarray, dataset: np.ndarray, labels: LabelSpace) -> dict[str, Any]:
    owner = np.asarray(labels.dataset_of_class)
    names = labels.joint_names
    per_dataset: dict[str, Any] = {}
    for n, name in enumerate(labels.datasets):
        rows = dataset == n
        total = int(rows.sum())
        if total == 0:
            continue
        p, y = pred[rows], joint[rows]
        per_class = {}
        for c in np.unique(y):
            m = y == c
            per_class[names[int(c)]] = float((p[m] == c).mean())
        per_dataset[name] = {
            "top1": float((p == y).mean()),
            "images": total,
            "cross_dataset_rate": float((owner[p] != n).mean()),
            "per_class": per_class,
        }
    accs = [v["top1"] for v in per_dataset.values()]
    return {
        "mean_top1": float(np.mean(accs)) if accs else 0.0,
        "datasets": per_dataset,
        "images": int(len(pred)),
    }


def _gather(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every rank's predictions (of its shard) concatenated, on every rank."""
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, out)
    return {k: (np.concatenate([p[k] for p in parts]) if k != "skipped" else np.array(sum(int(p[k]) for p in parts)))
            for k in out}


def evaluate(model: nn.Module, loader: DataLoader, labels: LabelSpace, device: torch.device, progress: bool = False,
             amp_dtype: torch.dtype | None = None, sharded: bool = False) -> dict[str, Any]:
    """Joint-label-space metrics of `model` on `loader`. sharded: the loader holds this rank's shard of the
    images; the predictions of all ranks are gathered (a collective: every rank must call it)."""
    out = predict(model, loader, device, progress, amp_dtype)
    if sharded and dist.is_available() and dist.is_initialized():
        out = _gather(out)
    metrics = joint_metrics(out["pred"], out["joint"], out["dataset"], labels)
    metrics["skipped_images"] = int(out["skipped"])
    return metrics


def metrics_table(metrics: dict[str, Any], title: str = "top-1 in the joint label space") -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col in ("data set", "images", "top-1 %", "lands in another data set %"):
        t.add_column(col, justify="right" if col != "data set" else "left")
    for name, d in metrics["datasets"].items():
        t.add_row(name, str(d["images"]), f"{100 * d['top1']:.2f}", f"{100 * d['cross_dataset_rate']:.2f}")
    t.add_row("mean", str(metrics["images"]), f"{100 * metrics['mean_top1']:.2f}", "", style="bold")
    return t
