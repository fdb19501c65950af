"""Reduced-precision models made from a bundle's FP32 models, for every role or for none.

Each new model is written under a temporary name, stamped with the bundle's facts, checked, and
compared with its FP32 model on the same images; only when every role has succeeded are the files
renamed into place and recorded in bundle.json (Bundle.add_model, the agreement under `parity`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from erudite_edge.core.bundle import Bundle, default_filename
from erudite_edge.core.compare import Agreement, ParityError, compare_logits
from erudite_edge.core.fileio import atomic_path
from erudite_edge.errors import BundleError
from export.accuracy import accuracy_change, right_by_dataset
from export.goal_verdict import Verdict, judge
from export.images import InputSet, Log
from export.metadata import check_output_size, model_props, set_metadata
from export.onnx_export import portable_ir_version
from export.parity import onnx_logits


@dataclass
class Fp32Source:
    role: str
    path: Path
    model: onnx.ModelProto


def load_onnx(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(os.fspath(path))
    except Exception as e:  # protobuf DecodeError, OSError
        raise BundleError(f"{path}: not a readable ONNX model ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from e


def fp32_sources(bundle: Bundle) -> list[Fp32Source]:
    """The FP32 ONNX model of every role, each checked against the label table."""
    out = []
    for role in bundle.roles():
        path = bundle.path(bundle.entry(role, "fp32", "onnx"))
        model = load_onnx(path)
        check_output_size(bundle, role, model, path)
        out.append(Fp32Source(role, path, model))
    return out


def prune_opset_imports(model: onnx.ModelProto) -> None:
    """Drop operator-set imports no node uses (onnxruntime's pre-processing declares a dozen)."""
    used = {n.domain or "" for n in model.graph.node} | {""}
    for f in model.functions:
        used |= {n.domain or "" for n in f.node} | {f.domain or ""}
    keep = [(o.domain, o.version) for o in model.opset_import if (o.domain or "") in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    for domain, version in keep:
        model.opset_import.add(domain=domain, version=version)


def _judge(bundle: Bundle, goal: tuple[float | None, float | None], agreements: dict[str, Agreement],
           ref_logits: dict[str, np.ndarray], new_logits: dict[str, np.ndarray], inputs: InputSet) -> Verdict:
    counts = {r: (a.count - a.disagreements, a.count) for r, a in agreements.items()}
    right: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if goal[1] is not None and inputs.dataset_ids is not None and inputs.local_ids is not None:
        ref = right_by_dataset(bundle, ref_logits, inputs.dataset_ids, inputs.local_ids)
        new = right_by_dataset(bundle, new_logits, inputs.dataset_ids, inputs.local_ids)
        right = {name: (ref[name], new[name]) for name in ref}
    return judge(counts, right, goal[0], goal[1] if right else None)


Build = Callable[[Fp32Source, Path], None]  # write the reduced model of one role to the given path


def derive(
    bundle: Bundle,
    precision: str,
    build: Build,
    *,
    inputs: InputSet,
    info: dict[str, Any],
    min_agreement: float | None = None,
    log: Log | None = None,
    min_accuracy_ratio: float | None = None,
    goal: tuple[float | None, float | None] | None = None,
) -> dict[str, Any]:
    """Make the `precision` model of every role of the loaded `bundle` (its callers load it with
    `Bundle.load(path, verify=True)`) with `build`, compare each with FP32 on `inputs`, and commit them
    all; returns the report (also stored in bundle.json, and in `bundle.meta`). Below `min_agreement`, or
    with labelled inputs below `min_accuracy_ratio` of FP32's accuracy on a data set, nothing is written.

    `goal` (min agreement, min accuracy ratio), instead of those two: judged by 95 % intervals
    (export.goal_verdict): failed (the interval wholly below), nothing is written; undecided (too few images),
    the models are written with a warning; the verdict goes into the report and bundle.json (`goal`)."""
    log = log or (lambda _: None)
    sources = fp32_sources(bundle)
    agreements: dict[str, Agreement] = {}
    ref_logits: dict[str, np.ndarray] = {}
    new_logits: dict[str, np.ndarray] = {}
    names = {s.role: default_filename(s.role, precision) for s in sources}
    with contextlib.ExitStack() as stack:
        for src in sources:
            tmp = stack.enter_context(atomic_path(bundle.root / names[src.role]))
            log(f"{precision} {src.role}: {src.path.name} -> {names[src.role]}")
            build(src, tmp)
            model = load_onnx(tmp)
            check_output_size(bundle, src.role, model, names[src.role])
            set_metadata(model, model_props(bundle, src.role, precision))
            prune_opset_imports(model)
            portable_ir_version(model)
            try:
                onnx.checker.check_model(model)
            except onnx.checker.ValidationError as e:
                raise BundleError(f"the {precision} model of {src.role} is invalid: {str(e).strip().splitlines()[0]}") from e
            onnx.save_model(model, os.fspath(tmp))
            ref_logits[src.role] = onnx_logits(src.path, inputs.batch)
            new_logits[src.role] = onnx_logits(tmp, inputs.batch)
            agreements[src.role] = compare_logits(
                ref_logits[src.role], new_logits[src.role],
                reference_name="onnx fp32", candidate_name=f"onnx {precision}", source=inputs.source,
            )
            log(f"agreement {src.role}: {agreements[src.role].summary()}")
        if min_agreement is not None:
            low = {r: a.top1_agreement for r, a in agreements.items() if a.top1_agreement < min_agreement}
            if low:
                worst = min(low, key=low.__getitem__)
                raise ParityError(
                    f"{precision} top-1 agreement with fp32 is {100 * low[worst]:.1f}% for role {worst} "
                    f"(minimum {100 * min_agreement:.1f}%); nothing was written"
                )
        report: dict[str, Any] = {
            "precision": precision,
            "images": inputs.source,
            "count": int(len(inputs.batch)),
            **info,
            "roles": {r: a.to_dict() for r, a in agreements.items()},
        }
        if inputs.dataset_ids is not None and inputs.local_ids is not None:
            report["accuracy"] = accuracy_change(
                bundle, ref_logits, new_logits, inputs.dataset_ids, inputs.local_ids, candidate_name=precision
            )
            for name, row in report["accuracy"].items():
                log(
                    f"accuracy {name}: fp32 {100 * row['fp32']:.2f}% -> {precision} {100 * row[precision]:.2f}% "
                    f"({100 * row['change']:+.2f} points, {row['count']} test images)"
                )
            if min_accuracy_ratio is not None and "accuracy" in report:
                ratios = {n: (r[precision] / r["fp32"] if r["fp32"] > 0 else 1.0) for n, r in report["accuracy"].items()}
                worst = min(ratios, key=ratios.__getitem__)
                if ratios[worst] < min_accuracy_ratio:
                    row = report["accuracy"][worst]
                    raise ParityError(
                        f"{precision} accuracy on {worst} is {ratios[worst]:.3f} of fp32's ({100 * row[precision]:.1f}% vs "
                        f"{100 * row['fp32']:.1f}%, minimum {min_accuracy_ratio:.3f}); nothing was written"
                    )
        if goal is not None:
            verdict = _judge(bundle, goal, agreements, ref_logits, new_logits, inputs)
            for c in verdict.checks:
                log(("warning: " if c.verdict == "undecided" else "") + f"goal {c.verdict}: {c.line()}")
            if verdict.status == "failed":
                worst = next(c for c in verdict.checks if c.verdict == "failed")
                raise ParityError(f"{precision} misses the goal: {worst.line()}, wholly below it; nothing was written")
            report["goal"] = verdict.to_dict()
            info = {**info, "goal": verdict.to_dict()}
    for src in sources:
        bundle.add_model(src.role, precision, names[src.role], info=info)
        bundle.meta.setdefault("parity", {}).setdefault(src.role, {})[precision] = agreements[src.role].to_dict()
    if "accuracy" in report:
        bundle.meta.setdefault("accuracy", {})[precision] = report["accuracy"]
    bundle.save()
    return report
