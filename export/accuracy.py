"""Accuracy per data set from a bundle's logits: what a reduced precision costs on labelled images.

An erudite bundle predicts the joint arg-max; a zoo bundle runs its pipeline (the coarse model picks
the data set, that data set's fine model picks the class). A prediction is right when both the data
set and the class are right.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from erudite_edge.core.bundle import Bundle, fine_role


def predict(bundle: Bundle, logits: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(data set index, local class) per input, from each role's (N, K) logits."""
    labels = bundle.labels
    if bundle.kind == "zoo":
        picked = logits["coarse"].argmax(1)
        local = np.zeros_like(picked)
        for i, ds in enumerate(labels.datasets):
            rows = picked == i
            if rows.any():
                local[rows] = logits[fine_role(ds)][rows].argmax(1)
        return picked, local
    joint = logits["main"].argmax(1)
    owner = np.asarray(labels.dataset_of_class)
    offsets = np.asarray(labels.offsets)
    ds = owner[joint]
    return ds, joint - offsets[ds]


def right_by_dataset(
    bundle: Bundle, logits: Mapping[str, np.ndarray], dataset_ids: np.ndarray, local_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """Per data set, whether each of its images is predicted right (data set and class), in input order."""
    ds_pred, local_pred = predict(bundle, logits)
    right = (ds_pred == dataset_ids) & (local_pred == local_ids)
    return {name: right[dataset_ids == i] for i, name in enumerate(bundle.labels.datasets) if (dataset_ids == i).any()}


def accuracy_by_dataset(
    bundle: Bundle, logits: Mapping[str, np.ndarray], dataset_ids: np.ndarray, local_ids: np.ndarray
) -> dict[str, dict[str, Any]]:
    ds_pred, local_pred = predict(bundle, logits)
    right = (ds_pred == dataset_ids) & (local_pred == local_ids)
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(bundle.labels.datasets):
        rows = dataset_ids == i
        if rows.any():
            out[name] = {"accuracy": float(right[rows].mean()), "count": int(rows.sum())}
    return out


def accuracy_change(
    bundle: Bundle,
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    dataset_ids: np.ndarray,
    local_ids: np.ndarray,
    *,
    reference_name: str = "fp32",
    candidate_name: str,
) -> dict[str, dict[str, Any]]:
    """Per data set: both accuracies, their difference (candidate - reference) and the image count."""
    ref = accuracy_by_dataset(bundle, reference, dataset_ids, local_ids)
    cand = accuracy_by_dataset(bundle, candidate, dataset_ids, local_ids)
    return {
        name: {
            reference_name: ref[name]["accuracy"],
            candidate_name: cand[name]["accuracy"],
            "change": cand[name]["accuracy"] - ref[name]["accuracy"],
            "count": ref[name]["count"],
        }
        for name in ref
    }
