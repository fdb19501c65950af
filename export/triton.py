"""`erudite-edge export triton` (--kind graph): a bundle's model graph as a Triton Inference Server model
repository entry, tensors in and logits out (the fast path: no decoding or resizing on the server).
`--kind classifier` (export/triton_classifier.py) writes a Python-backend model that takes image bytes.

    REPO/
      NAME/                    ONNX Runtime backend (any GPU or CPU Triton runs on)
        config.pbtxt           backend "onnxruntime", max_batch_size, dynamic batching, the ONNX graph's
                               input/output names, data types and dims (batch axis left out), labels.txt
        labels.txt             one class per line in the joint label order (dataset/class), the model's
                               output order: Triton's classification extension reads it (label_filename)
        1/model.onnx           the bundle's ONNX model of the asked precision
      NAME_tensorrt/           only when the bundle holds a TensorRT engine of that precision
        config.pbtxt           backend "tensorrt", max_batch_size within the engine's optimisation profile
        labels.txt
        1/model.plan           the engine: it runs only on the GPU and TensorRT version it was built with
                               (its sidecar, copied as model.plan.json, says which)

`--overwrite` replaces, in a model folder an earlier export wrote, only config.pbtxt, labels.txt and 1/;
other version folders (2/, ...) and files a user added there stay (fileio.atomic_merge).

Triton's config is protobuf text format (model_config.proto). It is written here as text, not through
tritonclient's generated classes, so exporting needs only `onnx`; the tests parse it back with
tritonclient's model_config_pb2 and compare it with the ONNX graph.

The model's output is the logits (no softmax); the top-k classes that Triton's classification extension
returns rank the same either way.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from erudite_edge.core.bundle import Bundle
from erudite_edge.core.fileio import atomic_merge
from erudite_edge.errors import BundleError, UsageError

MARKER = "# written by erudite-edge export triton"
DEFAULT_MAX_BATCH = 8
DEFAULT_PROFILE_MAX = 32  # the batch profile engines are built with (erudite_edge/backends/tensorrt/build.py DEFAULT_BATCH 1:8:32)

# ONNX TensorProto element types -> Triton data types (model_config.proto DataType)
TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32", 7: "TYPE_INT64",
                9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # a Triton DataType name
    dims: tuple[int, ...]  # without the batch axis; -1 for a dynamic dimension
    batch: int | None  # the batch axis: a fixed size, or None when dynamic


def graph_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs of an ONNX graph (initializers excluded) as Triton sees them."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise BundleError(f"{path}: not a readable ONNX model ({e})") from e
    inits = {i.name for i in model.graph.initializer}

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        if t.elem_type not in TRITON_TYPES:
            raise BundleError(f"{path}: tensor {v.name} has ONNX element type {t.elem_type}, which Triton has no type for")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if not dims:
            raise BundleError(f"{path}: tensor {v.name} has no batch axis")
        return TensorSpec(v.name, TRITON_TYPES[t.elem_type], tuple(dims[1:]), dims[0] if dims[0] > 0 else None)

    inputs = [spec(v) for v in model.graph.input if v.name not in inits]
    return inputs, [spec(v) for v in model.graph.output]


def _tensor_block(kind: str, tensors: list[TensorSpec], labels: str | None = None) -> str:
    items = []
    for t in tensors:
        lines = [f'    name: "{t.name}"', f"    data_type: {t.data_type}", f"    dims: [ {', '.join(str(d) for d in t.dims)} ]"]
        if labels:
            lines.append(f'    label_filename: "{labels}"')
        items.append("  {\n" + "\n".join(lines) + "\n  }")
    return f"{kind} [\n" + ",\n".join(items) + "\n]\n"


def config_text(name: str, backend: str, max_batch: int, inputs: list[TensorSpec], outputs: list[TensorSpec],
                model_file: str, note: str, queue_delay_us: int = 100) -> str:
    """config.pbtxt for one model (protobuf text format)."""
    head = f"{MARKER}\n# {note}\n"
    return (
        head
        + f'name: "{name}"\n'
        + f'backend: "{backend}"\n'
        + f"max_batch_size: {max_batch}\n"
        + f'default_model_filename: "{model_file}"\n'
        + _tensor_block("input", inputs)
        + _tensor_block("output", outputs, labels="labels.txt")
        + "dynamic_batching {\n"
        + f"  max_queue_delay_microseconds: {queue_delay_us}\n"
        + "}\n"
    )


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise UsageError(f"--name {name!r}: a Triton model name of letters, digits, '_', '-' and '.'")
    return name


def replaceable(path: Path) -> bool:
    """Only a model folder this command wrote (its config.pbtxt carries MARKER) may be replaced."""
    try:
        return (path / "config.pbtxt").read_text(encoding="utf-8", errors="replace").startswith(MARKER)
    except OSError:
        return False


def batch_limit(bundle: Bundle, onnx_batch: int | None, engine: Any | None) -> tuple[int, str]:
    """The largest batch the export may promise, and where that limit comes from."""
    if engine is not None:
        from erudite_edge.backends.tensorrt.sidecar import read_sidecar

        sc = read_sidecar(bundle.root / engine.file)
        return sc.batch_range[2], f"the {engine.precision} engine's optimisation profile ({':'.join(map(str, sc.batch_range))})"
    if onnx_batch is not None:
        return onnx_batch, f"the ONNX model's fixed batch axis ({onnx_batch})"
    return DEFAULT_PROFILE_MAX, f"the batch profile engines are built with (1:8:{DEFAULT_PROFILE_MAX})"


def export_triton(bundle: Bundle, out: Path, precision: str = "fp32", max_batch: int | None = None,
                  name: str | None = None, overwrite: bool = False,
                  log: Callable[[str], None] = lambda m: None) -> list[Path]:
    """Write the model repository entries for `bundle` under `out`; returns the model folders written."""
    if bundle.kind != "erudite":
        raise UsageError(f"{bundle.root}: a {bundle.kind} bundle; Triton export takes an erudite bundle (one model)")
    name = check_name(name or "erudite")
    entry = bundle.entry("main", precision, "onnx")
    onnx_path = bundle.path(entry)
    inputs, outputs = graph_io(onnx_path)
    if len(outputs) != 1 or outputs[0].dims != (bundle.labels.num_classes,):
        raise BundleError(f"{onnx_path}: expected one output of {bundle.labels.num_classes} logits, "
                          f"got {[(o.name, o.dims) for o in outputs]}")
    engine = bundle.find("main", precision, "engine")
    limit, why = batch_limit(bundle, inputs[0].batch, engine)
    if max_batch is None:
        max_batch = min(DEFAULT_MAX_BATCH, limit)
    if max_batch < 1:
        raise UsageError(f"--max-batch {max_batch}: give 1 or more")
    if max_batch > limit:
        raise UsageError(f"--max-batch {max_batch} is above {why}; give --max-batch {limit} or less"
                         + (" (or rebuild the engine with a larger --batch)" if engine is not None else ""))

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder; give the Triton model repository's folder")
    labels_txt = "".join(n + "\n" for n in bundle.labels.joint_names)
    written = []
    models = [(name, "onnxruntime", onnx_path, "model.onnx")]
    if engine is not None:
        models.append((f"{name}_tensorrt", "tensorrt", bundle.path(engine), "model.plan"))
    for model_name, backend, src, filename in models:
        target = out / model_name
        if target.exists() and not (overwrite and replaceable(target)):
            hint = " (it was not written by export triton: move it away yourself)" if overwrite else "; pass --overwrite"
            raise UsageError(f"{target} already exists{hint}")
    out.mkdir(parents=True, exist_ok=True)
    engine_io = (inputs, outputs)
    if engine is not None:
        from erudite_edge.backends.tensorrt.sidecar import read_sidecar

        source = bundle.root / read_sidecar(bundle.root / engine.file).source_onnx
        if source.is_file():
            engine_io = graph_io(source)  # the engine's tensors are those of the ONNX it was built from
    for model_name, backend, src, filename in models:
        ins, outs = (inputs, outputs) if backend == "onnxruntime" else engine_io
        note = (f"{bundle.root.name}: {precision} {'ONNX model' if backend == 'onnxruntime' else 'TensorRT engine'}; "
                f"outputs logits over {bundle.labels.num_classes} classes in labels.txt order")
        with atomic_merge(out / model_name) as tmp:  # --overwrite: only what is written here is replaced
            (tmp / "1").mkdir()
            shutil.copyfile(src, tmp / "1" / filename)
            if backend == "tensorrt":
                sidecar = Path(str(src) + ".json")
                if sidecar.is_file():
                    shutil.copyfile(sidecar, tmp / "1" / (filename + ".json"))
            (tmp / "labels.txt").write_text(labels_txt, encoding="utf-8")
            (tmp / "config.pbtxt").write_text(
                config_text(model_name, backend, max_batch, ins, outs, filename, note), encoding="utf-8")
        written.append(out / model_name)
        log(f"triton: {out / model_name} ({backend}, max_batch_size {max_batch}, {precision})")
    return written


__all__ = ["MARKER", "TensorSpec", "check_name", "config_text", "export_triton", "graph_io", "replaceable"]
