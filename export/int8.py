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
1.32 (ResNet-50 erudite at 224 px, `python -m benchmarks.studies.int8_layouts`): this layout runs in about 0.3x
FP32's latency at batch 1 and 8, the TensorRT layout in about 1.4x (benchmarks/README.md). Per-tensor
weights and QuantFormat.QOperator measured the same speed (per-tensor agreed less with FP32); QDQ is
ONNX Runtime's recommended format. The gate softmax and reductions stay float.

onnxruntime's quant_pre_process (symbolic shape inference and graph optimisation) runs first, as
ONNX Runtime recommends. Calibration (MinMax, Entropy or Percentile) runs through onnxruntime's own
calibrator; its ranges go to quantize_static as a calibration cache (see `calibrate` for why).

The entry point is `make_int8(bundle, options)`: a loaded Bundle and an Int8Options holding every setting
(`export int8` builds both from its flags). The measurements behind `--report` (sensitivity, the
calibration-count sweep `sweep_counts`) are made here; export.int8_report only renders and writes them.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from erudite_edge.core.bundle import INPUT_NAME, Bundle
from erudite_edge.errors import BadImageError, EruditeError, UsageError
from export.calibration import (
    BATCH,
    DEFAULT_SEED,
    CalibrationPlan,
    ImageCalibrationReader,
    calibration_sets,
    collect_ranges,
    sample,
)
from export.derive import Fp32Source, derive
from export.fp16 import agreement_inputs
from export.graph_input import preprocess_nodes
from export.images import ImageRef, InputSet, Log, check_inputs, dataset_refs, to_batch
from export.int8_report import write_report
from export.int8_sensitivity import Evaluator, Goal, analyse, group_nodes, layer_names, search

METHODS = ("minmax", "entropy", "percentile")
QUANTIZERS = ("onnxruntime", "modelopt")
MAX_FLOAT_FRACTION = 0.25  # mixed precision keeps at most this share of the compute nodes float
# `export int8 --data`'s goal unless told otherwise: agreement with FP32 and every data set's accuracy ratio, judged
# on the test split with 95 % intervals (export/goal_verdict.py)
DEFAULT_MIN_AGREEMENT = 0.98
DEFAULT_MIN_ACCURACY_RATIO = 0.99
# the mixed-precision search aims at half the loss the goal allows (98 % -> 99 %, 0.99 -> 0.995) on training images,
# so that the held-out test images, a different sample, still clear the goal; measured on a fresh demo training
# (issue 27): the search reached 99.0 % on its tuning images, then 98.0 % on the test images
TUNING_MARGIN = 0.5
TUNING_IMAGES_FACTOR = 2  # the search decides on this many times --eval-count training images per data set
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


QUANTIZER_NAMES = {"onnxruntime": "onnxruntime.quantization.quantize_static",
                   "modelopt": "modelopt.onnx.quantization.quantize (NVIDIA ModelOpt ONNX PTQ)"}


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


Images = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None  # a folder, or a list of image files


def _images(value: Images) -> Images:
    """A folder as given; a list of files as a tuple (the options are frozen)."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return value
    return tuple(value)


@dataclass(frozen=True)
class Int8Options:
    """Every setting of one INT8 export (what `export int8`'s flags say): how the model is quantized
    (calibration method, target layout, quantizer, weight options, seed, batch), which images calibrate,
    which check it, the mixed-precision goal, the report and QAT. RoleQuantizer reads the first group."""

    # how the model is quantized
    method: str = "minmax"
    target: str = DEFAULT_TARGET
    quantizer: str = "onnxruntime"  # or "modelopt" (tensorrt target only)
    per_channel: bool = True
    reduce_range: bool = False
    seed: int = DEFAULT_SEED
    batch: int = BATCH
    percentile: float = 99.999  # --method percentile: the share of |x| the range keeps
    # calibration: a folder (searched recursively) or image files, or NAME=PATH data sets (their training split)
    calib_images: Images = None
    data: tuple[str, ...] = ()
    calib_count: int = 512  # at most this many images (per model), balanced across data sets, drawn with `seed`
    # the agreement check: the data sets' test split when given, else `images`, else scikit-image's photos
    images: Images = None
    eval_count: int = 200
    # mixed precision: the goal (fractions), how much may stay float, what decides (without data sets)
    # With `data`, unset values take the default goal (DEFAULT_MIN_AGREEMENT, DEFAULT_MIN_ACCURACY_RATIO; off with
    # default_goal False), judged on the test split with 95 % intervals; without, min_agreement alone, as measured.
    min_agreement: float | None = None
    min_accuracy_ratio: float | None = None
    default_goal: bool = True
    max_float: float = MAX_FLOAT_FRACTION
    granularity: str = "block"
    tuning_images: Images = None
    tune_count: int | None = None  # with `data`: training images per data set the search decides on (None: 2 x eval_count)
    # --report: a folder for the sensitivity report, and the calibration counts it compares
    report: Path | None = None
    sweep: tuple[int, ...] = ()
    # --qat: a QAT run whose ranges and weights replace post-training calibration
    qat: Path | None = None

    def calibrator(self) -> dict[str, Any]:
        """onnxruntime's calibrator options for this method (the percentile as given)."""
        options = dict(CALIBRATOR_OPTIONS[self.method])
        if self.method == "percentile":
            options["percentile"] = self.percentile
        return options

    def checked(self) -> "Int8Options":
        """These options validated (UsageError, one line) and normalised (names lower case, lists as tuples)."""
        method = self.method.lower()
        calibration_method(method)
        target = check_target(self.target)
        quantizer = self.quantizer.lower()
        if quantizer not in QUANTIZERS:
            raise UsageError(f"--quantizer {self.quantizer!r} unknown; one of {', '.join(QUANTIZERS)}")
        if quantizer == "modelopt" and target != "tensorrt":
            raise UsageError("--quantizer modelopt places Q/DQ for TensorRT: use it with --target tensorrt")
        if quantizer == "modelopt" and method == "percentile":
            raise UsageError("--quantizer modelopt calibrates with minmax or entropy, not percentile")
        if self.batch < 1:
            raise UsageError(f"--calib-batch must be at least 1, not {self.batch}")
        if not 50 < self.percentile <= 100:
            raise UsageError(f"--percentile {self.percentile}: a percentage above 50 and at most 100, e.g. 99.999")
        if self.min_accuracy_ratio is not None and not 0 < self.min_accuracy_ratio <= 1:
            raise UsageError(f"--min-accuracy-ratio is a fraction (0-1], not {self.min_accuracy_ratio}")
        if not 0 <= self.max_float <= 1:
            raise UsageError(f"--max-float is a fraction (0-1), not {self.max_float}")
        if self.qat is not None and (target != "tensorrt" or quantizer != "onnxruntime" or method != "minmax"):
            raise UsageError("--qat takes its ranges from the QAT run: use it with --target tensorrt, the onnxruntime "
                             "quantizer and no --method")
        if self.qat is not None and self.report is not None:
            raise UsageError("--report measures post-training quantization; run it without --qat")
        if self.granularity not in ("block", "layer"):
            raise UsageError(f"--granularity {self.granularity!r} unknown; one of block, layer")
        min_agreement, min_ratio = self.min_agreement, self.min_accuracy_ratio
        if self.data and self.default_goal and min_agreement is None and min_ratio is None:
            min_agreement, min_ratio = DEFAULT_MIN_AGREEMENT, DEFAULT_MIN_ACCURACY_RATIO
        if self.tune_count is not None and self.tune_count < 0:
            raise UsageError(f"--tune-count must be 0 (all) or more, not {self.tune_count}")
        return replace(self, method=method, target=target, quantizer=quantizer,
                       min_agreement=min_agreement, min_accuracy_ratio=min_ratio,
                       calib_images=_images(self.calib_images), data=tuple(self.data or ()),
                       images=_images(self.images), tuning_images=_images(self.tuning_images),
                       report=None if self.report is None else Path(self.report), sweep=tuple(self.sweep),
                       qat=None if self.qat is None else Path(self.qat))

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "quantizer": self.quantizer, "per_channel": self.per_channel,
                "reduce_range": self.reduce_range, "seed": self.seed, "calib_batch": self.batch}


def quantizer_options(opts: Int8Options) -> dict[str, Any]:
    """quantize_static's keyword arguments for these options."""
    options = quantize_options(opts.method, opts.target)
    options["per_channel"] = opts.per_channel
    options["reduce_range"] = opts.reduce_range
    return options


def _first_batch_check(reader: ImageCalibrationReader, label: str, minimum: int) -> None:
    if reader.used == 0:
        raise UsageError(f"none of the {len(reader.refs)} calibration images for {label} could be read; "
                         "give a folder of readable images (--calib) or data sets (--data)")
    if reader.used < minimum:
        raise UsageError(f"only {reader.used} readable calibration images for {label}, fewer than one calibration "
                         f"batch ({minimum}); give more images or a smaller --calib-batch")


class RoleQuantizer:
    """One role's FP32 model, pre-processed and calibrated once, quantized as often as asked (with
    different nodes kept in float): what the sensitivity analysis and the mixed-precision search need."""

    def __init__(self, src_path: Path, refs: Sequence[ImageRef], bundle: Bundle, opts: Int8Options, label: str,
                 work: Path, log: Log | None = None):
        self.src_path, self.refs, self.bundle, self.opts, self.label = src_path, list(refs), bundle, opts, label
        self.work, self.log = work, log
        self.options = quantizer_options(opts)
        self.pre = src_path
        self.cache: Path | None = None
        self.used = self.skipped = 0
        self._calib_array: np.ndarray | None = None
        self._full: onnx.ModelProto | None = None
        self.minimum: int | None = None  # fewer readable calibration images is an error (default: one batch)
        self._reference: onnx.ModelProto | None = None
        self._preprocess_nodes: list[str] | None = None

    def prepare(self) -> "RoleQuantizer":
        """quant_pre_process, then the activation ranges of the calibration images (saved as onnxruntime's
        calibration cache, which quantize_static reads; calibrating here gives the histogram methods
        their 2048 bins, quantize_static would pass none: entropy with 128 bins for 128 levels has one
        candidate threshold, the full range)."""
        from onnxruntime.quantization import save_tensors_data
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = self.work / "preprocessed.onnx"
        try:
            quant_pre_process(os.fspath(self.src_path), os.fspath(pre))
            self.pre = pre
        except Exception as e:  # pre-processing is an optimisation: quantize the model as exported
            if self.log:
                self.log(f"warning: quant_pre_process failed ({_first_line(e)}); quantizing the model as exported")
        minimum = self.minimum if self.minimum is not None else min(self.opts.batch, len(self.refs))
        with _progress() as progress:
            task = progress.add_task(f"calibrating {self.label} ({self.opts.method})", total=len(self.refs))
            reader = ImageCalibrationReader(self.refs, self.bundle.preprocess, batch_size=self.opts.batch,
                                            advance=lambda n: progress.advance(task, n), log=self.log)
            if self.opts.quantizer == "modelopt":
                batches = []
                while (b := reader.get_next()) is not None:
                    batches.append(b[INPUT_NAME])
                _first_batch_check(reader, self.label, minimum)
                self._calib_array = np.concatenate(batches, axis=0)
            else:
                try:
                    ranges = collect_ranges(self.pre, reader, calibration_method(self.opts.method),
                                            self.options["op_types_to_quantize"], self.work,
                                            self.opts.calibrator())
                except EruditeError:
                    raise
                except Exception as e:
                    raise QuantizationError(f"onnxruntime could not calibrate {self.label}: {_first_line(e)}") from e
                _first_batch_check(reader, self.label, minimum)
                self.cache = self.work / "ranges.json"
                save_tensors_data(ranges, self.cache)
        self.used, self.skipped = reader.used, reader.skipped
        return self

    def preprocess_nodes(self) -> list[str]:
        if self._preprocess_nodes is None:
            self._preprocess_nodes = preprocess_nodes(onnx.load(os.fspath(self.pre), load_external_data=False))
        return self._preprocess_nodes

    def set_ranges(self, ranges: dict[str, tuple[float, float]]) -> None:
        """Replace the calibrated range of these tensors (QAT's learned input ranges)."""
        from onnxruntime.quantization import load_tensors_data, save_tensors_data
        from onnxruntime.quantization.calibrate import TensorData, TensorsData

        assert self.cache is not None, "prepare() first"
        old = load_tensors_data(self.cache)
        data = dict(old.data)
        for name, (lo, hi) in ranges.items():
            data[name] = TensorData(lowest=np.float32(lo), highest=np.float32(hi))
        save_tensors_data(TensorsData(old.calibration_method, data), self.cache)

    def candidates(self) -> list[str]:
        """Names of the nodes that carry the compute (Conv, Gemm, MatMul) in graph order: what can stay float."""
        model = onnx.load(os.fspath(self.pre), load_external_data=False)
        return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS]

    def quantize(self, out_path: Path, exclude: Sequence[str] = ()) -> Path:
        """Write the int8 model with the nodes in `exclude` kept in float. A uint8-input model's
        normalisation (Cast, Transpose, Mul, Add: export/graph_input.py) always stays float: its Mul and
        Add are in ONNX Runtime's layout's op list, and a Q/DQ pair there would round the image twice
        (the first Conv's own input Q/DQ, on the normalised tensor, is kept)."""
        exclude = list(exclude) + [n for n in self.preprocess_nodes() if n not in exclude]
        try:
            if self.opts.quantizer == "modelopt":
                self._modelopt(out_path, exclude)
            else:
                from onnxruntime.quantization import quantize_static

                quantize_static(os.fspath(self.pre), os.fspath(out_path), None, calibration_cache_path=self.cache,
                                nodes_to_exclude=list(exclude), **self.options)
        except EruditeError:
            raise
        except Exception as e:
            raise QuantizationError(f"{self.opts.quantizer} could not quantize {self.label}: {_first_line(e)}") from e
        return out_path

    def variant(self, out_path: Path, exclude: Sequence[str] = ()) -> Path:
        """Like `quantize`, made quickly from one fully quantized model (int8_sensitivity.keep_float):
        for ranking layers, not for the model that is written."""
        from export.int8_sensitivity import keep_float

        if self._full is None:
            full = self.quantize(self.work / "full.onnx")
            self._full = onnx.load(os.fspath(full))
            self._reference = onnx.load(os.fspath(self.pre))
        assert self._reference is not None
        onnx.save_model(keep_float(self._full, self._reference, exclude), os.fspath(out_path))
        return out_path

    def _modelopt(self, out_path: Path, exclude: Sequence[str]) -> None:
        import importlib
        import logging
        import sys

        try:  # tensorrt-stubs (for type checking) import as "tensorrt": hide them, or ModelOpt takes them for TensorRT
            trt = importlib.import_module("tensorrt")
            stubs_only = not hasattr(trt, "Logger")
        except ImportError:
            trt, stubs_only = None, False
        if stubs_only:
            sys.modules["tensorrt"] = None  # type: ignore[assignment]
        from modelopt.onnx.quantization import quantize as modelopt_quantize

        method = {"minmax": "max", "entropy": "entropy"}.get(self.opts.method)
        if method is None:
            raise UsageError(f"--quantizer modelopt calibrates with minmax or entropy, not {self.opts.method}")
        chatter = io.StringIO()
        try:
            with contextlib.redirect_stdout(chatter):
                modelopt_quantize(
                    os.fspath(self.pre), quantize_mode="int8", calibration_data={INPUT_NAME: self._calib_array},
                    calibration_method=method, calibration_eps=["cpu"], nodes_to_exclude=list(exclude),
                    output_path=os.fspath(out_path), high_precision_dtype="fp32", log_level="ERROR",
                )
        finally:
            logging.getLogger("modelopt").setLevel(logging.ERROR)
            if stubs_only:
                sys.modules["tensorrt"] = trt


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
    opts = Int8Options(method=method, target=target).checked()
    with tempfile.TemporaryDirectory(prefix="erudite-int8-") as tmp:
        q = RoleQuantizer(src_path, refs, bundle, opts, label, Path(tmp), log).prepare()
        q.quantize(out_path)
    return q.used, q.skipped


@dataclass
class QatSource:
    """A QAT run's float model, exported, and what export needs of its quantizers."""

    checkpoint: Path
    onnx_path: Path
    amax: dict[str, float]  # quantized layer (module name) -> input range
    meta: dict[str, Any]


def qat_source(bundle: Bundle, path: str | os.PathLike[str], work: Path) -> QatSource:
    """Load the QAT checkpoint (`train --qat`), check it is the bundle's model, export its float graph."""
    from export.onnx_export import build_checkpoint_model, to_onnx
    from train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    meta = ckpt.meta.get("qat")
    if not meta or "amax" not in meta:
        raise UsageError(f"--qat {path}: not a QAT checkpoint (make one with `erudite-edge train --qat FP32_RUN`)")
    if bundle.kind != "erudite" or bundle.roles() != ["main"]:
        raise UsageError(f"--qat: {bundle.root} is a {bundle.kind} bundle; QAT export is for erudite bundles (one model)")
    same_transform = ckpt.preprocess.host_float().to_dict() == bundle.preprocess.host_float().to_dict()  # uint8 or float input
    if ckpt.labels.to_dict() != bundle.labels.to_dict() or not same_transform:
        raise UsageError(f"--qat {path}: its labels or preprocessing differ from the bundle's; fine-tune the bundle's own run")
    module = build_checkpoint_model(ckpt).inference_graph().eval()
    out = work / "qat.fp32.onnx"
    onnx.save_model(to_onnx(module, bundle.preprocess, int(bundle.meta.get("opset", 17))), os.fspath(out))
    return QatSource(ckpt.path, out, {k: float(v) for k, v in meta["amax"].items()}, meta)


def qat_ranges(model: onnx.ModelProto, nodes: Sequence[str], amax: dict[str, float]) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """For each compute node: its input's range from QAT (by its weight's layer name), or, for a layer QAT
    did not quantize, the node itself in the list of nodes kept float."""
    layers = layer_names(model, nodes)
    by_name = {n.name: n for n in model.graph.node}
    ranges, keep_float = {}, []
    for node in nodes:
        a = amax.get(layers[node])
        if a is None:
            keep_float.append(node)
        else:
            ranges[by_name[node].input[0]] = (-a, a)
    return ranges, keep_float


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def tuning_inputs(
    bundle: Bundle, data: Sequence[str], calibration: Sequence[ImageRef], per_dataset: int, seed: int, log: Log | None
) -> InputSet | None:
    """Labelled training images that did not calibrate: what the mixed-precision search decides on, so
    that the test images the report gives stay held out. None where calibration took every one."""
    used = {r.path for r in calibration}
    by_ds: dict[int, list[Any]] = {}
    for r in dataset_refs(list(data), "train", bundle.labels):
        if r.ref.path not in used:
            by_ds.setdefault(r.dataset, []).append(r)
    rng = np.random.default_rng(seed + 1)
    images, ds_ids, local_ids = [], [], []
    for _, refs in sorted(by_ds.items()):
        for r in sample(refs, per_dataset, rng):
            try:
                images.append(r.ref.load())
            except BadImageError as e:
                if log:
                    log(f"warning: skipping unreadable image: {e}")
                continue
            ds_ids.append(r.dataset)
            local_ids.append(r.local)
    if not images:
        return None
    return InputSet(to_batch(images, bundle.preprocess), "training images not used for calibration", True, 0,
                    np.asarray(ds_ids, dtype=np.int64), np.asarray(local_ids, dtype=np.int64))


def sweep_counts(
    bundle: Bundle, plan: CalibrationPlan, opts: Int8Options, inputs: InputSet, log: Log | None
) -> list[dict[str, Any]]:
    """`--report --sweep`: the fully quantized "main" (or first) role calibrated on each count of images in
    `opts.sweep` (same seed, same balancing), measured on the held-out images (rows of the report)."""
    role = bundle.roles()[0]
    fp32 = bundle.path(bundle.entry(role, "fp32"))
    evaluate = Evaluator(bundle, role, fp32, inputs)
    rows = []
    for n in opts.sweep:
        sets = calibration_sets(bundle, calib_dir=opts.calib_images, data=opts.data or None, count=n, seed=plan.seed)
        with tempfile.TemporaryDirectory(prefix="erudite-int8-sweep-") as tmp:
            work = Path(tmp)
            q = RoleQuantizer(fp32, sets.sets[role], bundle, opts, role, work, log).prepare()
            m = evaluate(q.quantize(work / "swept.onnx"))
        rows.append({"count": n, "images": q.used, **m.to_dict()})
        if log:
            log(f"calibration sweep: {q.used} images -> agreement {100 * m.agreement:.1f}%")
    return rows


def with_margin(goal: Goal) -> Goal:
    """The goal the mixed-precision search tunes to: TUNING_MARGIN of the allowed loss kept in reserve."""
    def tighter(x: float | None) -> float | None:
        return None if x is None else 1 - (1 - x) * (1 - TUNING_MARGIN)
    return Goal(tighter(goal.min_agreement), tighter(goal.min_accuracy_ratio))


def make_int8(bundle: Bundle, options: Int8Options, *, log: Log | None = None) -> dict[str, Any]:
    """Add the INT8 (Q/DQ) model of every role to the loaded `bundle` (the command loads it with
    `Bundle.load(path, verify=True)`: every file checked first), laid out for `options.target`
    ("tensorrt": TensorRT's explicit quantization; "onnxruntime": ONNX Runtime's CPU integer kernels).
    A bundle holds one int8 model per role, model.int8.onnx either way; bundle.json records which
    (`info["target"]`). Every setting is in `options` (Int8Options); `log` takes progress lines.

    Calibration: `calib_images` (a folder, searched recursively, or a list of image files) or `data` (NAME=PATH
    data sets, their training split), at most `calib_count` images, balanced across data sets, drawn with `seed`.
    Agreement with FP32 is measured on the data sets' test split when given (then also the accuracy change
    per data set, `eval_count` images each), else on `images`, else on scikit-image's sample photos.

    Mixed precision: with a goal (`min_agreement`, and with `data` `min_accuracy_ratio`; with `data` the default
    goal unless `default_goal` is off), when the fully quantized model misses it the most sensitive blocks stay
    float until it is met (at most `max_float` of the compute nodes); which and why goes into bundle.json. With
    `data` the search decides on `tune_count` training images per data set that did not calibrate, towards the
    goal with a margin (with_margin), and the held-out test images judge the goal with 95 % intervals
    (export.goal_verdict): wholly below it, nothing is written; too few images to tell, the model is written with
    a warning (bundle.json `goal`). Without `data`, `min_agreement` is checked as measured: missed, nothing is written. `report`: a folder for the per-block sensitivity (JSON, Markdown,
    bar chart) and, with `sweep`, agreement and accuracy for each calibration count.

    `qat`: a QAT run (`train --qat`): its fine-tuned weights, quantized with the input ranges it was
    trained with (the calibration images then give the ranges of the tensors QAT does not quantize);
    the layers it left float stay float. TensorRT layout only; the agreement is measured against the
    bundle's own FP32 model.

    `tuning_images` (without `data`): the images the mixed-precision search decides on, so that the
    check images (`images`) stay held out; by default the search decides on the check images."""
    opts = options.checked()
    data, count, eval_count, seed, qat = opts.data, opts.calib_count, opts.eval_count, opts.seed, opts.qat
    report, granularity = opts.report, opts.granularity
    goal = Goal(opts.min_agreement, opts.min_accuracy_ratio if data else None)
    # with data sets the search tunes on training images towards a goal with a margin; the test images judge
    tuning_goal = with_margin(goal) if data else goal
    tune_count = (opts.tune_count if opts.tune_count is not None else TUNING_IMAGES_FACTOR * eval_count) if data else eval_count
    plan = calibration_sets(bundle, calib_dir=opts.calib_images, data=data or None, count=count, seed=seed)
    inputs = agreement_inputs(bundle, images=opts.images, data=data or None, count=eval_count, log=log)
    calibrated: dict[str, dict[str, int]] = {}
    mixed: dict[str, Any] = {}
    reports: dict[str, Any] = {}

    def build(src: Fp32Source, out: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="erudite-int8-") as tmp:
            work = Path(tmp)
            if qat is not None:
                return build_qat(src, out, work)
            q = RoleQuantizer(src.path, plan.sets[src.role], bundle, opts, src.role, work, log)
            q.minimum = min(opts.batch, count)  # a folder with fewer images than one batch is refused
            q.prepare()
            calibrated[src.role] = {"images": q.used, "skipped": q.skipped}
            if q.skipped and log:
                log(f"warning: {q.skipped} unreadable calibration images skipped for {src.role}")
            keep: list[str] = []
            if goal.active() or report is not None:
                keep = _mixed_precision(src, q, work, plan.sets[src.role], mixed, reports)
            q.quantize(out, keep)

    def build_qat(src: Fp32Source, out: Path, work: Path) -> None:
        assert qat is not None
        source = qat_source(bundle, qat, work)
        q = RoleQuantizer(source.onnx_path, plan.sets[src.role], bundle, opts, src.role, work, log)
        q.minimum = min(opts.batch, count)
        q.prepare()
        calibrated[src.role] = {"images": q.used, "skipped": q.skipped}
        model = onnx.load(os.fspath(q.pre), load_external_data=False)
        ranges, keep = qat_ranges(model, q.candidates(), source.amax)
        q.set_ranges(ranges)
        layers = layer_names(model, keep)
        mixed[src.role] = {"goal": "none", "kept_float": [{"group": layers[n], "nodes": [n], "why": "not quantized in QAT"}
                                                         for n in keep], "nodes": keep}
        info["qat"] = {"checkpoint": str(source.checkpoint), "from": source.meta.get("from"),
                       "layout": source.meta.get("layout"), "calibration": source.meta.get("calibration"),
                       "ranges_from_qat": len(ranges)}
        q.quantize(out, keep)

    def _mixed_precision(src: Fp32Source, q: RoleQuantizer, work: Path, calib_refs: Sequence[ImageRef],
                         mixed: dict[str, Any], reports: dict[str, Any]) -> list[str]:
        if data:
            found_tuning = tuning_inputs(bundle, data, calib_refs, tune_count, seed, log)
            if found_tuning is None:
                if report is not None:
                    raise UsageError("no training images are left over from calibration to measure the sensitivity on; "
                                     "lower --calib-count")
                # the test images still judge the goal (derive); there is nothing to steer the search with
                log and log(f"warning: int8 {src.role}: calibration used every training image, none is left to tune mixed "
                            "precision on (lower --calib-count for a search); the test images judge the fully quantized model")
                mixed[src.role] = {"goal": goal.describe(), "kept_float": [], "nodes": [], "tuning_images": None}
                return []
            tuning = found_tuning
        elif opts.tuning_images is not None:
            tuning = check_inputs(bundle.preprocess, images=opts.tuning_images, count=max(eval_count, 1), log_fn=log)
        else:
            tuning = inputs
        evaluate = Evaluator(bundle, src.role, src.path, tuning)
        model = onnx.load(os.fspath(q.pre), load_external_data=False)
        nodes = q.candidates()
        groups = group_nodes(model, nodes, granularity)
        layers = layer_names(model, nodes)
        base = evaluate(q.variant(work / "all.onnx"))
        if report is None and base.meets(tuning_goal):
            mixed[src.role] = {"goal": goal.describe(), "tuned_to": tuning_goal.describe(), "kept_float": [], "nodes": [],
                               "tuning_images": tuning.source, "tuning_count": len(tuning.batch), "all_quantized": base.to_dict()}
            return []
        limit = int(opts.max_float * len(nodes))
        if report is None and limit == 0 and (data or base.meets(goal)):
            # with data sets the test images judge the goal (derive): the tuning images only steer the search
            log and log(f"warning: int8 {src.role}: fully quantized it misses {tuning_goal.describe()} on {len(tuning.batch)} "
                        f"{tuning.source} ({base.to_dict()}) and --max-float 0 keeps nothing float; the test images judge it")
            mixed[src.role] = {"goal": goal.describe(), "tuned_to": tuning_goal.describe(), "kept_float": [], "nodes": [],
                               "tuning_images": tuning.source, "tuning_count": len(tuning.batch), "all_quantized": base.to_dict()}
            return []
        if report is None and limit == 0:
            raise QuantizationError(f"int8 {src.role}: the goal ({goal.describe()}) is not met fully quantized "
                                    f"({base.to_dict()}) and --max-float 0 keeps nothing float; nothing was written")
        log and log(f"{src.role}: fully quantized, agreement {100 * base.agreement:.1f}% on {len(tuning.batch)} "
                    f"{tuning.source}; measuring each block's sensitivity")
        sens = analyse(q.variant, evaluate, groups, layers, work, granularity=granularity,
                       both=report is not None, log=log)
        reports[src.role] = {"sensitivity": sens.to_dict(), "fp32_accuracy": evaluate.fp32_accuracy}
        if not goal.active() or base.meets(tuning_goal):
            mixed[src.role] = {"goal": goal.describe(), "tuned_to": tuning_goal.describe(), "kept_float": [], "nodes": [],
                               "tuning_images": tuning.source, "tuning_count": len(tuning.batch), "all_quantized": base.to_dict()}
            return []
        # ranked and tried on quick variants; the model written is the quantizer's own, so verify with it
        found = search(q.variant, evaluate, sens.ranking(), tuning_goal, work, max_float=limit, log=log, verify=q.quantize)
        if not found.met and data:  # the test images judge the goal (derive); the tuning images only steered the search
            log and log(f"warning: int8 {src.role}: with {len(found.nodes)} of {len(nodes)} compute nodes float (at most "
                        f"{limit}) it reached {found.final} on {len(tuning.batch)} {tuning.source}, short of "
                        f"{tuning_goal.describe()}; the test images judge it")
        elif not found.met:
            raise QuantizationError(
                f"int8 {src.role}: the goal ({goal.describe()}) is not met even with {len(found.nodes)} of "
                f"{len(nodes)} compute nodes float (at most {limit}); reached {found.final}; nothing was written"
            )
        mixed[src.role] = {"goal": goal.describe(), "tuned_to": tuning_goal.describe(), "tuning_images": tuning.source,
                           "tuning_count": len(tuning.batch), "all_quantized": base.to_dict(),
                           "kept_float": found.kept_float, "put_back": found.put_back, "nodes": found.nodes,
                           "reached": found.final,
                           "float_nodes": len(found.nodes), "compute_nodes": len(nodes)}
        return found.nodes

    info = {
        "quantizer": QUANTIZER_NAMES[opts.quantizer],
        **layout(opts.target),
        **({} if opts.per_channel else {"weights": layout(opts.target)["weights"].replace("per-channel", "per-tensor")}),
        **({"reduce_range": True, "weights": "int8 7-bit range (reduce_range)"} if opts.reduce_range else {}),
        **opts.describe(),
        "calibrator": opts.calibrator(),
        "calibration": plan.description,
        "calibration_per_dataset": plan.per_dataset,
        "calibrated": calibrated,  # per role: images used and skipped (filled while quantizing)
        "mixed_precision": mixed,  # per role: the nodes kept float and why (filled while quantizing)
    }
    if data:  # labelled test images: the goal judged with its 95 % intervals (met, failed, or too few images to tell)
        judged = (goal.min_agreement, goal.min_accuracy_ratio) if goal.active() else None
        result = derive(bundle, "int8", build, inputs=inputs, info=info, goal=judged, log=log)
    else:
        result = derive(bundle, "int8", build, inputs=inputs, info=info, min_agreement=opts.min_agreement, log=log)
    if report is not None:
        swept = sweep_counts(bundle, plan, opts, inputs, log) if opts.sweep else []
        written = write_report(report, result, reports, swept)
        log and log(f"int8 report: {', '.join(str(p) for p in written)}")
        result["report_files"] = [str(p) for p in written]
    return result
