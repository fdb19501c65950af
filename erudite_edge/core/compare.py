"""One comparator for logits: a candidate model's (N, K) logits against a reference's -> Agreement (top-1
agreement, max and mean |difference|, near ties, and pass/fail under a relative tolerance when one is asked).
The check set (core/check_set.py, `erudite-edge check`, engine builds) and export parity (export/parity.py,
export/derive.py) both judge through it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from erudite_edge.errors import EruditeError


class ParityError(EruditeError):
    """The exported model does not compute what the trained model computes."""


@dataclass
class Agreement:
    reference: str  # "pytorch" or "onnx fp32"
    candidate: str  # "onnx fp32", "onnx fp16", "onnx int8"
    count: int
    source: str
    max_abs_diff: float
    mean_abs_diff: float
    logit_scale: float
    top1_agreement: float
    disagreements: int
    near_ties: int  # disagreements on inputs whose reference top-2 margin is within 2 * tolerance
    tolerance: float | None = None  # absolute max-diff tolerance, when one applies
    passed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"{self.candidate} vs {self.reference} on {self.count} inputs ({self.source}): "
            f"max |diff| {self.max_abs_diff:.3g} (logit scale {self.logit_scale:.3g}"
        )
        if self.tolerance is not None:
            text += f", tolerance {self.tolerance:.3g}"
        text += f"), top-1 agreement {100 * self.top1_agreement:.1f}%"
        if self.near_ties:
            text += f" ({self.near_ties} near ties)"
        if self.passed is not None:
            text += " - ok" if self.passed else " - FAILED"
        return text


def compare_logits(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    reference_name: str,
    candidate_name: str,
    source: str,
    rel_tolerance: float | None = None,
) -> Agreement:
    """Compare two (N, K) logit arrays. With `rel_tolerance`, decide pass/fail by the rule above."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim != 2:
        raise ParityError(f"{candidate_name} gives logits of shape {cand.shape}, {reference_name} {ref.shape}")
    if not np.isfinite(cand).all():
        bad = int((~np.isfinite(cand)).any(axis=1).sum())
        raise ParityError(f"{candidate_name} gives non-finite logits on {bad} of {len(cand)} inputs ({source})")
    diff = np.abs(ref - cand)
    scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
    top_ref, top_cand = ref.argmax(1), cand.argmax(1)
    differ = top_ref != top_cand
    tol = rel_tolerance * scale if rel_tolerance is not None else None
    near = 0
    if differ.any():
        rows = np.nonzero(differ)[0]
        margins = ref[rows, top_ref[rows]] - ref[rows, top_cand[rows]]
        near = int((margins <= 2 * (tol if tol is not None else 0.0)).sum())
    max_diff = float(diff.max(initial=0.0))
    passed = None if tol is None else bool(max_diff <= tol and int(differ.sum()) == near)
    return Agreement(
        reference=reference_name,
        candidate=candidate_name,
        count=int(ref.shape[0]),
        source=source,
        max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        logit_scale=scale,
        top1_agreement=float(1.0 - differ.mean()) if len(differ) else 1.0,
        disagreements=int(differ.sum()),
        near_ties=near,
        tolerance=tol,
        passed=passed,
    )


