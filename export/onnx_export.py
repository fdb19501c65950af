"""Checkpoint -> ONNX bundle: trace the deployed graph, check it, prove parity, write the bundle whole.

Exporter: torch.onnx.export with dynamo=True (torch.export -> ONNX IR, then onnxscript's optimiser).
In torch 2.14 this is the default and maintained path; the TorchScript exporter (dynamo=False) is
deprecated and slated for removal. On these models the dynamo graph is the cleaner one for ONNX
Runtime and TensorRT: BatchNorm folded into the convolutions, global max pooling as one ReduceMax,
and every Reshape a constant shape with -1 for the batch (no Shape/Gather/Concat chains). The
exporter translates at opset 18; a lower --opset (17 is the default, for TensorRT 8.5/8.6 on
JetPack 5) is reached with ONNX's version converter applied to the final, optimised graph (torch's
own fallback converts an earlier form and leaves some backbones, MobileNetV3's, at 18), and the
result is checked to really be at it. The IR version is lowered to the oldest the opset allows.
Weights stay inside the .onnx file (no external-data side file), so the bundle's sha256 covers them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import onnx

from erudite_edge.core.bundle import ATTENTION_OUTPUT, INPUT_NAME, OUTPUT_NAME, Bundle, default_filename, fine_role
from erudite_edge.core.fileio import USER_OS_ERRORS, atomic_directory, atomic_path, os_error_line, remove_stale_temporaries
from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import EruditeError, UsageError
from export.graph_input import prepend_uint8_input
from export.images import check_inputs, host_float_batch
from export.metadata import check_output_size, model_props, set_metadata
from export.parity import check_fp32_parity

MIN_OPSET = 17
DEFAULT_OPSET = 17
NATIVE_OPSET = 18  # the opset torch's ONNX translation library is written at
EXPORTER = "torch.onnx.export(dynamo=True)"
Log = Callable[[str], None]


class ExportError(EruditeError):
    """torch.onnx could not produce a valid model."""


def _quiet(_: str) -> None:
    pass


@contextlib.contextmanager
def _exporter_logs_muted() -> Iterator[None]:
    """The exporter and torch.export log warnings meant for debugging the trace; what matters to the
    user (opset, validity, parity) is checked and reported below."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# Reductions that gained the noop_with_empty_axes attribute (and an axes input) in opset 18.
_REDUCE_18 = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}


def _drop_reduce_noop_attribute(model: onnx.ModelProto, opset: int) -> None:
    """ONNX's 18 -> 17 converter moves a reduction's axes input to the attribute but leaves the
    opset-18-only noop_with_empty_axes attribute behind, which opset 17 rejects. With explicit axes
    (or the default 0) the attribute changes nothing, so it is removed; a no-op reduction over empty
    axes has no opset-17 form."""
    if opset >= 18:
        return
    for node in model.graph.node:
        if node.op_type not in _REDUCE_18 or node.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: a for a in node.attribute}
        noop = attrs.get("noop_with_empty_axes")
        if noop is None:
            continue
        has_axes = "axes" in attrs and len(attrs["axes"].ints) > 0
        if noop.i and not has_axes:
            raise ExportError(f"{node.op_type} node {node.name} is a no-op reduction with no opset-{opset} form; use --opset 18")
        node.attribute.remove(noop)


def portable_ir_version(model: onnx.ModelProto) -> None:
    """Declare the oldest ONNX IR version the model's opsets allow. onnx stamps its newest (10+),
    which ONNX Runtime before 1.18 refuses, and older runtimes are what JetPack images ship; the
    models use nothing newer (plain tensors of float, float16, int8, int64; no functions)."""
    if len(model.functions):
        return
    oldest = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    model.ir_version = min(int(model.ir_version), int(oldest))


def check_opset(opset: int) -> int:
    if int(opset) < MIN_OPSET:
        raise UsageError(f"--opset {opset} is too old: erudite-edge exports opset {MIN_OPSET} or newer")
    return int(opset)


def model_opset(model: onnx.ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def to_onnx(module: Any, spec: PreprocessSpec, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace `module` (eval mode, float32, CPU) to an ONNX model with input "images" and output "logits"
    [batch,K], the batch axis dynamic; checked with onnx.checker (full check). The input is what `spec`
    says: float32 [batch,3,H,W], or for dtype uint8 [batch,H,W,3] bytes, normalised by the graph's first
    nodes (export/graph_input.py). A module built `with_attention` (EruditeInference) gives the second
    output "attention" [batch,groups,h,w]."""
    import torch

    outputs = [OUTPUT_NAME] + ([ATTENTION_OUTPUT] if getattr(module, "with_attention", False) else [])
    opset = check_opset(opset)
    if spec.dtype == "float32" and spec.layout != "NCHW":
        raise UsageError(f"the preprocessing layout is {spec.layout}; the exporter writes NCHW float32 or NHWC uint8 models only")
    h, w = spec.input_size
    module = module.eval().float().cpu()
    example = (torch.randn(2, 3, h, w),)  # batch 2: a batch of 1 could be specialised away
    batch = torch.export.Dim("batch", min=1)
    try:
        with _exporter_logs_muted(), torch.no_grad():
            program = torch.onnx.export(
                module,
                example,
                None,
                dynamo=True,
                verbose=False,
                opset_version=max(opset, NATIVE_OPSET),
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_shapes=({0: batch},),
                external_data=False,
                optimize=True,
            )
    except Exception as e:  # torch.export / onnxscript raise many types; the user needs one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"torch.onnx.export failed: {first}") from e
    if program is None:  # only the TorchScript exporter returns nothing
        raise ExportError("torch.onnx.export returned no ONNX program")
    model = program.model_proto
    if model_opset(model) > opset:
        try:
            model = onnx.version_converter.convert_version(model, opset)
        except Exception as e:  # the converter raises RuntimeError / ConvertError
            raise ExportError(
                f"cannot convert the exported graph from opset {model_opset(model)} to {opset} "
                f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); try --opset {NATIVE_OPSET}"
            ) from e
        _drop_reduce_noop_attribute(model, opset)
    got = model_opset(model)
    if got != opset:
        raise ExportError(f"the exporter produced opset {got}, not the requested {opset}; try --opset {got}")
    if spec.dtype == "uint8":
        prepend_uint8_input(model, spec)
    portable_ir_version(model)
    _check_io(model, spec, outputs)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported ONNX model is invalid: {str(e).strip().splitlines()[0]}") from e
    return model


def _check_io(model: onnx.ModelProto, spec: PreprocessSpec, outputs: Sequence[str] = (OUTPUT_NAME,)) -> None:
    ins, outs = model.graph.input, model.graph.output
    if [i.name for i in ins] != [INPUT_NAME] or [o.name for o in outs] != list(outputs):
        raise ExportError(
            f"exported graph has inputs {[i.name for i in ins]} and outputs {[o.name for o in outs]}; "
            f"expected [{INPUT_NAME!r}] and {list(outputs)}"
        )
    dims = ins[0].type.tensor_type.shape.dim
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    sample = list(spec.sample_shape)
    if len(dims) != 4 or dims[0].HasField("dim_value") or fixed[1:] != sample:
        raise ExportError(f"exported input shape is {fixed}; expected [batch, {', '.join(map(str, sample))}] with a dynamic batch")
    want = onnx.TensorProto.UINT8 if spec.dtype == "uint8" else onnx.TensorProto.FLOAT
    if ins[0].type.tensor_type.elem_type != want:
        raise ExportError(f"exported input type is {onnx.TensorProto.DataType.Name(ins[0].type.tensor_type.elem_type)}; expected {spec.dtype}")


def write_model(model: onnx.ModelProto, path: Path, props: dict[str, str]) -> None:
    """Stamp the bundle's facts into the model and write it whole (temporary name, then rename)."""
    set_metadata(model, props)
    with atomic_path(path) as tmp:
        onnx.save_model(model, os.fspath(tmp))


def export_roles(
    out_dir: str | os.PathLike[str],
    graphs: Sequence[tuple[str, Any]],
    *,
    bundle_kwargs: dict[str, Any],
    opset: int = DEFAULT_OPSET,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    data: Sequence[str] | None = None,
    parity_count: int = 32,
    overwrite: bool = False,
    log: Log | None = None,
) -> Bundle:
    """Export each (role, torch module) into a new bundle directory, parity-checking every one.

    The bundle is built under a temporary name beside `out_dir` and renamed only when every model has
    passed; on any error nothing is left behind (and an existing `out_dir` is kept)."""
    log = log or _quiet
    opset = check_opset(opset)
    if parity_count < 1:
        raise UsageError(f"--parity-count must be at least 1, not {parity_count}")
    out = Path(out_dir)
    if overwrite:
        Bundle.check_replaceable(out)
    remove_stale_temporaries(out.parent, out.name)
    try:
        return _export_roles_into(out, graphs, bundle_kwargs=bundle_kwargs, opset=opset, images=images, data=data,
                                  parity_count=parity_count, overwrite=overwrite, log=log)
    except OSError as e:  # disk full, read-only folder, permission denied: the temporary bundle is already gone
        if e.errno not in USER_OS_ERRORS:
            raise
        raise UsageError(os_error_line(e, out, "cannot write the bundle") + "; nothing was written") from e


def _export_roles_into(out: Path, graphs: Sequence[tuple[str, Any]], *, bundle_kwargs: dict[str, Any], opset: int,
                       images: Any, data: Sequence[str] | None, parity_count: int, overwrite: bool, log: Log) -> Bundle:
    with atomic_directory(out, overwrite=overwrite) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # a temporary directory is private; a bundle is an ordinary folder
        bundle = Bundle.create(tmp, opset=opset, **bundle_kwargs)
        inputs = check_inputs(bundle.preprocess, images=images, data=data, count=parity_count, log_fn=log)
        if not inputs.real:
            log(f"warning: parity is checked on {inputs.source}; pass --images DIR or --data NAME=PATH for real images")
        if inputs.skipped:
            log(f"warning: {inputs.skipped} unreadable images skipped")
        parity: dict[str, dict[str, Any]] = {}
        for role, module in graphs:
            name = default_filename(role, "fp32")
            log(f"exporting {role} -> {name} (opset {opset}, {EXPORTER})")
            model = to_onnx(module, bundle.preprocess, opset)
            check_output_size(bundle, role, model, name)
            write_model(model, tmp / name, model_props(bundle, role, "fp32"))
            with_attention = bool(getattr(module, "with_attention", False))
            if with_attention:  # the logits' parity as for any export; the masks' just below
                module.with_attention = False
            try:
                report = check_fp32_parity(module, tmp / name, inputs.batch, inputs.source, label=role,
                                           torch_batch=host_float_batch(inputs.batch, bundle.preprocess))
            finally:
                if with_attention:
                    module.with_attention = True
            log(f"parity {role}: {report.summary()}")
            info: dict[str, Any] = {"exporter": EXPORTER, "opset": opset}
            if with_attention:
                info["extra_outputs"] = [ATTENTION_OUTPUT]
                bundle.meta["attention"] = check_attention_parity(module, tmp / name, inputs.batch,
                                                                    host_float_batch(inputs.batch, bundle.preprocess))
                log(f"parity {role} attention masks: max |diff| {bundle.meta['attention']['parity_max_abs_diff']:.2g}")
            bundle.add_model(role, "fp32", name, info=info)
            parity[role] = {"fp32": report.to_dict()}
        bundle.meta["parity"] = parity
        store_check_set(bundle, inputs, images, data, log)
        bundle.save()
    return Bundle.load(out)


ATTENTION_TOLERANCE = 1e-4  # the masks are sigmoids in [0, 1]


def check_attention_parity(module: Any, onnx_path: Path, batch: Any, torch_batch: Any = None) -> dict[str, Any]:
    """The attention output of the ONNX model against PyTorch's masks on the parity inputs; ParityError
    (nothing written) beyond ATTENTION_TOLERANCE. Returns what bundle.json records about the output.
    `torch_batch`: PyTorch's float32 NCHW form of `batch` where the ONNX model takes uint8 bytes."""
    import numpy as np
    import torch

    from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner
    from erudite_edge.core.compare import ParityError

    with torch.no_grad():
        ref = module(torch.from_numpy(np.ascontiguousarray(batch if torch_batch is None else torch_batch,
                                                          dtype=np.float32)))[1].numpy()
    with OnnxRuntimeRunner(onnx_path, providers=["CPUExecutionProvider"]) as runner:
        _, got = runner.infer_attention(batch)
    diff = float(np.abs(ref - got).max())
    if diff > ATTENTION_TOLERANCE:
        raise ParityError(f"the ONNX attention output does not match PyTorch's masks (max |diff| {diff:.3g} > "
                          f"{ATTENTION_TOLERANCE}); nothing was written")
    return {"output": ATTENTION_OUTPUT, "groups": int(got.shape[1]), "mask_size": [int(v) for v in got.shape[2:]],
            "what": "the spatial attention's group masks (sigmoid, paper Eq. 7), before the heads",
            "parity_max_abs_diff": diff}


def store_check_set(bundle: Bundle, parity_inputs: Any, images: Any, data: Sequence[str] | None, log: Log) -> None:
    """The check set every backend and engine build is compared with later (erudite_edge/core/check_set.py):
    CHECK_COUNT inputs from the same images as parity, and the FP32 ONNX models' outputs on them."""
    from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner
    from erudite_edge.core.check_set import DEFAULT_COUNT, write_check_set

    inputs = parity_inputs
    if len(inputs.batch) < DEFAULT_COUNT:
        inputs = check_inputs(bundle.preprocess, images=images, data=data, count=DEFAULT_COUNT, log_fn=_quiet)

    def fp32_logits(role: str, x: Any) -> Any:
        with OnnxRuntimeRunner(bundle.path(bundle.entry(role, "fp32", "onnx"))) as runner:
            return runner.infer_chunked(x)

    record = write_check_set(bundle, inputs.batch, inputs.source, inputs.real, fp32_logits)
    log(f"check set: {record['count']} inputs and the FP32 outputs stored in {record['inputs']['file'].split('/')[0]}/")


def checkpoint_facts(ckpt: Any) -> dict[str, Any]:
    """What bundle.json records about where the model came from."""
    meta = ckpt.meta
    return {
        "checkpoint": os.path.abspath(ckpt.path),
        **{k: meta[k] for k in ("epoch", "metrics", "step") if k in meta},
    }


INPUT_DTYPES = ("uint8", "float32")
DEFAULT_INPUT = "uint8"


def check_input_dtype(input_dtype: str) -> str:
    if input_dtype not in INPUT_DTYPES:
        raise UsageError(f"--input {input_dtype!r} unknown; one of {', '.join(INPUT_DTYPES)}")
    return input_dtype


def bundle_kwargs_for(ckpt: Any, kind: str, input_dtype: str = DEFAULT_INPUT) -> dict[str, Any]:
    """`input_dtype` "uint8": the models take NHWC uint8 RGB and normalise in their graph; "float32":
    NCHW floats normalised on the host (the checkpoint's own spec)."""
    spec = ckpt.preprocess.as_input(check_input_dtype(input_dtype)) if input_dtype != ckpt.preprocess.dtype else ckpt.preprocess
    return {
        "labels": ckpt.labels,
        "preprocess": spec,
        "kind": kind,
        "variant": ckpt.variant,
        "backbone": ckpt.model_config.backbone,
        "extra": {"source": checkpoint_facts(ckpt), "model": ckpt.model_config.to_dict()},
    }


def check_out(out_dir: str | os.PathLike[str], overwrite: bool, checkpoint: Path) -> None:
    """Refuse an existing --out (unless --overwrite) before any work, and never let --overwrite
    replace a folder that holds the checkpoint being exported."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise UsageError(f"{out} already exists; choose another --out or pass --overwrite")
    if out.exists() and Path(checkpoint).resolve().is_relative_to(out.resolve()):
        raise UsageError(f"--out {out} holds the checkpoint {checkpoint}; --overwrite would delete it")
    if overwrite:
        Bundle.check_replaceable(out)


def build_checkpoint_model(ckpt: Any) -> Any:
    """The checkpoint's torch model in eval mode; a config this code cannot build is the checkpoint's fault."""
    from train.checkpoint import CheckpointError

    try:
        return ckpt.build_model()
    except ValueError as e:  # unknown variant, backbone, gate...
        raise CheckpointError(f"{ckpt.path}: cannot build its model ({e})") from e


def export_checkpoint(
    checkpoint_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    zoo: bool = False,
    opset: int = DEFAULT_OPSET,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    data: Sequence[str] | None = None,
    parity_count: int = 32,
    overwrite: bool = False,
    log: Log | None = None,
    with_attention: bool = False,
    input_dtype: str = DEFAULT_INPUT,
) -> Bundle:
    """A run (a run directory, its best/last checkpoint, or a .safetensors file) -> a bundle.

    An erudite run gives kind "erudite" with model.onnx (role "main"): the inference graph without the
    auxiliary classifiers. With `zoo=True`, a Single zoo run gives kind "zoo": coarse.onnx (role
    "coarse", logits over data sets) and fine.<dataset>.onnx (role "fine:<dataset>", logits over that
    data set's own classes). Every model is parity-checked against PyTorch. `with_attention`: model.onnx
    has the attention masks as a second output "attention" (recorded in bundle.json's "attention").
    `input_dtype`: "uint8" (NHWC
    bytes, normalised in the graph) or "float32" (NCHW, normalised on the host)."""
    from train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint_path)
    if ckpt.is_zoo and not zoo:
        raise UsageError(f"{ckpt.path} is a Single zoo checkpoint; export it with `erudite-edge export zoo`")
    if zoo and not ckpt.is_zoo:
        raise UsageError(
            f"{ckpt.path} is a {ckpt.variant!r} checkpoint, not a Single zoo; export it with `erudite-edge export onnx`"
        )
    check_opset(opset)
    check_input_dtype(input_dtype)
    check_out(out_dir, overwrite, ckpt.path)
    model = build_checkpoint_model(ckpt)
    if with_attention and (zoo or getattr(model, "attention", None) is None):
        raise UsageError(f"--with-attention: the {ckpt.variant!r} variant of {ckpt.path} has no spatial attention layer")
    if zoo:
        graphs = [("coarse", model.coarse.eval())]
        graphs += [(fine_role(ds), fine.eval()) for ds, fine in zip(ckpt.labels.datasets, model.fine)]
    else:
        graphs = [("main", model.inference_graph(with_attention=with_attention).eval())]
    kwargs = bundle_kwargs_for(ckpt, "zoo" if zoo else "erudite", input_dtype)
    if ckpt.meta.get("sparsity"):  # prune --sparsity 2:4: what the weights are now (`export engine` reads it)
        from train.sparsity import layers_2_4

        layers = {role: layers_2_4(graph) for role, graph in graphs}
        kwargs["extra"]["sparsity"] = {"pattern": ckpt.meta["sparsity"]["pattern"], "layers": layers,
                                       "count": sum(map(len, layers.values()))}
    return export_roles(
        out_dir,
        graphs,
        bundle_kwargs=kwargs,
        opset=opset,
        images=images,
        data=data,
        parity_count=parity_count,
        overwrite=overwrite,
        log=log,
    )
