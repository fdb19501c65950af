"""Small real bundles for the TensorRT tests (a tiny ONNX model per role, no torch) and the capability
sets of TensorRT 8.6, 10 and 11 as the build plan reads them (flag names from tensorrt-stubs 10.13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from erudite_edge.backends.tensorrt.build import TrtCapabilities
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec

LABELS = LabelSpace.build(["birds", "cars"], [["sparrow", "wren"], ["sedan", "coupe", "van"]])


def tiny_onnx(path: Path, num_outputs: int, size: int = 32, seed: int = 0) -> Path:
    """images [N,3,size,size] -> GlobalAveragePool -> Flatten -> Gemm -> logits [N,K]; dynamic batch."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((3, num_outputs)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(num_outputs).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_outputs])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_bundle(root: Path, kind: str = "erudite", size: int = 32) -> Bundle:
    root.mkdir(parents=True, exist_ok=True)
    bundle = Bundle.create(
        root, labels=LABELS, preprocess=PreprocessSpec.square(size), kind=kind, variant="test", backbone="tiny", opset=17
    )
    for role in bundle.roles():
        name = "model.onnx" if role == "main" else f"{role.replace(':', '.')}.onnx"
        tiny_onnx(root / name, bundle.expected_outputs(role), size)
        bundle.add_model(role, "fp32", name)
    bundle.save()
    return Bundle.load(root)


def onnx_input_shape(path: Path) -> list[int]:
    """The ONNX input's dims as TensorRT reports them: -1 for a symbolic dim."""
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]


# TensorRT 10.13's flag names (tensorrt-stubs 10.13.0.35.1); TensorRT 11 drops the weak-typing ones.
TRT10_BUILDER = frozenset(
    "FP16 BF16 INT8 INT4 FP8 FP4 TF32 DEBUG GPU_FALLBACK REFIT DISABLE_TIMING_CACHE SPARSE_WEIGHTS "
    "SAFETY_SCOPE OBEY_PRECISION_CONSTRAINTS PREFER_PRECISION_CONSTRAINTS DIRECT_IO "
    "REJECT_EMPTY_ALGORITHMS VERSION_COMPATIBLE EXCLUDE_LEAN_RUNTIME STRIP_PLAN WEIGHT_STREAMING".split()
)
TRT10_NETWORK = frozenset({"EXPLICIT_BATCH", "STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS", "PREFER_JIT_PYTHON_PLUGINS"})
TRT11_BUILDER = TRT10_BUILDER - {
    "FP16", "BF16", "INT8", "INT4", "FP8", "FP4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"
}
TRT11_NETWORK = frozenset({"STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS", "PREFER_JIT_PYTHON_PLUGINS"})
TRT10 = TrtCapabilities("10.3.0.30", TRT10_BUILDER, TRT10_NETWORK)
TRT11 = TrtCapabilities("11.0.0.4", TRT11_BUILDER, TRT11_NETWORK)
TRT86 = TrtCapabilities("8.6.2.3", TRT10_BUILDER, frozenset({"EXPLICIT_BATCH", "STRONGLY_TYPED"}))
