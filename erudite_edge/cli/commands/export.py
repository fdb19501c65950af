"""`erudite-edge export onnx | fp16 | int8 | zoo`: a trained run -> a bundle, and its reduced precisions.

These need torch / onnx / onnxruntime's quantization tools (`pip install 'erudite-edge[train]'`), which
are imported only inside the command bodies so the rest of the CLI runs on a device without them.
Progress and reports go to stderr; the bundle directory is printed on stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from erudite_edge.cli.interruptible import interruptible
from erudite_edge.errors import BackendUnavailable, UsageError

DEFAULT_INPUT = "uint8"  # export/onnx_export.py DEFAULT_INPUT (not imported: it needs onnx); measured: benchmarks/results/preprocess_uint8.md

IMAGES_HELP = "Folder of real images (searched recursively) for the check; default: scikit-image's sample photos."
INPUT_HELP = ("The models' input: uint8 (NHWC RGB bytes at the model size; Cast, transpose, scale and mean/std are "
              "the graph's first nodes, so the host only decodes and resizes) or float32 (NCHW, normalised on the host).")
DATA_HELP = "NAME=PATH (or NAME=FORMAT:PATH) of a data set, once per data set; its test split is used for the check."


def _require(what: str, *modules: str) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise BackendUnavailable(f"{what} needs {name}: `pip install 'erudite-edge[train]'`") from None


def _log(msg: str) -> None:
    typer.echo(msg, err=True)


def _fraction(percent: Optional[float]) -> Optional[float]:
    if percent is None:
        return None
    if not 0 <= percent <= 100:
        raise UsageError(f"--min-agreement is a percentage (0-100), not {percent}")
    return percent / 100.0


def onnx_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Run directory (its best checkpoint) or a .safetensors file."),
    out: Path = typer.Option(..., "--out", help="Bundle directory to create (must not exist unless --overwrite)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset, 17 or newer (17 suits TensorRT 8.5+ on JetPack 5)."),
    images: Optional[Path] = typer.Option(None, "--images", help=IMAGES_HELP),
    data: Optional[list[str]] = typer.Option(None, "--data", help=DATA_HELP),
    parity_count: int = typer.Option(32, "--parity-count", help="How many inputs the parity check runs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out (only once the export succeeded)."),
    with_attention: bool = typer.Option(False, "--with-attention", help="Add the attention's 8 group masks as a second "
                                        "output 'attention' (for `run --save-attention`, `analyze --bundle`); runners ignore it otherwise."),
    input_dtype: str = typer.Option(DEFAULT_INPUT, "--input", help=INPUT_HELP),
) -> None:
    """Export an erudite run to an ONNX bundle (model.onnx + bundle.json), with a parity check.

    The deployed graph (no auxiliary classifiers) is traced with a dynamic batch axis: input "images"
    [batch,H,W,3] uint8 (--input uint8) or [batch,3,H,W] float32 (--input float32), output "logits" [batch,K]. ONNX Runtime must match PyTorch: max |logit difference|
    at most 1e-3 x max(1, largest |logit|), and the same top-1 on every input except near ties (top-2
    margin within twice that). Otherwise the export fails and writes nothing.
    """
    _require("export onnx", "torch", "onnx", "onnxruntime")
    from export.onnx_export import export_checkpoint

    bundle = export_checkpoint(
        checkpoint, out, opset=opset, images=images, data=data or None,
        parity_count=parity_count, overwrite=overwrite, log=_log, with_attention=with_attention,
        input_dtype=input_dtype,
    )
    typer.echo(str(bundle.root))


def zoo_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Run directory of a --variant single (zoo) run, or its .safetensors."),
    out: Path = typer.Option(..., "--out", help="Bundle directory to create (must not exist unless --overwrite)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset, 17 or newer."),
    images: Optional[Path] = typer.Option(None, "--images", help=IMAGES_HELP),
    data: Optional[list[str]] = typer.Option(None, "--data", help=DATA_HELP),
    parity_count: int = typer.Option(32, "--parity-count", help="How many inputs each parity check runs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out (only once the export succeeded)."),
    input_dtype: str = typer.Option(DEFAULT_INPUT, "--input", help=INPUT_HELP),
) -> None:
    """Export a Single zoo run as one bundle: coarse.onnx and fine.<dataset>.onnx.

    Each model is parity-checked against PyTorch as in `export onnx`.
    """
    _require("export zoo", "torch", "onnx", "onnxruntime")
    from export.zoo import export_zoo

    bundle = export_zoo(
        checkpoint, out, opset=opset, images=images, data=data or None,
        parity_count=parity_count, overwrite=overwrite, log=_log, input_dtype=input_dtype,
    )
    typer.echo(str(bundle.root))


def fp16_command(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle directory made by `export onnx` or `export zoo`."),
    images: Optional[Path] = typer.Option(None, "--images", help=IMAGES_HELP),
    data: Optional[list[str]] = typer.Option(
        None, "--data", help="NAME=PATH of a data set (named as in training): agreement and accuracy on its test split."
    ),
    count: int = typer.Option(64, "--count", help="Images for the agreement check (per data set with --data)."),
    min_agreement: Optional[float] = typer.Option(
        None, "--min-agreement", help="Fail (writing nothing) below this top-1 agreement with FP32, in percent."
    ),
) -> None:
    """Add FP16 ONNX models (every role) to a bundle, with their top-1 agreement with FP32."""
    _require("export fp16", "onnx", "onnxruntime", "onnxconverter_common")
    from erudite_edge.core.bundle import Bundle
    from export.fp16 import make_fp16

    make_fp16(Bundle.load(bundle, verify=True), images=images, data=data or None, count=count,
              min_agreement=_fraction(min_agreement), log=_log)
    typer.echo(str(bundle))


def int8_command(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle directory made by `export onnx` or `export zoo`."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of calibration images (searched recursively)."),
    data: Optional[list[str]] = typer.Option(
        None, "--data",
        help="NAME=PATH of a training data set (named as in training): calibrates on its training split and "
        "reports agreement and accuracy change on its test split.",
    ),
    calib_count: int = typer.Option(512, "--calib-count", help="Calibration images (per model), balanced across data sets."),
    calib_batch: int = typer.Option(16, "--calib-batch", help="Calibration batch; fewer readable images than this is an error."),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration (and tuning) image sampling."),
    method: str = typer.Option("minmax", "--method", help="Calibration: minmax | entropy | percentile."),
    images: Optional[Path] = typer.Option(None, "--images", help=IMAGES_HELP + " (ignored with --data)"),
    eval_count: int = typer.Option(200, "--eval-count", help="Test images per data set for agreement and accuracy (0: all)."),
    min_agreement: Optional[float] = typer.Option(
        None, "--min-agreement",
        help="Goal: top-1 agreement with FP32, in percent (with --data default 98, with --min-accuracy-ratio 0.99). Missed by "
        "the fully quantized model, the most sensitive blocks stay float until it is met (with --data: with a margin, on "
        "training images). With --data the test images judge it by a 95 % interval: below it, exit 1 and nothing is "
        "written; too few images to tell, the model is written with a warning saying how many would.",
    ),
    min_accuracy_ratio: Optional[float] = typer.Option(
        None, "--min-accuracy-ratio",
        help="Goal with --data: every data set's INT8 accuracy at least this fraction of FP32's (default 0.99).",
    ),
    goal: bool = typer.Option(
        True, "--goal/--no-goal", help="With --data: aim at and judge the default goal (agreement >= 98 %, every data set "
                                       ">= 0.99 of FP32) unless --min-agreement / --min-accuracy-ratio set one."),
    tune_count: Optional[int] = typer.Option(
        None, "--tune-count", help="With --data: training images per data set the mixed-precision search decides on "
                                   "(default: 2 x --eval-count; 0: all)."),
    max_float: float = typer.Option(0.25, "--max-float", help="Mixed precision keeps at most this fraction of the compute nodes float."),
    report: bool = typer.Option(False, "--report", help="Per-block sensitivity (JSON, Markdown, bar chart) under BUNDLE/int8_report/."),
    report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Write the --report files here instead."),
    sweep: str = typer.Option("", "--sweep", help="With --report: calibration counts to compare, e.g. 64,128,256,512,1024."),
    target: str = typer.Option(
        "tensorrt", "--target",
        help="Layout: tensorrt (explicit quantization for `export engine`) | onnxruntime (fast on ONNX Runtime's CPU).",
    ),
    quantizer: str = typer.Option("onnxruntime", "--quantizer", help="onnxruntime | modelopt (NVIDIA ModelOpt ONNX PTQ; tensorrt target)."),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="Weight scales per output channel or per tensor."),
    reduce_range: bool = typer.Option(False, "--reduce-range", help="7-bit weights (CPUs without VNNI)."),
    percentile: float = typer.Option(99.999, "--percentile", help="--method percentile: the percentage of |x| the range keeps."),
    qat: Optional[Path] = typer.Option(
        None, "--qat", help="A QAT run (`train --qat`): its fine-tuned weights and the int8 input ranges it was trained "
                            "with, instead of post-training calibration (tensorrt target)."),
    tune_images: Optional[Path] = typer.Option(
        None, "--tune-images", help="Without --data: a folder of images the mixed-precision search decides on, so that "
                                    "--images stays held out (default: it decides on --images)."),
) -> None:
    """Add INT8 Q/DQ ONNX models (every role) to a bundle, calibrated on real images.

    --target tensorrt (default): explicit quantization in the form TensorRT takes: Q/DQ on
    Conv/Gemm/MatMul inputs, symmetric int8 activations (per tensor) and weights (per channel), zero
    points 0. --target onnxruntime: Q/DQ on inputs and outputs, uint8 asymmetric activations, int8
    per-channel weights, int32 biases, which ONNX Runtime's CPU provider fuses into QLinearConv/QGemm
    (the TensorRT layout runs slower than FP32 there). A bundle holds one int8 model per role
    (model.int8.onnx); bundle.json records its target, the calibration (seed, images per data set) and
    the nodes mixed precision kept float. Reports top-1 agreement with FP32 and, with --data, the
    accuracy change per data set.
    """
    _require("export int8", "onnx", "onnxruntime")
    if calib is not None and data:
        raise UsageError("give either --calib DIR or --data NAME=PATH, not both")
    if calib is None and not data:
        raise UsageError("INT8 needs calibration images: --calib DIR or --data NAME=PATH")
    try:
        counts = [int(v) for v in sweep.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--sweep {sweep!r}: expected counts separated by commas, e.g. 64,256,1024") from None
    from erudite_edge.core.bundle import Bundle
    from export.int8 import Int8Options, make_int8

    options = Int8Options(
        method=method, target=target, quantizer=quantizer, per_channel=per_channel, reduce_range=reduce_range,
        seed=seed, batch=calib_batch, percentile=percentile,
        calib_images=calib, data=tuple(data or ()), calib_count=calib_count,
        images=images, eval_count=eval_count,
        min_agreement=_fraction(min_agreement), min_accuracy_ratio=min_accuracy_ratio, default_goal=goal, max_float=max_float,
        tuning_images=tune_images, tune_count=tune_count,
        report=report_dir if report_dir is not None else (bundle / "int8_report" if report or counts else None),
        sweep=tuple(counts), qat=qat,
    ).checked()
    result = make_int8(Bundle.load(bundle, verify=True), options, log=_log)
    _log(
        f"int8 target {result['target']}: {result['format']}, activations {result['activations']}, "
        f"weights {result['weights']}, bias {result['bias']}; recorded in bundle.json"
    )
    typer.echo(str(bundle))


def register(app: typer.Typer, export_app: typer.Typer) -> None:
    # SIGTERM like Ctrl-C: the temporary bundle or model file is removed, what existed before is kept
    nothing = interruptible("nothing was written; what existed before is unchanged")
    export_app.command("onnx")(nothing(onnx_command))
    export_app.command("fp16")(nothing(fp16_command))
    export_app.command("int8")(nothing(int8_command))
    export_app.command("zoo")(nothing(zoo_command))
