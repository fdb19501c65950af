"""`export int8 --target`: the default TensorRT layout is unchanged; `--target onnxruntime` writes the
layout ONNX Runtime's CPU provider fuses into integer kernels (QLinearConv / QGemm), which still
agrees with FP32 on real photographs; the TensorRT engine builder refuses an int8 model of another
target in one line.

The tiny trained erudite bundle (and its data folder, the calibration images) is test_export's
`trained` fixture: a few training steps on views of seven scikit-image photographs."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from erudite_edge.backends.tensorrt.build import select_sources
from erudite_edge.core.bundle import Bundle
from erudite_edge.errors import BundleError
from export.int8 import Int8Options, make_int8
from trained_model import cli, distinct_predictions, one_error_line, run_onnx

pytestmark = pytest.mark.slow  # trains the tiny model (trained) and quantizes it


def _copy(trained: dict, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(trained["bundle"], dst)
    return dst


def _optimised_ops(path: Path, tmp_path: Path) -> Counter[str]:
    """The op types of the graph ONNX Runtime's CPU provider actually runs (extended optimisations:
    the QDQ fusions, without the machine-specific NCHWc layout)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / f"optimised.{path.name}")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def test_onnxruntime_target_fuses_into_integer_kernels_and_agrees(trained, tmp_path, capsys, real_bytes):
    out = _copy(trained, tmp_path)
    calib = trained["root"] / "data"
    rc, stdout, err = cli(
        capsys, "export", "int8", "--bundle", out, "--calib", calib, "--calib-count", "48", "--target", "onnxruntime"
    )
    assert rc == 0, err
    assert stdout.strip() == str(out)
    assert "int8 target onnxruntime" in err and "uint8 asymmetric" in err  # the choice, in the command's output

    bundle = Bundle.load(out, verify=True)
    int8_entries = [m for m in bundle.models if m.precision == "int8"]
    assert len(int8_entries) == 1  # one int8 model per role
    entry = int8_entries[0]
    assert entry.file == "model.int8.onnx"
    assert entry.info is not None
    assert entry.info["target"] == "onnxruntime" and entry.info["activations"].startswith("uint8")
    assert entry.info["calibrated"]["main"] == {"images": 48, "skipped": 0}

    # The layout: uint8 activations with zero points, int8 per-channel weights, int32 biases, and a Q
    # on every Conv's output (what lets ORT fuse DQ -> Conv -> Q into one QLinearConv).
    model = onnx.load(str(out / "model.int8.onnx"))
    init = {t.name: t for t in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert q and all(init[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in q)
    assert any(numpy_helper.to_array(init[n.input[2]]).any() for n in q)  # asymmetric: non-zero zero points
    by_output = {n.output[0]: n for n in dq}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n.op_type)
    for conv in convs:
        w = by_output[conv.input[1]]
        assert init[w.input[0]].data_type == onnx.TensorProto.INT8
        assert numpy_helper.to_array(init[w.input[1]]).size > 1  # per-channel scales
        if len(conv.input) > 2 and conv.input[2]:
            assert init[by_output[conv.input[2]].input[0]].data_type == onnx.TensorProto.INT32  # int32 bias
        assert consumers[conv.output[0]] == ["QuantizeLinear"], conv.name  # Q on the output

    # ...which ONNX Runtime's CPU provider runs as integer kernels: no float Conv is left, while
    # the FP32 model's optimised graph has float convolutions.
    fused = _optimised_ops(out / "model.int8.onnx", tmp_path)
    assert fused["QLinearConv"] == len(convs) and fused["Conv"] == 0, fused
    assert _optimised_ops(out / "model.onnx", tmp_path)["QLinearConv"] == 0

    fp32 = run_onnx(out / "model.onnx", real_bytes)  # the fixture's bundle has the default uint8 input
    int8 = run_onnx(out / "model.int8.onnx", real_bytes)
    assert int8.shape == fp32.shape
    assert distinct_predictions(fp32) >= 3  # not a degenerate model
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.8
    assert bundle.meta["parity"]["main"]["int8"]["top1_agreement"] >= 0.8


def test_default_stays_tensorrt_and_the_engine_builder_refuses_other_targets(trained, tmp_path):
    out = _copy(trained, tmp_path)
    calib = trained["root"] / "data"
    make_int8(Bundle.load(out, verify=True), Int8Options(method="minmax", calib_images=calib, calib_count=16))
    bundle = Bundle.load(out, verify=True)
    entry = bundle.entry("main", "int8")
    assert entry.info is not None and entry.info["target"] == "tensorrt"
    ops = {n.op_type for n in onnx.load(str(bundle.path(entry))).graph.node}
    assert "QLinearConv" not in ops
    assert list(select_sources(bundle, "int8")) == ["main"]

    make_int8(Bundle.load(out, verify=True), Int8Options(method="minmax", target="onnxruntime", calib_images=calib,
                                                         calib_count=16))  # replaces the int8 model: one per role
    bundle = Bundle.load(out, verify=True)
    assert [m.file for m in bundle.models if m.precision == "int8"] == ["model.int8.onnx"]
    with pytest.raises(BundleError) as caught:
        select_sources(bundle, "int8")
    message = str(caught.value)
    assert "\n" not in message and "laid out for onnxruntime" in message
    assert "erudite-edge export int8 --target tensorrt" in message
    assert list(select_sources(bundle, "fp32")) == ["main"]  # other precisions are not affected


def test_an_int8_entry_without_target_counts_as_tensorrt(trained, tmp_path):
    """Bundles made before --target existed hold the TensorRT layout and record no target."""
    out = _copy(trained, tmp_path)
    make_int8(Bundle.load(out, verify=True), Int8Options(method="minmax", calib_images=trained["root"] / "data",
                                                         calib_count=8))
    bundle = Bundle.load(out)
    for m in bundle.meta["models"]:
        if m["precision"] == "int8":
            del m["info"]["target"]
    bundle.save()
    assert list(select_sources(Bundle.load(out), "int8")) == ["main"]


def test_unknown_target_is_one_line(tmp_path, capsys):
    calib = tmp_path / "calib"
    calib.mkdir()
    rc, _, err = cli(capsys, "export", "int8", "--bundle", tmp_path / "b", "--calib", calib, "--target", "tflite")
    assert rc == 2
    assert "--target 'tflite'" in one_error_line(err)
    assert not (tmp_path / "b").exists()


def test_int8_layouts_benchmark_measures_both_layouts(trained, tmp_path):
    """`python -m benchmarks.studies.int8_layouts` on the tiny bundle: both layouts made, timed and explained."""
    from benchmarks.studies.int8_layouts import main as layouts_main

    out = tmp_path / "layouts.json"
    rc = layouts_main([
        "--bundle", str(trained["bundle"]), "--calib", str(trained["root"] / "data"), "--calib-count", "16",
        "--eval-count", "16", "--batch", "1,2", "--warmup", "1", "--iters", "2", "--rounds", "1", "--json", str(out),
    ])
    assert rc == 0
    result = json.loads(out.read_text())
    assert set(result["models"]) == {"fp32", "int8 tensorrt", "int8 onnxruntime"}
    assert set(result["latency"]) == {"1", "2"}
    assert all(row["p50_ms"] > 0 for rows in result["latency"].values() for row in rows.values())
    ort_graph = result["models"]["int8 onnxruntime"]["optimised_graph"]
    trt_graph = result["models"]["int8 tensorrt"]["optimised_graph"]
    assert ort_graph["QLinearConv"] > 0 and ort_graph["Conv"] == 0
    assert trt_graph["QLinearConv"] == 0 and trt_graph["DequantizeLinear"] > 0
    assert result["top1_agreement_vs_fp32"]["int8 onnxruntime"] >= 0.8  # derived from the raw top-1 (recompute)
    assert not (trained["bundle"] / "model.int8.onnx").exists()  # the bundle itself is left as it was
