"""INT8 ONNX models with explicit quantization (Q/DQ), calibrated on real images, in one of two layouts.

`--target tensorrt` (the default): onnxruntime.quantization.quantize_static in the form TensorRT's
explicit quantization takes: QuantFormat.QDQ, signed int8 activations and weights, symmetric (zero
point 0: ActivationSymmetric, WeightSymmetric), weights per output channel. Q/DQ go on the inputs of
the layers that carry the compute (Conv, Gemm, MatMul), where TensorRT fuses them into int8 kernels,
and not on their outputs (TensorRT's placement advice; the logits stay float); biases stay float
(QuantizeBias=False: TensorRT adds float biases in its int8 kernels); the attention sigmoid, gate
softmax and reductions stay in float.

`--target onnxruntime`: the layout ONNX Runtime's CPU execution provider turns into integer kernels.
Its QDQ fusions need a Q on the output of every Conv/Gemm (and Add, MaxPool...), so that a whole
DQ -> Conv -> Q group becomes one QLinearConv (DQ -> Gemm -> Q one QGemm): the TensorRT layout leaves
it ~130 DequantizeLinear around float Convs, slower than FP32. Here: QDQ on the inputs and outputs
of ORT_QUANTIZED_OPS, activations uint8 asymmetric (per tensor), weights int8 symmetric per channel,
biases int32 ("U8S8", what ORT's x86 integer GEMMs take; reduce_range off: 8-bit weights, right for
CPUs with VNNI or ARM dot-product instructions). Measured on an AVX-512 VNNI EPYC with onnxruntime
1.32 (ResNet-50 erudite at 224 px, `python -m benchmarks.int8_layouts`): this layout runs in about 0.3x
FP32's latency at batch 1 and 8, the TensorRT layout in about 1.4x (benchmarks/README.md). Per-tensor
weights and QuantFormat.QOperator measured the same speed (per-tensor agreed less with FP32); QDQ is
ONNX Runtime's recommended format. The gate softmax and reductions stay float.

onnxruntime's quant_pre_process (symbolic shape inference and graph optimisation) runs first, as
ONNX Runtime recommends. Calibration (MinMax, Entropy or Percentile) runs through onnxruntime's own
calibrator; its ranges go to quantize_static as a calibration cache (see `calibrate` for why).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from erudite_edge.bundle import Bundle
from erudite_edge.errors import EruditeError, UsageError

from .calibration import ImageCalibrationReader, calibration_sets
from .derive import Fp32Source, derive
from .fp16 import agreement_inputs
from .images import ImageRef, Log

METHODS = ("minmax", "entropy", "percentile")
TARGETS = ("tensorrt", "onnxruntime")
DEFAULT_TARGET = "tensorrt"
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]  # tensorrt: Q/DQ on these layers' inputs only
# onnxruntime: the ops whose Q/DQ groups ORT's CPU provider fuses into integer kernels (QLinearConv,
# QGemm, QLinearMatMul, QLinearAdd, QLinearMul, QLinearSigmoid, QLinearAveragePool, QLinearConcat), or
# that only move or clip data (Relu, Clip, MaxPool, Reshape...: they run on the uint8 tensor, or fold
# into the preceding Q). Softmax is left out: the gate's weights stay float.
ORT_QUANTIZED_OPS = [
    "Conv", "Gemm", "MatMul", "Add", "Mul", "Sigmoid", "Relu", "Clip", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Concat", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
]
# Calibrator settings per method. Histogram methods use 2048 bins; entropy searches thresholds from
# 128 quantized levels upward (the KL-divergence calibration TensorRT introduced).
CALIBRATOR_OPTIONS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"num_bins": 2048, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.999},
}


class QuantizationError(EruditeError):
    """onnxruntime could not quantize the model."""


def calibration_method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    try:
        return table[name.lower()]
    except KeyError:
        raise UsageError(f"--method {name!r} unknown; one of {', '.join(METHODS)}") from None


def check_target(target: str) -> str:
    t = str(target).lower()
    if t not in TARGETS:
        raise UsageError(f"--target {target!r} unknown; one of {', '.join(TARGETS)}")
    return t


def quantized_ops(target: str) -> list[str]:
    """The op types whose tensors are calibrated and quantized for `target`."""
    return list(ORT_QUANTIZED_OPS if check_target(target) == "onnxruntime" else QUANTIZED_OPS)


def quantize_options(method: str, target: str = DEFAULT_TARGET) -> dict[str, Any]:
    """The quantize_static keyword arguments for `target` (described in bundle.json by `layout`)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    if check_target(target) == "onnxruntime":
        return {
            "quant_format": QuantFormat.QDQ,
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            "per_channel": True,
            "reduce_range": False,
            "op_types_to_quantize": quantized_ops(target),
            "calibrate_method": calibration_method(method),
            "extra_options": {
                "ActivationSymmetric": False,  # uint8 with a zero point: a ReLU output uses all 256 levels
                "WeightSymmetric": True,
                "QuantizeBias": True,  # int32 biases: part of the QLinearConv / QGemm fusion
            },
        }
    return {
        "quant_format": QuantFormat.QDQ,
        "activation_type": QuantType.QInt8,
        "weight_type": QuantType.QInt8,
        "per_channel": True,
        "op_types_to_quantize": list(QUANTIZED_OPS),
        "calibrate_method": calibration_method(method),
        "extra_options": {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            # TensorRT: quantize the inputs of weighted layers, not their outputs (the logits stay float)
            "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
        },
    }


def _progress() -> Any:
    """A progress bar on stderr (transient: it disappears when calibration ends)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )


def layout(target: str) -> dict[str, Any]:
    """What the int8 model of `target` looks like, in words (bundle.json's int8 entry, the command's output)."""
    if check_target(target) == "onnxruntime":
        return {
            "target": "onnxruntime",
            "format": "QDQ",
            "activations": "uint8 asymmetric per-tensor",
            "weights": "int8 symmetric per-channel",
            "bias": "int32",
            "reduce_range": False,
            "placement": "inputs and outputs (ONNX Runtime CPU fuses QLinearConv / QGemm)",
            "op_types": quantized_ops(target),
        }
    return {
        "target": "tensorrt",
        "format": "QDQ",
        "activations": "int8 symmetric per-tensor",
        "weights": "int8 symmetric per-channel",
        "bias": "float",
        "placement": "inputs of Conv/Gemm/MatMul only (TensorRT explicit quantization)",
        "op_types": quantized_ops(target),
    }


def calibrate(
    model_path: Path, reader: ImageCalibrationReader, method: str, work: Path, op_types: Sequence[str] = QUANTIZED_OPS
) -> Path:
    """Run the calibration images through the model and save the activation ranges (ONNX Runtime's
    calibration cache), which quantize_static then reads.

    Calibrating here rather than inside quantize_static is what lets the histogram methods have
    their proper resolution: quantize_static passes no bin counts, and its entropy calibrator's
    default of 128 bins for 128 quantized levels leaves it one candidate threshold, the full range
    (min-max under another name)."""
    from onnxruntime.quantization import create_calibrator, save_tensors_data

    calibrator = create_calibrator(
        model_path,
        list(op_types),
        augmented_model_path=os.fspath(work / "augmented.onnx"),
        calibrate_method=calibration_method(method),
        extra_options=dict(CALIBRATOR_OPTIONS[method]),
    )
    chatter = io.StringIO()  # the histogram calibrators print their progress
    with contextlib.redirect_stdout(chatter):
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
    cache = work / "ranges.json"
    save_tensors_data(ranges, cache)
    return cache


def quantize_role(
    src_path: Path,
    out_path: Path,
    refs: Sequence[ImageRef],
    bundle: Bundle,
    method: str,
    label: str,
    log: Log | None,
    target: str = DEFAULT_TARGET,
) -> tuple[int, int]:
    """Pre-process, calibrate and quantize one FP32 model for `target`; returns (images used, images skipped)."""
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    options = quantize_options(method, target)
    with tempfile.TemporaryDirectory(prefix="erudite-int8-") as tmp:
        work = Path(tmp)
        pre = work / "preprocessed.onnx"
        try:
            quant_pre_process(os.fspath(src_path), os.fspath(pre))
        except Exception as e:  # pre-processing is an optimisation: quantize the model as exported
            if log:
                log(f"warning: quant_pre_process failed ({_first_line(e)}); quantizing the model as exported")
            pre = src_path
        try:
            with _progress() as progress:
                task = progress.add_task(f"calibrating {label} ({method})", total=len(refs))
                reader = ImageCalibrationReader(
                    refs, bundle.preprocess, advance=lambda n: progress.advance(task, n), log=log
                )
                cache = calibrate(pre, reader, method, work, options["op_types_to_quantize"])
            if reader.used == 0:
                raise UsageError(f"none of the {len(refs)} calibration images for {label} could be read")
            quantize_static(os.fspath(pre), os.fspath(out_path), None, calibration_cache_path=cache, **options)
        except EruditeError:
            raise
        except Exception as e:
            raise QuantizationError(f"onnxruntime could not quantize {label}: {_first_line(e)}") from e
    return reader.used, reader.skipped


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def make_int8(
    bundle_dir: str | os.PathLike[str],
    calib_images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    method: str = "minmax",
    count: int = 512,
    *,
    data: Sequence[str] | None = None,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    eval_count: int = 200,
    min_agreement: float | None = None,
    log: Log | None = None,
    target: str = DEFAULT_TARGET,
) -> dict[str, Any]:
    """Add the INT8 (Q/DQ) model of every role to the bundle, laid out for `target` ("tensorrt": TensorRT's
    explicit quantization; "onnxruntime": ONNX Runtime's CPU integer kernels). A bundle holds one int8
    model per role, model.int8.onnx either way; bundle.json records which (`info["target"]`).

    Calibration: `calib_images` (a folder, searched recursively, or a list of image files) or `data` (NAME=PATH data sets, their
    training split), at most `count` images. Agreement with FP32 is measured on the data sets' test
    split when given (then also the accuracy change per data set, `eval_count` images each), else on
    `images`, else on scikit-image's sample photos."""
    method = method.lower()
    calibration_method(method)
    target = check_target(target)
    bundle = Bundle.load(bundle_dir, verify=True)
    sets, description = calibration_sets(bundle, calib_dir=calib_images, data=data, count=count)
    inputs = agreement_inputs(bundle, images=images, data=data, count=eval_count, log=log)
    calibrated: dict[str, dict[str, int]] = {}

    def build(src: Fp32Source, out: Path) -> None:
        used, skipped = quantize_role(src.path, out, sets[src.role], bundle, method, src.role, log, target)
        calibrated[src.role] = {"images": used, "skipped": skipped}
        if skipped and log:
            log(f"warning: {skipped} unreadable calibration images skipped for {src.role}")

    info = {
        "quantizer": "onnxruntime.quantization.quantize_static",
        **layout(target),
        "method": method,
        "calibrator": CALIBRATOR_OPTIONS[method],
        "calibration": description,
        "calibrated": calibrated,  # per role: images used and skipped (filled while quantizing)
    }
    return derive(bundle_dir, "int8", build, inputs=inputs, info=info, min_agreement=min_agreement, log=log, bundle=bundle)
