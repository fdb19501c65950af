"""Top-1 per data set, and their mean, of a deployed classifier on labelled test images (`--data SPEC`).

Images are decoded and preprocessed exactly as deployed (erudite_edge.core.preprocess with the bundle's
spec), the model runs through the same classifier objects `erudite-edge run` uses, and a prediction
is the arg-max over the whole joint label space (a class of another data set is wrong), as the
paper evaluates. The zoo is evaluated with its coarse model's own routing.

This module owns the scoring (predict_sets, top1, agreement); the test images and their reading (EvalSet,
read_eval_set, load_eval_image) are export.eval_set's, shared with the bundle report of train.analysis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import BadImageError
from export.eval_set import EvalSet, load_eval_image


@dataclass
class Predictions:
    """Arg-max over the joint label space for each image of each eval set (-1: image skipped)."""

    per_set: dict[str, np.ndarray] = field(default_factory=dict)


def predict_sets(
    predict: Callable[[np.ndarray], np.ndarray],
    sets: Sequence[EvalSet],
    spec: PreprocessSpec,
    batch: int,
    *,
    warn: Callable[[str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Predictions:
    """Run `predict` (preprocessed batch -> joint scores) over every set; unreadable images are warned
    about, skipped and marked -1."""
    out = Predictions()
    for s in sets:
        preds = np.full(len(s), -1, dtype=np.int64)
        for start in range(0, len(s), batch):
            idx, tensors = [], []
            for i in range(start, min(start + batch, len(s))):
                try:
                    tensors.append(load_eval_image(s.paths[i], spec, s.crop_bottom))
                    idx.append(i)
                except BadImageError as e:
                    if warn:
                        warn(f"{e}; skipped")
            if tensors:
                preds[idx] = np.asarray(predict(np.stack(tensors))).argmax(axis=1)
            if on_batch:
                on_batch(min(batch, len(s) - start))
        out.per_set[s.dataset] = preds
    return out


def top1(preds: Predictions, sets: Sequence[EvalSet]) -> dict[str, Any]:
    """Top-1 per data set over the images that decoded, and the arithmetic mean over data sets."""
    per: dict[str, Any] = {}
    for s in sets:
        p = preds.per_set[s.dataset]
        ok = p >= 0
        n = int(ok.sum())
        per[s.dataset] = {"top1": float((p[ok] == s.joint[ok]).mean()) if n else None, "images": n,
                          "skipped": int((~ok).sum())}
    accs = [v["top1"] for v in per.values() if v["top1"] is not None]
    return {"per_dataset": per, "mean_top1": float(np.mean(accs)) if accs else None}


def agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Fraction of images (decoded by both) where two models' top-1 classes are the same."""
    a, b = np.asarray(a), np.asarray(b)
    ok = (a >= 0) & (b >= 0)
    return float((a[ok] == b[ok]).mean()) if ok.any() else None


def concat(preds: Predictions) -> np.ndarray:
    return np.concatenate(list(preds.per_set.values())) if preds.per_set else np.zeros(0, dtype=np.int64)
