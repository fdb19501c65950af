"""What one analysis pass recorded per test image (torch-free, so `analyze --bundle` runs without the
training extras): the feature the measures use, labels, data set ids, predictions and, for a checkpoint
of a variant with heads, the per-head features and gate weights; saved and loaded as one npz."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from erudite_edge.core.fileio import atomic_path


@dataclass
class FeatureSet:
    """What one pass over the test images recorded (rows: images that could be read, in data set order)."""

    fused: np.ndarray  # (M, D) float32
    joint: np.ndarray  # (M,) joint class index
    dataset: np.ndarray  # (M,) index of the data set in the run's label table
    pred: np.ndarray  # (M,) joint argmax
    heads: np.ndarray | None = None  # (M, N, E)
    gate: np.ndarray | None = None  # (M, N) mean gate weight per head
    gate_top: np.ndarray | None = None  # (M, N) share of channels whose top weight is head n
    skipped: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def rows(self, dataset: int) -> np.ndarray:
        return np.flatnonzero(self.dataset == dataset)

    def save(self, path: str | os.PathLike[str]) -> None:
        arrays = {k: v for k, v in (("fused", self.fused), ("joint", self.joint), ("dataset", self.dataset),
                                    ("pred", self.pred), ("heads", self.heads), ("gate", self.gate),
                                    ("gate_top", self.gate_top)) if v is not None}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                payload: dict[str, Any] = {"meta": np.array(json.dumps({**self.meta, "skipped": self.skipped})), **arrays}
                np.savez_compressed(f, **payload)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "FeatureSet":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            get = lambda k: z[k] if k in z.files else None  # noqa: E731
            return cls(fused=z["fused"], joint=z["joint"], dataset=z["dataset"], pred=z["pred"], heads=get("heads"),
                       gate=get("gate"), gate_top=get("gate_top"), skipped=int(meta.pop("skipped", 0)), meta=meta)
