"""Positive and negative transfer at the class level (paper section 3.3, Table 1, Figure 2):
the change of each class's test accuracy from a reference run (Single: the data set trained alone, or
the zoo) to the analysed run. Positive counts the classes whose accuracy rose or stayed the same,
Negative those whose accuracy fell."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def per_class_accuracy(pred: np.ndarray, joint: np.ndarray, names: list[str]) -> dict[str, float]:
    """Accuracy of each joint class present in `joint` (the share of its images predicted as it)."""
    return {names[int(c)]: float((pred[joint == c] == c).mean()) for c in np.unique(joint)}


def class_changes(run: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """run - reference for every class both score (class names are `<dataset>/<class>` in both)."""
    return {c: run[c] - reference[c] for c in run if c in reference}


def positive_negative(changes: Mapping[str, float], tol: float = 1e-9) -> dict[str, int]:
    """Positive: classes whose accuracy increased or is unchanged (change >= 0, within `tol`);
    Negative: classes whose accuracy decreased."""
    neg = sum(1 for d in changes.values() if d < -tol)
    return {"positive": len(changes) - neg, "negative": neg}


def transfer_by_dataset(run: Mapping[str, float], reference: Mapping[str, float], datasets: list[str]) -> dict[str, Any]:
    """Per data set: its classes' changes (sorted, largest gain first), Positive / Negative, the mean change."""
    changes = class_changes(run, reference)
    out: dict[str, Any] = {}
    for name in datasets:
        mine = {c: d for c, d in changes.items() if c.split("/", 1)[0] == name}
        if not mine:
            continue
        ordered = dict(sorted(mine.items(), key=lambda kv: (-kv[1], kv[0])))
        out[name] = {**positive_negative(mine), "classes": len(mine), "mean_change": float(np.mean(list(mine.values()))),
                     "changes": ordered}
    return out
