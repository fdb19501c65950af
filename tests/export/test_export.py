"""Export: ONNX bundles with parity and metadata for every variant and the zoo, FP16 and INT8 models
that agree with FP32 on real photographs, and the error paths (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from erudite_edge.core.bundle import Bundle
from erudite_edge.core.compare import ParityError, compare_logits
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec, preprocess
from erudite_edge.errors import BundleError
from export.fp16 import make_fp16
from export.images import host_float_batch, photo_variants, sample_photos
from export.int8 import Int8Options, make_int8
from export.metadata import facts_from_metadata, read_metadata
from export.parity import check_fp32_parity
from export.zoo import export_zoo
from train.model import build_model
from train.two_stage import ZooStep
from trained_model import (
    COUNTS,
    LABELS,
    SPEC,
    cli,
    config,
    distinct_predictions,
    one_error_line,
    run_onnx,
    save_run,
    session,
    train_steps,
    untrained_run,
)

pytestmark = pytest.mark.slow  # trains the tiny model (trained) and exports every variant

ERUDITE_VARIANTS = ["baseline", "baseline+", "baseline++", "ours", "ours-pcgrad", "ours-pmg"]


def leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


# -- erudite variants: export, parity, graph, metadata -------------------------------------------


@pytest.mark.parametrize("variant", ERUDITE_VARIANTS)
def test_export_every_variant(tmp_path, capsys, variant):
    run = untrained_run(tmp_path, variant)
    out = tmp_path / "bundle"
    args = ["export", "onnx", "--checkpoint", run, "--out", out, "--parity-count", "8"]
    if variant == "baseline":  # real images from a folder, one of them unreadable
        images = tmp_path / "images" / "nested"
        images.mkdir(parents=True)
        for i, view in enumerate(photo_variants(sample_photos()[:2])):
            cv2.imwrite(str(images / f"{i}.jpg"), view[..., ::-1])
        (images / "broken.jpg").write_bytes(b"not a jpeg")
        args += ["--images", tmp_path / "images"]
    rc, stdout, err = cli(capsys, *args)
    assert rc == 0, err
    assert stdout.strip() == str(out)
    assert "parity main" in err and "- ok" in err
    if variant == "baseline":
        assert "broken.jpg" in err and "1 unreadable images skipped" in err

    bundle = Bundle.load(out, verify=True)
    assert (bundle.kind, bundle.variant, bundle.backbone) == ("erudite", variant, "tiny")
    assert [(m.role, m.precision, m.file) for m in bundle.models] == [("main", "fp32", "model.onnx")]
    parity = bundle.meta["parity"]["main"]["fp32"]
    assert parity["passed"] and parity["top1_agreement"] == 1.0 and parity["count"] == 8
    assert parity["max_abs_diff"] <= parity["tolerance"]
    assert ("images under" if variant == "baseline" else "scikit-image") in parity["source"]

    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert next(o.version for o in model.opset_import if o.domain == "") == 17
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["logits"]
    batch_in, *hwc = dims(model.graph.input[0])
    batch_out, classes = dims(model.graph.output[0])
    # the default export takes uint8 NHWC bytes (tests/export/test_uint8_input.py covers the graph's first nodes)
    assert isinstance(batch_in, str) and isinstance(batch_out, str) and hwc == [32, 32, 3]
    assert bundle.preprocess == SPEC.as_input("uint8")
    assert classes == sum(COUNTS) == LABELS.num_classes

    # no auxiliary classifier in the deployed graph: neither by name nor by value
    net = build_model(config(variant))
    net.load_state_dict(_state(tmp_path / f"run-{variant}"))
    names = [t.name for t in model.graph.initializer]
    assert not any("aux" in n for n in names)
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer]
    for g_n in getattr(net, "aux_classifiers", []):
        final = g_n[-1].weight.detach().numpy()
        assert not any(w.shape == final.shape and np.allclose(w, final) for w in weights)
    if variant != "baseline":
        assert len(net.aux_classifiers) == 2

    # metadata_props describe the model on their own
    props = read_metadata(out / "model.onnx")
    assert facts_from_metadata(props) == (LABELS, SPEC.as_input("uint8"))
    assert props["erudite_edge.role"] == "main" and props["erudite_edge.precision"] == "fp32"
    assert props["erudite_edge.variant"] == variant

    # dynamic batch: batches of 1 and 5 match PyTorch
    graph = net.eval().inference_graph().eval()
    x = np.random.default_rng(1).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = graph(torch.from_numpy(host_float_batch(x, bundle.preprocess))).numpy()
    np.testing.assert_allclose(run_onnx(out / "model.onnx", x), ref, atol=1e-4)
    np.testing.assert_allclose(run_onnx(out / "model.onnx", x[:1]), ref[:1], atol=1e-4)


def _state(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "best" / "model.safetensors"))


class _SqueezeExcite(torch.nn.Module):
    """A conv with squeeze-and-excitation (a mean over H, W), as in MobileNetV3: its ReduceMean is
    what ONNX's opset 18 -> 17 converter leaves invalid."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        y = y * torch.sigmoid(y.mean(dim=(2, 3), keepdim=True))
        return self.fc(y.amax(dim=(2, 3)))


@pytest.mark.parametrize("opset", [17, 18])
def test_reductions_export_at_the_requested_opset(tmp_path, opset):
    from export.onnx_export import to_onnx

    torch.manual_seed(0)
    module = _SqueezeExcite().eval()
    model = to_onnx(module, PreprocessSpec.square(16), opset)  # includes onnx.checker's full check
    assert next(o.version for o in model.opset_import if o.domain == "") == opset
    assert model.ir_version == 8  # the oldest IR these opsets allow: older ONNX Runtimes load it
    means = [n for n in model.graph.node if n.op_type == "ReduceMean"]
    assert means
    if opset == 17:  # the attribute only opset 18 knows is gone
        assert all(a.name != "noop_with_empty_axes" for n in means for a in n.attribute)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(path, x), module(torch.from_numpy(x)).numpy(), atol=1e-5)


# -- the zoo -----------------------------------------------------------------------------------


def test_export_zoo_with_fp16_and_int8(tmp_path, capsys, real_batch, real_bytes):
    run = untrained_run(tmp_path, "single")
    out = tmp_path / "zoo"
    rc, stdout, err = cli(capsys, "export", "zoo", "--checkpoint", run, "--out", out, "--parity-count", "6")
    assert rc == 0, err
    bundle = Bundle.load(out, verify=True)
    assert bundle.kind == "zoo" and bundle.roles() == ["coarse", "fine:a", "fine:b"]
    files = {m.role: m.file for m in bundle.models}
    assert files == {"coarse": "coarse.onnx", "fine:a": "fine.a.onnx", "fine:b": "fine.b.onnx"}
    zoo = build_model(config("single"))
    zoo.load_state_dict(_state(run))
    zoo.eval()
    modules = {"coarse": zoo.coarse, "fine:a": zoo.fine[0], "fine:b": zoo.fine[1]}
    for role, size in (("coarse", 2), ("fine:a", 3), ("fine:b", 4)):
        path = out / files[role]
        model = onnx.load(str(path))
        assert [o.name for o in model.graph.output] == ["logits"] and dims(model.graph.output[0])[1] == size
        assert read_metadata(path)["erudite_edge.role"] == role
        assert bundle.meta["parity"][role]["fp32"]["passed"]
        with torch.no_grad():
            ref = modules[role](torch.from_numpy(real_batch[:5])).numpy()
        np.testing.assert_allclose(run_onnx(path, real_bytes[:5]), ref, atol=1e-4)

    calib = tmp_path / "calib"
    calib.mkdir()
    for i, view in enumerate(photo_variants(sample_photos())[:12]):
        cv2.imwrite(str(calib / f"{i}.jpg"), view[..., ::-1])
    rc, _, err = cli(capsys, "export", "fp16", "--bundle", out, "--count", "8")
    assert rc == 0, err
    rc, _, err = cli(capsys, "export", "int8", "--bundle", out, "--calib", calib, "--calib-count", "8")
    assert rc == 0, err
    bundle = Bundle.load(out, verify=True)
    for role in bundle.roles():
        for precision in ("fp16", "int8"):
            entry = bundle.entry(role, precision)
            assert entry.num_outputs == bundle.expected_outputs(role)
            assert precision in bundle.meta["parity"][role]
            assert read_metadata(bundle.path(entry))["erudite_edge.precision"] == precision
            assert run_onnx(bundle.path(entry), real_bytes[:3]).shape == (3, bundle.expected_outputs(role))
        ops = {n.op_type for n in onnx.load(str(bundle.path(bundle.entry(role, "int8")))).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_wrong_kind_of_checkpoint_is_one_line(tmp_path, capsys):
    zoo_run = untrained_run(tmp_path, "single")
    rc, _, err = cli(capsys, "export", "onnx", "--checkpoint", zoo_run, "--out", tmp_path / "b")
    assert rc == 2 and "export zoo" in one_error_line(err)
    erudite_run = untrained_run(tmp_path, "baseline")
    rc, _, err = cli(capsys, "export", "zoo", "--checkpoint", erudite_run, "--out", tmp_path / "b")
    assert rc == 2 and "export onnx" in one_error_line(err)
    assert not (tmp_path / "b").exists() and not leftovers(tmp_path, "b")


# -- a trained model: parity on real images, FP16 and INT8 agreement -------------------------------


def test_parity_on_real_images_of_the_data_sets(trained):
    report = trained["report"]["main"]["fp32"]
    assert report["passed"] and report["count"] == 28 and "test split of a, b" in report["source"]
    assert report["logit_scale"] > 1.0  # a trained model: the tolerance scales with its logits


def _copy_bundle(trained: dict, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(trained["bundle"], dst)
    return dst


def test_fp16_runs_on_cpu_and_agrees_with_fp32(trained, tmp_path, real_bytes):
    out = _copy_bundle(trained, tmp_path)
    report = make_fp16(Bundle.load(out, verify=True), count=40)
    bundle = Bundle.load(out, verify=True)
    entry = bundle.entry("main", "fp16")
    assert entry.file == "model.fp16.onnx" and report["roles"]["main"]["count"] == 40
    assert bundle.meta["parity"]["main"]["fp16"] == report["roles"]["main"]
    model = onnx.load(str(out / "model.fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    sess = session(out / "model.fp16.onnx")
    assert sess.get_inputs()[0].type == "tensor(uint8)" and sess.get_outputs()[0].type == "tensor(float)"

    fp32 = run_onnx(out / "model.onnx", real_bytes)
    fp16 = sess.run(None, {"images": real_bytes})[0]
    assert distinct_predictions(fp32) >= 3  # not a degenerate model
    assert (fp32.argmax(1) == fp16.argmax(1)).mean() >= 0.9
    assert np.abs(fp32 - fp16).max() < 0.05 * np.abs(fp32).max()


@pytest.fixture(scope="module")
def int8_bundles(trained, tmp_path_factory):
    """The trained bundle quantized with each calibration method (calibration images: every view of
    every class, found recursively under the data folder)."""
    made = {}
    for method in ("minmax", "entropy", "percentile"):
        out = tmp_path_factory.mktemp(f"int8-{method}") / "bundle"
        shutil.copytree(trained["bundle"], out)
        options = Int8Options(method=method, calib_images=trained["root"] / "data", calib_count=48)
        made[method] = (out, make_int8(Bundle.load(out, verify=True), options))
    return made


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_int8_is_symmetric_qdq_and_agrees_with_fp32(int8_bundles, real_bytes, method):
    out, report = int8_bundles[method]
    bundle = Bundle.load(out, verify=True)
    entry = bundle.entry("main", "int8")
    assert entry.file == "model.int8.onnx" and entry.info["method"] == method
    assert entry.info["calibrated"]["main"] == {"images": 48, "skipped": 0}
    assert bundle.meta["parity"]["main"]["int8"] == report["roles"]["main"]

    model = onnx.load(str(out / "model.int8.onnx"))
    init = {t.name: t for t in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert q and dq
    for node in q + dq:
        zp = init[node.input[2]]
        assert zp.data_type == onnx.TensorProto.INT8 and not numpy_helper.to_array(zp).any()
    weight_dq = [n for n in dq if n.input[0] in init]
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    assert weight_dq and {n.output[0] for n in weight_dq} >= conv_weights  # every conv weight is int8
    for node in weight_dq:
        assert init[node.input[0]].data_type == onnx.TensorProto.INT8
        assert numpy_helper.to_array(init[node.input[1]]).size > 1  # per-channel scales
    assert [o.name for o in model.graph.output] == ["logits"]
    assert {n.op_type for n in model.graph.node if "logits" in n.output} == {"Gemm"}  # logits stay float

    fp32 = run_onnx(out / "model.onnx", real_bytes)
    int8 = run_onnx(out / "model.int8.onnx", real_bytes)
    assert distinct_predictions(fp32) >= 3
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.8


def _activation_scales(path: Path) -> dict[str, float]:
    model = onnx.load(str(path))
    init = {t.name: t for t in model.graph.initializer}
    return {
        n.input[0]: float(numpy_helper.to_array(init[n.input[1]]))
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and init[n.input[1]].dims == []
    }


def test_histogram_calibration_is_not_minmax(int8_bundles):
    scales = {method: _activation_scales(out / "model.int8.onnx") for method, (out, _) in int8_bundles.items()}
    assert scales["minmax"].keys() == scales["entropy"].keys() == scales["percentile"].keys()
    for method in ("entropy", "percentile"):
        # a histogram method clips outliers: no range wider than min-max's
        assert all(scales[method][t] <= scales["minmax"][t] * (1 + 1e-6) for t in scales["minmax"])
    # and entropy (KL) calibration really searches thresholds: some ranges come out clearly narrower
    assert sum(scales["entropy"][t] < scales["minmax"][t] * 0.9 for t in scales["minmax"]) >= 2


def test_int8_with_data_reports_accuracy_per_data_set(trained, tmp_path):
    out = _copy_bundle(trained, tmp_path)
    report = make_int8(Bundle.load(out, verify=True), Int8Options(method="minmax", data=trained["data"], calib_count=24))
    assert report["images"] == "test images of a, b" and report["count"] == 28
    acc = report["accuracy"]
    assert set(acc) == {"a", "b"}
    assert Bundle.load(out).meta["accuracy"]["int8"] == acc
    # the FP32 accuracy it reports is the accuracy of the FP32 model on those test images
    bundle = Bundle.load(out)
    for d, name in enumerate(LABELS.datasets):
        root = trained["root"] / "data" / name / "test"
        paths = sorted(root.rglob("*.png"))
        batch = np.stack([preprocess(cv2.imread(str(p))[..., ::-1], bundle.preprocess) for p in paths])
        truth = np.array([LABELS.to_joint(d, LABELS.classes[d].index(p.parent.name)) for p in paths])
        expected = float((run_onnx(out / "model.onnx", batch).argmax(1) == truth).mean())
        assert acc[name]["fp32"] == pytest.approx(expected)
        assert acc[name]["count"] == len(paths)
        assert acc[name]["change"] == pytest.approx(acc[name]["int8"] - acc[name]["fp32"])
    assert np.mean([acc[n]["fp32"] for n in acc]) >= 0.5  # the trained model does see the classes


def test_zoo_int8_calibrates_each_fine_model_on_its_own_data_set(trained, views, tmp_path):
    torch.manual_seed(0)
    zoo = build_model(config("single"))
    zoo.train()
    assert train_steps(ZooStep(zoo, torch.optim.SGD(zoo.parameters(), lr=0.05, momentum=0.9)), views) > 0.8
    run = save_run(tmp_path / "zoo-run", zoo.eval(), "single")
    bundle_dir = tmp_path / "zoo"
    export_zoo(run, bundle_dir, data=trained["data"], parity_count=8)
    report = make_int8(Bundle.load(bundle_dir, verify=True),
                       Int8Options(method="minmax", data=trained["data"], calib_count=512))
    bundle = Bundle.load(bundle_dir, verify=True)
    calibrated = bundle.entry("coarse", "int8").info["calibrated"]
    # training split: 8 views per class; a has 3 classes, b has 4
    assert calibrated == {
        "coarse": {"images": 56, "skipped": 0},
        "fine:a": {"images": 24, "skipped": 0},
        "fine:b": {"images": 32, "skipped": 0},
    }
    # the pipeline's FP32 accuracy: the coarse model picks the data set, its fine model the class
    for d, name in enumerate(LABELS.datasets):
        paths = sorted((trained["root"] / "data" / name / "test").rglob("*.png"))
        batch = np.stack([preprocess(cv2.imread(str(p))[..., ::-1], bundle.preprocess) for p in paths])
        local = np.array([LABELS.classes[d].index(p.parent.name) for p in paths])
        picked = run_onnx(bundle_dir / "coarse.onnx", batch).argmax(1)
        fine = {i: run_onnx(bundle_dir / f"fine.{ds}.onnx", batch).argmax(1) for i, ds in enumerate(LABELS.datasets)}
        right = [picked[k] == d and fine[d][k] == local[k] for k in range(len(paths))]
        assert report["accuracy"][name]["fp32"] == pytest.approx(float(np.mean(right)))
    assert min(report["accuracy"][n]["fp32"] for n in LABELS.datasets) >= 0.5  # a pipeline that works


# -- parity itself ---------------------------------------------------------------------------------


def test_parity_rule():
    ref = np.array([[5.0, 1.0, 0.0], [2.0, 1.9995, 0.0], [0.0, 3.0, 1.0]])
    ok = compare_logits(ref, ref + 1e-4, reference_name="a", candidate_name="b", source="s", rel_tolerance=1e-3)
    assert ok.passed and ok.tolerance == pytest.approx(5e-3) and ok.top1_agreement == 1.0
    tie = ref.copy()
    tie[1, 1] += 0.001  # flips a near tie (margin 5e-4 < 2 * 5e-3)
    near = compare_logits(ref, tie, reference_name="a", candidate_name="b", source="s", rel_tolerance=1e-3)
    assert near.passed and near.disagreements == near.near_ties == 1
    bad = compare_logits(ref, ref + 0.1, reference_name="a", candidate_name="b", source="s", rel_tolerance=1e-3)
    assert not bad.passed
    flipped = ref.copy()
    flipped[2] = [3.0, 0.0, 1.0]
    assert not compare_logits(ref, flipped, reference_name="a", candidate_name="b", source="s", rel_tolerance=1e-3).passed


def test_parity_catches_a_model_that_is_not_the_exported_one(tmp_path, real_batch):
    from export.onnx_export import to_onnx

    torch.manual_seed(0)
    exported, other = _SqueezeExcite().eval(), _SqueezeExcite().eval()
    path = tmp_path / "m.onnx"
    onnx.save(to_onnx(exported, SPEC), str(path))
    assert check_fp32_parity(exported, path, real_batch[:8], "photos").passed
    with pytest.raises(ParityError, match="does not match PyTorch"):
        check_fp32_parity(other, path, real_batch[:8], "photos")


# -- error paths: one line, exit 2, nothing written ------------------------------------------------


def test_truncated_checkpoint(tmp_path, capsys):
    run = untrained_run(tmp_path, "ours")
    weights = run / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    rc, _, err = cli(capsys, "export", "onnx", "--checkpoint", run, "--out", tmp_path / "out")
    assert rc == 2 and "truncated" in one_error_line(err)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path, "out")


def test_foreign_checkpoint_json(tmp_path, capsys):
    run = tmp_path / "older-layout-run"  # RUN/best.safetensors + RUN/best.json, as erudite-edge 0.1 wrote before manifests
    run.mkdir()
    shutil.copy(untrained_run(tmp_path, "ours") / "best" / "model.safetensors", run / "best.safetensors")
    (run / "best.json").write_text(json.dumps({"format": "someone-elses", "weights": "best.safetensors"}))
    rc, _, err = cli(capsys, "export", "onnx", "--checkpoint", run, "--out", tmp_path / "out")
    assert rc == 2 and "not an erudite-edge checkpoint" in one_error_line(err)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path, "out")


def test_existing_out_is_kept(tmp_path, capsys):
    run = untrained_run(tmp_path, "baseline")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, err = cli(capsys, "export", "onnx", "--checkpoint", run, "--out", out)
    assert rc == 2 and "already exists" in one_error_line(err)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and not leftovers(tmp_path, "out")


@pytest.mark.parametrize("command", ["fp16", "int8"])
def test_label_table_that_does_not_fit_the_model(trained, tmp_path, capsys, command):
    out = _copy_bundle(trained, tmp_path)
    meta = json.loads((out / "bundle.json").read_text())
    bigger = LabelSpace.build(["a", "b"], [["x", "y", "z"], ["p", "q", "r", "s", "t"]])
    meta["labels"] = bigger.to_dict()
    (out / "bundle.json").write_text(json.dumps(meta))
    before = sorted(p.name for p in out.iterdir())
    extra = ["--calib", str(trained["root"] / "data"), "--calib-count", "4"] if command == "int8" else []
    rc, _, err = cli(capsys, "export", command, "--bundle", out, *extra)
    line = one_error_line(err)
    assert rc == 2 and "7 logits" in line and "8 classes" in line
    assert sorted(p.name for p in out.iterdir()) == before
    assert json.loads((out / "bundle.json").read_text()) == meta
    with pytest.raises(BundleError):
        make_fp16(Bundle.load(out, verify=True))
