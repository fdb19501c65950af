"""FP16 ONNX models (model.fp16.onnx, or <role>.fp16.onnx for a zoo) from a bundle's FP32 models.

onnxconverter_common.float16.convert_float_to_float16 with keep_io_types=True: weights and
computation in float16, the input "images" and output "logits" keep their types (float32, or uint8
bytes whose normalisation nodes stay float32), so every runner feeds it exactly as the FP32 model. ONNX Runtime's CPU provider runs it (it inserts casts around the ops
it has no float16 kernel for), which is how agreement is checked on a machine without a GPU.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import onnx

from erudite_edge.core.bundle import Bundle
from export.derive import Fp32Source, derive
from export.graph_input import preprocess_nodes
from export.images import InputSet, Log, check_inputs, labelled_inputs

CONVERTER = "onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)"


def to_fp16(model: onnx.ModelProto, log: Log | None = None) -> onnx.ModelProto:
    """Convert in place. Weights beyond float16's range are clamped by the converter (magnitudes under
    1e-7 to 1e-7, over 1e4 to 1e4); it warns once per value, which is summarised here in one line."""
    from onnxconverter_common import float16

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # a uint8 model's Cast/Transpose/Mul/Add stay float32 (the converter would retype the Cast's
        # output but not its `to`); one Cast to float16 follows them
        converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=preprocess_nodes(model) or None)
    clamped = [w for w in caught if "truncated" in str(w.message)]
    for w in caught:
        if w not in clamped:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if clamped and log:
        log(f"fp16: {len(clamped)} weights outside float16's range were clamped (to 1e-7 or 1e4 in magnitude)")
    return converted


def agreement_inputs(
    bundle: Bundle,
    *,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
    data: Sequence[str] | None,
    count: int,
    log: Log | None,
) -> InputSet:
    """Labelled test images when data sets are given (agreement and accuracy), else the user's images,
    else scikit-image's sample photos."""
    if data:
        return labelled_inputs(bundle.preprocess, bundle.labels, data, per_dataset=count, log_fn=log)
    return check_inputs(bundle.preprocess, images=images, count=count, log_fn=log)


def make_fp16(
    bundle: Bundle,
    *,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    data: Sequence[str] | None = None,
    count: int = 64,
    min_agreement: float | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Add the FP16 model of every role to the (loaded, verified: `Bundle.load(path, verify=True)`) bundle;
    returns the agreement report against FP32."""
    inputs = agreement_inputs(bundle, images=images, data=data, count=count, log=log)

    def build(src: Fp32Source, out: Path) -> None:
        model = onnx.ModelProto()
        model.CopyFrom(src.model)  # the converter works in place
        onnx.save_model(to_fp16(model, log), os.fspath(out))

    return derive(
        bundle, "fp16", build, inputs=inputs, info={"converter": CONVERTER},
        min_agreement=min_agreement, log=log,
    )
