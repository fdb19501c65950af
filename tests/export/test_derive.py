"""export.derive: a reduced-precision model is built per role, compared with FP32 and scored on labelled
images with ITS OWN logits. The "reduced" model here is a real ONNX model that deliberately swaps two
classes (red <-> yellow), so its accuracy and agreement differ from FP32 by a known amount."""

from pathlib import Path

import numpy as np
import pytest

from erudite_edge.core.bundle import Bundle
from erudite_edge.core.compare import ParityError
from erudite_edge.core.preprocess import preprocess
from export.derive import derive
from export.images import InputSet
from onnx_fixtures import COLORS, DATASETS, fixture_spec, make_erudite_bundle, make_zoo_bundle, nearest_color_model, solid_image

ORDER = ["red", "yellow", "blue", "cyan"]  # joint classes: warm/red, warm/yellow, cool/blue, cool/cyan


def _loaded(root: Path) -> Bundle:
    """The bundle as derive's callers (make_fp16, the export int8 command) hand it over: every file checked."""
    return Bundle.load(root, verify=True)


def _labelled(per_class: int = 2, mislabel_last: bool = False) -> InputSet:
    spec = fixture_spec()
    names = [c for c in ORDER for _ in range(per_class)]
    batch = np.stack([preprocess(solid_image(COLORS[c], noise=10, seed=i), spec) for i, c in enumerate(names)])
    ds = np.array([0 if c in DATASETS["warm"] else 1 for c in names])
    local = np.array([DATASETS["warm" if c in DATASETS["warm"] else "cool"].index(c) for c in names])
    if mislabel_last:  # the last cyan image labelled blue: no model scores 100 % on cool
        local[-1] = 0
    return InputSet(batch=batch, source="test images", real=True, dataset_ids=ds, local_ids=local)


def _swapping_build(src, path: Path) -> None:  # noqa: ANN001
    """A stand-in "reduced" model for role main: red and yellow prototypes swapped; others build as FP32."""
    swapped = {"red": "yellow", "yellow": "red"}
    if src.role == "main":
        nearest_color_model(path, [COLORS[swapped.get(c, c)] for c in ORDER], fixture_spec())
    else:
        path.write_bytes(src.path.read_bytes())


def test_reduced_accuracy_is_scored_on_the_reduced_models_own_logits(tmp_path):
    make_erudite_bundle(tmp_path / "b")
    lines: list[str] = []
    report = derive(_loaded(tmp_path / "b"), "int8", _swapping_build, inputs=_labelled(), info={"method": "test"}, log=lines.append)
    assert "accuracy warm: fp32 100.00% -> int8 0.00% (-100.00 points, 4 test images)" in lines
    assert "accuracy cool: fp32 100.00% -> int8 100.00% (+0.00 points, 4 test images)" in lines
    assert any(ln.startswith("agreement main: onnx int8 vs onnx fp32 on 8 inputs") for ln in lines)
    assert report["method"] == "test" and report["images"] == "test images"
    acc = report["accuracy"]
    assert acc["warm"] == {"fp32": 1.0, "int8": 0.0, "change": -1.0, "count": 4}
    assert acc["cool"] == {"fp32": 1.0, "int8": 1.0, "change": 0.0, "count": 4}
    main = report["roles"]["main"]
    assert main["top1_agreement"] == 0.5 and main["disagreements"] == 4 and main["count"] == 8
    b = Bundle.load(tmp_path / "b")
    assert b.meta["accuracy"]["int8"] == acc and b.meta["parity"]["main"]["int8"]["top1_agreement"] == 0.5
    assert (tmp_path / "b" / b.entry("main", "int8", "onnx").file).is_file()


def test_low_agreement_writes_nothing(tmp_path):
    make_erudite_bundle(tmp_path / "b")
    before = sorted(p.name for p in (tmp_path / "b").iterdir())
    with pytest.raises(ParityError, match=r"int8 top-1 agreement with fp32 is 50.0% for role main \(minimum 90.0%\); nothing was written"):
        derive(_loaded(tmp_path / "b"), "int8", _swapping_build, inputs=_labelled(), info={}, min_agreement=0.9)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == before
    assert derive(_loaded(tmp_path / "b"), "int8", _swapping_build, inputs=_labelled(), info={}, min_agreement=0.5)


def test_zoo_every_role_is_derived_and_the_pipeline_scored(tmp_path):
    make_zoo_bundle(tmp_path / "z")
    report = derive(_loaded(tmp_path / "z"), "fp16", _swapping_build, inputs=_labelled(), info={}, min_agreement=0.9)
    assert set(report["roles"]) == {"coarse", "fine:warm", "fine:cool"}
    assert all(r["top1_agreement"] == 1.0 for r in report["roles"].values())
    assert report["accuracy"]["warm"]["fp16"] == 1.0 and report["accuracy"]["cool"]["change"] == 0.0
    assert report["count"] == 8 and report["precision"] == "fp16"


def test_accuracy_lines_show_percentages(tmp_path):
    make_erudite_bundle(tmp_path / "b")
    lines: list[str] = []
    report = derive(_loaded(tmp_path / "b"), "int8", _swapping_build, inputs=_labelled(mislabel_last=True), info={}, log=lines.append)
    assert report["accuracy"]["cool"] == {"fp32": 0.75, "int8": 0.75, "change": 0.0, "count": 4}
    assert "accuracy cool: fp32 75.00% -> int8 75.00% (+0.00 points, 4 test images)" in lines


def test_prune_opset_imports_keeps_what_nodes_and_functions_use():
    import onnx
    from onnx import helper

    from export.derive import prune_opset_imports

    fn = helper.make_function("my.fn", "F", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])],
                              [helper.make_opsetid("", 17)])
    fn2 = helper.make_function("fn.inner", "G", ["x"], ["y"], [helper.make_node("H", ["x"], ["y"], domain="com.used")],
                               [helper.make_opsetid("com.used", 1)])
    graph = helper.make_graph([helper.make_node("F", ["a"], ["b"], domain="my.fn"), helper.make_node("G", ["b"], ["c"], domain="fn.inner")],
                              "g", [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [1])])
    opsets = [("", 17), ("ai.onnx", 17), ("my.fn", 1), ("fn.inner", 1), ("com.used", 1), ("com.microsoft", 1), ("ai.onnx.ml", 3)]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], functions=[fn, fn2])
    prune_opset_imports(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17), ("ai.onnx", 17), ("my.fn", 1), ("fn.inner", 1),
                                                                   ("com.used", 1)]
    bare = helper.make_model(helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "g",
                                               [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])],
                                               [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1])]),
                             opset_imports=[helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("", 17)])
    prune_opset_imports(bare)
    assert [(o.domain, o.version) for o in bare.opset_import] == [("", 17)]
    # a contrib op straight in the graph (no function): its domain stays imported
    contrib = helper.make_model(helper.make_graph([helper.make_node("FusedGelu", ["a"], ["b"], domain="com.microsoft")], "g",
                                                  [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])],
                                                  [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1])]),
                                opset_imports=[helper.make_opsetid(d, v) for d, v in (("", 17), ("com.microsoft", 1), ("ai.onnx.ml", 3))])
    prune_opset_imports(contrib)
    assert [(o.domain, o.version) for o in contrib.opset_import] == [("", 17), ("com.microsoft", 1)]


def test_unreadable_or_tampered_fp32_model_is_a_bundle_error(tmp_path):
    from erudite_edge.errors import BundleError

    make_erudite_bundle(tmp_path / "b")
    fp32 = tmp_path / "b" / "model.onnx"
    good = fp32.read_bytes()
    fp32.write_bytes(good[:-10] + b"0123456789")  # same size, other bytes: the recorded sha256 no longer fits
    with pytest.raises(BundleError):
        derive(_loaded(tmp_path / "b"), "int8", _swapping_build, inputs=_labelled(), info={})
    from export.derive import load_onnx

    fp32.write_bytes(b"not a protobuf at all")
    with pytest.raises(BundleError, match="model.onnx: not a readable ONNX model \\(Error parsing message"):
        load_onnx(fp32)


def test_min_accuracy_ratio_refuses_a_data_set_that_falls_and_writes_nothing(tmp_path):
    make_erudite_bundle(tmp_path / "b")
    before = sorted(p.name for p in (tmp_path / "b").iterdir())
    with pytest.raises(ParityError, match=r"^int8 accuracy on warm is 0\.000 of fp32's \(0\.0% vs 100\.0%, minimum 0\.500\); "
                                          r"nothing was written$"):
        derive(_loaded(tmp_path / "b"), "int8", _swapping_build, inputs=_labelled(), info={}, min_accuracy_ratio=0.5)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == before
    # a data set FP32 gets all wrong cannot fall (ratio 1); an exact copy keeps every data set at 1.0
    inputs = _labelled()
    cool = inputs.dataset_ids == 1
    inputs.local_ids[cool] = 1 - inputs.local_ids[cool]

    def same(src, path):  # noqa: ANN001
        path.write_bytes(src.path.read_bytes())

    report = derive(_loaded(tmp_path / "b"), "int8", same, inputs=inputs, info={}, min_accuracy_ratio=0.99)
    assert report["accuracy"]["cool"]["fp32"] == 0.0 and report["accuracy"]["warm"]["int8"] == 1.0
