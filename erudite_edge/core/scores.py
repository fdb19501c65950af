"""From logits to ranked classes in the joint label space: softmax and log-softmax, the ClassScore of one class (rank, index,
label, data set, probability) and top-k per row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from erudite_edge.core.labels import LabelSpace


# ------------------------------------------------------------------------------------------------
# Post-processing
# ------------------------------------------------------------------------------------------------
def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float32."""
    x = np.asarray(logits, dtype=np.float32)
    x = x - x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable log-softmax in float32: finite for finite logits, where the softmax of a class far
    below the best underflows to 0 (a gap of about 104 in float32) and cannot be renormalised later.
    A row whose entries are all -inf stays all -inf."""
    x = np.asarray(logits, dtype=np.float32)
    top = x.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, np.float32(0.0))
    shifted = x - top
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf for an all -inf row
        lse = np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        out = np.where(np.isfinite(lse), shifted - lse, np.float32(-np.inf))
    return out.astype(np.float32, copy=False)


@dataclass(frozen=True)
class ClassScore:
    rank: int
    class_id: int  # index in the joint label space
    label: str  # the class's own name inside its data set
    dataset: str  # the data set (coarse label) the class belongs to
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "label": self.label, "dataset": self.dataset,
                "class_id": self.class_id, "score": round(self.score, 6)}


def top_k(probs: np.ndarray, labels: LabelSpace, k: int) -> list[list[ClassScore]]:
    """Top-k predictions for each row of a (B, K) probability array over the joint label space."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 2 or probs.shape[1] != labels.num_classes:
        raise ValueError(f"expected scores of shape (B, {labels.num_classes}), got {probs.shape}")
    k = max(1, min(int(k), probs.shape[1]))
    if k < probs.shape[1]:
        part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(probs.shape[1]), probs.shape)
    owner = labels.dataset_of_class
    offsets = labels.offsets
    out: list[list[ClassScore]] = []
    for row, cand in zip(probs, part):
        order = cand[np.argsort(-row[cand], kind="stable")]
        preds = []
        for rank, j in enumerate(order, start=1):
            d = owner[int(j)]
            preds.append(ClassScore(rank, int(j), labels.classes[d][int(j) - offsets[d]], labels.datasets[d],
                                    float(row[j])))
        out.append(preds)
    return out


