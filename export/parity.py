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
from typing import Any

import numpy as np

from erudite_edge.core.compare import Agreement, ParityError, compare_logits

FP32_REL_TOLERANCE = 1e-3
CHUNK = 16








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
