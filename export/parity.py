"""Does the exported model compute what the trained one does? Logit differences and top-1 agreement.

FP32 export tolerance (documented in `erudite-edge export onnx --help`): with S the logit scale,
max(1, max |PyTorch logit|) over the checked inputs, the export passes when

  * max |ONNX Runtime logit - PyTorch logit| <= FP32_REL_TOLERANCE * S  (1e-3 * S), and
  * top-1 agreement is 100%, except for near ties: an input whose two leading PyTorch logits are
    within 2 * 1e-3 * S of each other may flip without the export being wrong.

Reduced precisions (FP16, INT8) are compared with the FP32 ONNX model on real images and reported
(top-1 agreement, max and mean |difference|); they fail only below a minimum agreement the caller
asks for.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from erudite_edge.errors import EruditeError

FP32_REL_TOLERANCE = 1e-3
CHUNK = 16


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


def onnx_logits(path: str | os.PathLike[str], batch: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """Run an ONNX model with ONNX Runtime on the CPU, `chunk` inputs at a time (the same code path
    the deployed ONNX Runtime backend takes)."""
    from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"])
    try:
        return np.concatenate([runner.infer(batch[i : i + chunk]) for i in range(0, len(batch), chunk)], axis=0)
    finally:
        runner.close()


def torch_logits(module: Any, batch: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    import torch

    module.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(batch), chunk):
            outs.append(module(torch.from_numpy(np.ascontiguousarray(batch[i : i + chunk]))).float().cpu().numpy())
    return np.concatenate(outs, axis=0)


def check_fp32_parity(
    module: Any,
    onnx_path: str | os.PathLike[str],
    batch: np.ndarray,
    source: str,
    *,
    rel_tolerance: float = FP32_REL_TOLERANCE,
    label: str = "",
    torch_batch: np.ndarray | None = None,
) -> Agreement:
    """PyTorch against ONNX Runtime on the same inputs; ParityError (one line) when beyond tolerance.
    `torch_batch`: what the PyTorch module takes for the same images when the ONNX model's input differs
    (a uint8 model gets `batch`, the bytes; PyTorch their float32 NCHW preprocessing).

    Also runs the first input alone, so a batch axis that is not really dynamic fails here rather
    than on the device."""
    ref = torch_logits(module, batch if torch_batch is None else torch_batch)
    got = onnx_logits(onnx_path, batch)
    single = onnx_logits(onnx_path, batch[:1])
    report = compare_logits(
        ref, got, reference_name="pytorch", candidate_name="onnx fp32", source=source, rel_tolerance=rel_tolerance
    )
    where = f" ({label})" if label else ""
    if not report.passed:
        raise ParityError(f"ONNX export does not match PyTorch{where}: {report.summary()}; nothing was written")
    alone = float(np.abs(single[0] - got[0]).max())
    if alone > (report.tolerance or 0.0):
        raise ParityError(
            f"ONNX export{where} gives different logits for an input run alone and in a batch "
            f"(max |diff| {alone:.3g}); nothing was written"
        )
    return report
