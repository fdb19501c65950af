"""FP32 against INT8 image by image: the raw samples of the INT8 studies and every figure they derive from them.

One record per quantized model: for each test image the FP32 model's prediction and the INT8 model's, as an
index into the bundle's joint label space (an erudite bundle: its arg-max; a zoo bundle: the picked data set's
offset plus its fine model's class), and where the images are labelled each image's data set and label (the
same index). From a record (`figures`): top-1 agreement with its Wilson 95 % interval; per data set both
accuracies and INT8/FP32 with Newcombe's paired interval; with a goal, its verdict, by the code `export int8
--data` judges with (export.goal_verdict), so a study's verdict is the export's own, re-derivable.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

import numpy as np

from benchmarks.raw import rounded
from erudite_edge.core.bundle import Bundle
from export.goal_verdict import judge, ratio_check, wilson
from export.images import InputSet

DECIMALS = 6  # intervals and ratios as published


def joint_index(bundle: Bundle, logits: dict[str, np.ndarray]) -> list[int]:
    """Each input's prediction as a joint label index (data set offset + class)."""
    from export.accuracy import predict

    ds, local = predict(bundle, logits)
    return [int(v) for v in np.asarray(bundle.labels.offsets)[ds] + local]


def role_logits(bundle: Bundle, precision: str, inputs: InputSet) -> dict[str, np.ndarray]:
    """Every role's logits of `bundle`'s model of `precision` on `inputs`."""
    from export.parity import onnx_logits

    return {role: onnx_logits(bundle.path(bundle.entry(role, precision)), inputs.batch) for role in bundle.roles()}


def record(bundle: Bundle, inputs: InputSet, fp32: dict[str, np.ndarray] | None = None,
           int8: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The per-image record of `bundle`'s fp32 and int8 models on `inputs` (every role run, as the export does;
    `fp32` / `int8`: their logits where already computed)."""
    fp32 = fp32 if fp32 is not None else role_logits(bundle, "fp32", inputs)
    int8 = int8 if int8 is not None else role_logits(bundle, "int8", inputs)
    rec: dict[str, Any] = {"fp32": joint_index(bundle, fp32), "int8": joint_index(bundle, int8), "images": inputs.source}
    if inputs.dataset_ids is not None and inputs.local_ids is not None:
        offsets = np.asarray(bundle.labels.offsets)
        rec["datasets"] = list(bundle.labels.datasets)
        rec["dataset"] = [int(v) for v in inputs.dataset_ids]
        rec["label"] = [int(v) for v in offsets[inputs.dataset_ids] + inputs.local_ids]
    return rec


def margin_record(fp32: np.ndarray, int8: np.ndarray) -> dict[str, list[float]]:
    """Per image, rounded as the raw file keeps them (benchmarks.raw.rounded): the FP32 top-1 minus top-2
    logit, the largest |INT8 - FP32| logit difference, the largest |FP32 logit|."""
    top2 = np.sort(fp32, axis=1)[:, -2:]
    return rounded({"fp32_margin": (top2[:, 1] - top2[:, 0]).tolist(), "max_abs_error": np.abs(int8 - fp32).max(axis=1).tolist(),
                    "fp32_max_abs": np.abs(fp32).max(axis=1).tolist()})


def _r(v: float) -> float:
    return round(float(v), DECIMALS)


def figures(rec: dict[str, Any], goal: Sequence[float | None] | None = None) -> dict[str, Any]:
    """Agreement (Wilson 95 %), per data set fp32 / int8 accuracy and int8/fp32 (Newcombe paired 95 %), and
    with `goal` (min agreement, min accuracy ratio) its verdict: all from the per-image record."""
    fp32, int8 = np.asarray(rec["fp32"]), np.asarray(rec["int8"])
    n, k = len(fp32), int((fp32 == int8).sum())
    out: dict[str, Any] = {"images": n, "agreement": _r(k / n) if n else None,
                           "agreement_ci95": [_r(x) for x in wilson(k, n)]}
    right: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if "label" in rec:
        label, ds = np.asarray(rec["label"]), np.asarray(rec["dataset"])
        per: dict[str, Any] = {}
        for i, name in enumerate(rec["datasets"]):
            rows = ds == i
            if not rows.any():
                continue
            ref, new = fp32[rows] == label[rows], int8[rows] == label[rows]
            right[name] = (ref, new)
            c = ratio_check(name, ref, new, 1.0)
            per[name] = {"images": int(rows.sum()), "fp32": _r(ref.mean()), "int8": _r(new.mean()),
                         "ratio": _r(c.value), "ratio_ci95": [_r(c.lower), _r(c.upper)]}
        out["per_dataset"] = per
    if goal is not None and any(g is not None for g in goal):
        min_agreement, min_ratio = goal
        v = judge({"main": (k, n)}, right, min_agreement, min_ratio if right else None)
        out["goal"] = {"status": v.status, "checks": [{key: (_r(x) if isinstance(x, float) else x)
                                                        for key, x in asdict(c).items()} for c in v.checks]}
    return out


def checked_agreement(rec: dict[str, Any], report: dict[str, Any], where: str) -> None:
    """The record re-measures what the export measured: its agreement must be the export's (same images,
    same models); a mismatch means the study looked at other images and is refused."""
    fp32, int8 = np.asarray(rec["fp32"]), np.asarray(rec["int8"])
    mine = float((fp32 == int8).mean())
    theirs = report["roles"]["main"]["top1_agreement"]
    if len(fp32) != report["count"] or abs(mine - theirs) > 1e-9:
        raise RuntimeError(f"{where}: the per-image record ({mine:.4f} on {len(fp32)} images) is not what the export "
                           f"measured ({theirs:.4f} on {report['count']}): not the same images")

