"""A uint8 NHWC input for an exported model: Cast, Transpose, Mul and Add as the graph's first nodes.

    images (uint8 [N, H, W, 3], RGB)
      -> preprocess/cast       Cast to float32
      -> preprocess/transpose  Transpose to [N, 3, H, W]
      -> preprocess/scale      Mul by scale / std              (per channel: constant [1, 3, 1, 1])
      -> preprocess/shift      Add -mean / std                 (per channel)
      -> the float32 model exported from PyTorch

(x * scale - mean) / std is written as x * (scale / std) + (-mean / std): one multiply and one add per
value, the same value to float32 rounding (parity against PyTorch checks it).

The order is measured (ONNX Runtime 1.32 CPU, batch 8 at 224 px, ms per image, loaded 2-core VM):
Cast, Mul, Add on NHWC then Transpose 8.6 (per-channel constants broadcast over an innermost axis of 3
are slow); Cast, Transpose, then Mul, Add on NCHW 3.4 (this one); Transpose of the bytes first, then
Cast, Mul, Add 0.6; host numpy normalisation as before about 14. The fastest order is not taken: TensorRT
takes a UINT8 network input only into a cast to float or half (its DataType::kUINT8 documentation), so
the Cast comes first.

Why in the ONNX graph rather than in a torch wrapper traced with the model: the exporter is then left
exactly as it is for float32 bundles (the same traced graph, the same optimiser passes), the nodes
carry stable names ("preprocess/...") that INT8 quantization excludes by name (the Cast path must
stay float: quantize_static would otherwise put a Q/DQ pair on the normalised image before the first
Conv's own, and ONNX Runtime's CPU layout would quantize the Mul and Add themselves), and parity
compares the uint8 graph with the untouched PyTorch module on the host's float32 preprocessing of the
same resized images: the check covers both the graph's normalisation and the model.
ONNX's own `onnx.compose` merges whole graphs by matching outputs to inputs; prepending four nodes
to one graph is simpler with onnx.helper directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from erudite_edge.core.preprocess import PreprocessSpec

PREFIX = "preprocess/"


def preprocess_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the input-normalisation nodes this module added (empty for a float32-input model)."""
    return [n.name for n in model.graph.node if n.name.startswith(PREFIX)]


def prepend_uint8_input(model: onnx.ModelProto, spec: PreprocessSpec) -> onnx.ModelProto:
    """Turn a model whose single input is float32 NCHW into one taking uint8 NHWC RGB (in place; returned).

    `spec` gives the scale, mean and std (channel order RGB: a BGR-trained model is not handled here)."""
    if spec.channel_order != "RGB":
        raise ValueError("the uint8 input is RGB; this model was trained on BGR inputs")
    graph = model.graph
    if len(graph.input) != 1:
        raise ValueError(f"expected one graph input, found {len(graph.input)}")
    inp = graph.input[0]
    name = inp.name
    tt = inp.type.tensor_type
    if tt.elem_type != TensorProto.FLOAT:
        raise ValueError(f"input {name!r} is not float32; it already has a uint8 input?")
    dims = list(tt.shape.dim)
    if len(dims) != 4 or (dims[1].HasField("dim_value") and dims[1].dim_value != 3):
        raise ValueError(f"input {name!r} is not [N, 3, H, W]")
    float_name = f"{PREFIX}normalized"
    if any(out.name == name for out in graph.output):
        raise ValueError(f"input {name!r} is also a graph output")
    _rename_uses(graph, name, float_name)  # the model now reads the transposed, normalised tensor

    std = np.asarray(spec.std, dtype=np.float64)
    mul = (spec.scale / std).astype(np.float32).reshape(1, 3, 1, 1)
    add = (-np.asarray(spec.mean, dtype=np.float64) / std).astype(np.float32).reshape(1, 3, 1, 1)
    graph.initializer.extend([numpy_helper.from_array(mul, f"{PREFIX}scale_value"),
                              numpy_helper.from_array(add, f"{PREFIX}shift_value")])
    nodes = [
        helper.make_node("Cast", [name], [f"{PREFIX}float"], name=f"{PREFIX}cast", to=TensorProto.FLOAT),
        helper.make_node("Transpose", [f"{PREFIX}float"], [f"{PREFIX}nchw"], name=f"{PREFIX}transpose", perm=[0, 3, 1, 2]),
        helper.make_node("Mul", [f"{PREFIX}nchw", f"{PREFIX}scale_value"], [f"{PREFIX}scaled"], name=f"{PREFIX}scale"),
        helper.make_node("Add", [f"{PREFIX}scaled", f"{PREFIX}shift_value"], [float_name], name=f"{PREFIX}shift"),
    ]
    _replace(graph.node, nodes + list(graph.node))
    batch, _, h, w = dims
    _retype_input(graph, TensorProto.UINT8, [batch, h, w, 3])
    return model


def strip_uint8_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """The inverse of `prepend_uint8_input` (in place; returned): remove the preprocess/ nodes and give the
    model its float32 NCHW input back, already normalised, under the same input name. For consumers that
    normalise themselves (DeepStream's nvinfer). A model without those nodes is returned unchanged."""
    graph = model.graph
    if not preprocess_nodes(model):
        return model
    inp = graph.input[0]
    _rename_uses(graph, f"{PREFIX}normalized", inp.name)
    for field in (graph.node, graph.initializer, graph.value_info):
        _replace(field, [x for x in field if not x.name.startswith(PREFIX)])
    batch, h, w, _ = list(inp.type.tensor_type.shape.dim)
    _retype_input(graph, TensorProto.FLOAT, [batch, 3, h, w])
    return model


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node that reads tensor `old` reads `new` instead."""
    for node in graph.node:
        for i, x in enumerate(node.input):
            if x == old:
                node.input[i] = new


def _replace(field: Any, items: list[Any]) -> None:
    """Set a repeated protobuf field to `items` (in place)."""
    items = list(items)
    del field[:]
    field.extend(items)


def _retype_input(graph: onnx.GraphProto, elem_type: int, dims: list[Any]) -> None:
    """Give the first graph input (same name) a new element type and shape; each dim an int, None or an
    existing TensorShapeProto.Dimension (kept as it is: a symbolic batch stays symbolic)."""
    old = graph.input[0]
    new = helper.make_tensor_value_info(old.name, elem_type, [d if isinstance(d, int) else None for d in dims])
    for slot, d in zip(new.type.tensor_type.shape.dim, dims):
        if isinstance(d, onnx.TensorShapeProto.Dimension):
            slot.CopyFrom(d)
    graph.input.remove(old)
    graph.input.insert(0, new)

__all__ = ["PREFIX", "prepend_uint8_input", "preprocess_nodes", "strip_uint8_input"]
