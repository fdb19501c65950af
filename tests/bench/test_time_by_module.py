"""benchmarks.studies.time_by_module: the parts of an erudite graph, and ONNX Runtime's profile split among them."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks.studies.time_by_module import classify_nodes, event_part, profile_models


def _erudite_like(path):
    """backbone Conv+Relu -> attention Conv+Sigmoid+Mul -> heads Conv+Relu -> gate Softmax -> G BatchNorm+Gemm."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.1, name)

    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["b0"], name="node_Conv_1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b0"], ["b1"], name="node_relu"),
        helper.make_node("Conv", ["b1", "wa"], ["a0"], name="node_conv2d_att"),
        helper.make_node("Sigmoid", ["a0"], ["a1"], name="node_sigmoid"),
        helper.make_node("Mul", ["b1", "a1"], ["a2"], name="node_mul"),
        helper.make_node("Conv", ["a2", "wh"], ["h0"], name="node_Conv_heads"),
        helper.make_node("Relu", ["h0"], ["h1"], name="node_relu_heads"),
        helper.make_node("Softmax", ["h1"], ["g0"], name="node_softmax", axis=1),
        helper.make_node("GlobalAveragePool", ["g0"], ["g1"], name="node_pool"),
        helper.make_node("Flatten", ["g1"], ["g2"], name="node_flatten"),
        helper.make_node("BatchNormalization", ["g2", "s", "bb", "m", "v"], ["c0"], name="node_bn"),
        helper.make_node("Gemm", ["c0", "wc"], ["logits"], name="node_linear", transB=1),
    ]
    inits = [w("w0", 8, 3, 3, 3), w("wa", 1, 8, 1, 1), w("wh", 16, 8, 1, 1), w("wc", 5, 16),
             numpy_helper.from_array(np.ones(16, np.float32), "s"), numpy_helper.from_array(np.zeros(16, np.float32), "bb"),
             numpy_helper.from_array(np.zeros(16, np.float32), "m"), numpy_helper.from_array(np.ones(16, np.float32), "v")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 5])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_parts_of_the_graph_and_onnx_runtime_renamed_kernels(tmp_path):
    parts = classify_nodes(_erudite_like(tmp_path / "m.onnx"))
    assert parts["node_Conv_1"] == parts["node_relu"] == "backbone"
    assert parts["node_conv2d_att"] == "backbone"  # before the Sigmoid: the attention's conv is fused with it at run time
    assert parts["node_sigmoid"] == parts["node_mul"] == "attention"
    assert parts["node_Conv_heads"] == parts["node_softmax"] == parts["node_flatten"] == "heads+gate"
    assert parts["node_bn"] == parts["node_linear"] == "classifier"
    assert event_part("fused node_linear", parts) == "classifier"
    assert event_part("h1_nchwc", parts) == "heads+gate"  # an NCHWc kernel is named after its output
    assert event_part("a1_nchwc", parts) == "attention"  # the attention's conv fused with its Sigmoid
    assert event_part("ReorderOutput_token_3", parts) is None  # a kernel ORT added: counted by position


def test_profile_splits_the_real_session_time_among_the_parts(tmp_path):
    path = _erudite_like(tmp_path / "m.onnx")
    got = profile_models({"a": path, "b": path}, batch=2, iters=4, warmup=1)
    for r in got.values():
        assert r["n"] == 4 and r["wall_p50_ms"] > 0 and r["kernels_p50_ms"] > 0
        assert sum(r["parts_p50_ms"].values()) <= r["kernels_p50_ms"] * 1.5  # medians of parts vs median of sums
        assert r["kernels_named_by_position"] <= 3  # only ORT's own reorders
        for part in ("backbone", "attention", "heads+gate", "classifier"):
            assert r["parts_p50_ms"][part] > 0, part
        assert r["parts_p50_ms"]["preprocess"] == 0
