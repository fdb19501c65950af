"""`export triton` and `export deepstream` on tiny real ONNX bundles.

Triton: config.pbtxt parsed back with tritonclient's model_config_pb2 (protobuf text format) and compared
with the ONNX graph. DeepStream: the nvinfer key file read by key-file rules, every file it names present,
and the folded ONNX copy fed exactly as nvinfer's formula y = net-scale-factor * (x - offsets[c]) with the
config's own numbers, against the bundle's model fed by erudite-edge, on real photographs.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from erudite_edge.cli.app import main
from erudite_edge.core.bundle import Bundle, default_filename
from erudite_edge.core.preprocess import PreprocessSpec, preprocess, resize_image
from onnx_fixtures import label_space, make_erudite_bundle

onnx = pytest.importorskip("onnx")


def model_config_pb2():
    """tritonclient's generated model_config_pb2, loaded from its file: the package's `grpc/__init__` imports
    grpcio, which parsing a config does not need."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tritonclient is not installed (pip install 'erudite-edge[serve]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    mod_spec = importlib.util.spec_from_file_location("erudite_test_model_config_pb2", path)
    mod = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
    mod_spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.fixture(scope="module")
def color_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_erudite_bundle(tmp_path_factory.mktemp("serve") / "bundle")


def conv_bundle(root: Path, channel_order: str = "BGR") -> Bundle:
    """A bundle whose graph starts with a Conv: Conv 3->8 3x3 -> Relu -> Sub -> GlobalAveragePool -> Flatten -> Gemm."""
    from onnx import TensorProto, helper, numpy_helper

    labels = label_space()
    spec = PreprocessSpec.square(32, channel_order=channel_order)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32) * 0.1
    fc = rng.standard_normal((labels.num_classes, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Sub", ["r", "C"], ["rc"]),  # centred, so that photos of different colours differ
         helper.make_node("GlobalAveragePool", ["rc"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"], axis=1),
         helper.make_node("Gemm", ["f", "FC"], ["logits"], transB=1)],
        "conv_first",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", labels.num_classes])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"), numpy_helper.from_array(fc, "FC"),
                     numpy_helper.from_array(np.full((1, 8, 1, 1), 1.0, np.float32), "C")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    root.mkdir(parents=True)
    onnx.save(model, str(root / "model.onnx"))
    bundle = Bundle.create(root, labels=labels, preprocess=spec, kind="erudite", variant="test", backbone="conv", opset=17)
    bundle.add_model("main", "fp32", default_filename("main", "fp32"))
    bundle.save()
    return bundle


# -- Triton ------------------------------------------------------------------------------------------------
def onnx_io(path: Path) -> tuple[list, list]:
    m = onnx.load(str(path))
    return list(m.graph.input), list(m.graph.output)


def test_triton_repository_matches_the_onnx_graph(color_bundle: Bundle, tmp_path: Path, capsys) -> None:
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    repo = tmp_path / "repo"
    (repo / "someone_elses_model").mkdir(parents=True)  # a repository with other models in it: left alone
    assert main(["export", "triton", "--bundle", str(color_bundle.root), "--out", str(repo), "--max-batch", "16"]) == 0
    model_dir = repo / "erudite"
    cfg = text_format.Parse((model_dir / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert (cfg.name, cfg.backend, cfg.max_batch_size, cfg.default_model_filename) == ("erudite", "onnxruntime", 16, "model.onnx")
    assert cfg.HasField("dynamic_batching")
    ins, outs = onnx_io(model_dir / "1" / "model.onnx")
    onnx_to_triton = {onnx.TensorProto.FLOAT: pb2.TYPE_FP32, onnx.TensorProto.FLOAT16: pb2.TYPE_FP16,
                      onnx.TensorProto.UINT8: pb2.TYPE_UINT8}
    for got, want in [(cfg.input, ins), (cfg.output, outs)]:
        assert [t.name for t in got] == [t.name for t in want]
        for t, w in zip(got, want):
            assert t.data_type == onnx_to_triton[w.type.tensor_type.elem_type]
            assert list(t.dims) == [d.dim_value if d.HasField("dim_value") else -1 for d in w.type.tensor_type.shape.dim][1:]
    assert cfg.output[0].label_filename == "labels.txt"
    assert (model_dir / "labels.txt").read_text().splitlines() == color_bundle.labels.joint_names
    assert (model_dir / "1" / "model.onnx").read_bytes() == (color_bundle.root / "model.onnx").read_bytes()
    assert (repo / "someone_elses_model").is_dir()
    # again: refused without --overwrite, replaced with it
    capsys.readouterr()
    assert main(["export", "triton", "--bundle", str(color_bundle.root), "--out", str(repo)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", "triton", "--bundle", str(color_bundle.root), "--out", str(repo), "--overwrite"]) == 0
    assert text_format.Parse((model_dir / "config.pbtxt").read_text(), pb2.ModelConfig()).max_batch_size == 8


def test_triton_tensorrt_entry_and_max_batch_above_the_profile(tmp_path: Path, capsys) -> None:
    """With an engine in the bundle a tensorrt model is added and --max-batch is bounded by the engine's profile.
    The engine file is placeholder bytes (no TensorRT here): the export only copies it; its sidecar is real."""
    from google.protobuf import text_format

    from erudite_edge.backends.tensorrt.sidecar import EngineSidecar, write_sidecar

    pb2 = model_config_pb2()
    bundle = make_erudite_bundle(tmp_path / "b")
    engine = bundle.root / "model.fp32.engine"
    engine.write_bytes(b"placeholder: not a TensorRT engine")
    write_sidecar(engine, EngineSidecar("10.3.0", "Orin", "8.7", "fp32", "main", ["images"], ["logits"],
                                        {"images": {"min": [1, 3, 16, 16], "opt": [4, 3, 16, 16], "max": [12, 3, 16, 16]}},
                                        "model.onnx", "sha", "0.1.0"))
    bundle.add_model("main", "fp32", engine.name, fmt="engine")
    bundle.save()
    capsys.readouterr()
    assert main(["export", "triton", "--bundle", str(bundle.root), "--out", str(tmp_path / "repo"), "--max-batch", "13"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-batch 13 is above the fp32 engine's optimisation profile (1:4:12)" in err[0]
    assert not (tmp_path / "repo" / "erudite").exists()
    assert main(["export", "triton", "--bundle", str(bundle.root), "--out", str(tmp_path / "repo"), "--max-batch", "12"]) == 0
    trt = text_format.Parse((tmp_path / "repo" / "erudite_tensorrt" / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert (trt.backend, trt.max_batch_size, trt.default_model_filename) == ("tensorrt", 12, "model.plan")
    assert [t.name for t in trt.input] == ["images"] and list(trt.output[0].dims) == [4]
    assert (tmp_path / "repo" / "erudite_tensorrt" / "1" / "model.plan").read_bytes() == engine.read_bytes()


def test_triton_uint8_nhwc_graph(tmp_path: Path) -> None:
    """A graph that takes uint8 HWC pixels (the layout the device runtime may feed): TYPE_UINT8, dims [H, W, 3]."""
    from google.protobuf import text_format
    from onnx import TensorProto, helper, numpy_helper

    pb2 = model_config_pb2()
    labels = label_space()
    graph = helper.make_graph(
        [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2]),
         helper.make_node("GlobalAveragePool", ["t"], ["p"]),
         helper.make_node("Flatten", ["p"], ["fl"], axis=1),
         helper.make_node("Gemm", ["fl", "W"], ["logits"], transB=1)],
        "uint8_nhwc",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 20, 24, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", labels.num_classes])],
        initializer=[numpy_helper.from_array(np.ones((labels.num_classes, 3), np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    root = tmp_path / "b"
    root.mkdir()
    onnx.save(model, str(root / "model.onnx"))
    bundle = Bundle.create(root, labels=labels, preprocess=PreprocessSpec(input_size=(20, 24), layout="NHWC"),
                           kind="erudite", variant="test", backbone="uint8", opset=17)
    bundle.add_model("main", "fp32", "model.onnx")
    bundle.save()
    assert main(["export", "triton", "--bundle", str(root), "--out", str(tmp_path / "repo")]) == 0
    cfg = text_format.Parse((tmp_path / "repo" / "erudite" / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert (cfg.input[0].data_type, list(cfg.input[0].dims)) == (pb2.TYPE_UINT8, [20, 24, 3])
    assert (cfg.output[0].data_type, list(cfg.output[0].dims)) == (pb2.TYPE_FP32, [labels.num_classes])
    # nvinfer feeds float NCHW: the DeepStream export says so instead of writing a config that cannot work
    assert main(["export", "deepstream", "--bundle", str(root), "--out", str(tmp_path / "ds")]) == 2
    assert not (tmp_path / "ds").exists()


def test_triton_bad_bundles_one_line_exit_2(color_bundle: Bundle, tmp_path: Path, capsys) -> None:
    import json

    broken = tmp_path / "nolabels"
    broken.mkdir()
    meta = json.loads((color_bundle.root / "bundle.json").read_text())
    del meta["labels"]
    (broken / "bundle.json").write_text(json.dumps(meta))
    for args in (["--bundle", str(broken)], ["--bundle", str(color_bundle.root), "--precision", "fp16"],
                 ["--bundle", str(color_bundle.root), "--max-batch", "0"]):
        capsys.readouterr()
        assert main(["export", "triton", *args, "--out", str(tmp_path / "r")]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err


def test_triton_out_an_existing_file_is_one_line(color_bundle: Bundle, tmp_path: Path, capsys) -> None:
    """Before the fix: a FileExistsError traceback from mkdir."""
    repo = tmp_path / "repo"
    repo.write_text("not a folder\n")
    capsys.readouterr()
    assert main(["export", "triton", "--bundle", str(color_bundle.root), "--out", str(repo)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "is a file, not a folder" in err[0], err
    assert repo.read_text() == "not a folder\n"


def test_triton_overwrite_keeps_the_version_folders_a_user_added(color_bundle: Bundle, tmp_path: Path, capsys) -> None:
    """--overwrite replaces config.pbtxt, labels.txt and 1/ only; before the fix it deleted erudite/2/."""
    repo = tmp_path / "repo"
    assert main(["export", "triton", "--bundle", str(color_bundle.root), "--out", str(repo)]) == 0
    entry = repo / "erudite"
    (entry / "2").mkdir()
    (entry / "2" / "model.onnx").write_bytes(b"the user's second version")
    (entry / "NOTES.md").write_text("mine\n")
    (entry / "1" / "model.onnx").write_bytes(b"stale")
    (entry / "labels.txt").write_text("stale\n")
    assert main(["export", "triton", "--bundle", str(color_bundle.root), "--out", str(repo), "--overwrite",
                 "--max-batch", "4"]) == 0
    assert (entry / "2" / "model.onnx").read_bytes() == b"the user's second version"
    assert (entry / "NOTES.md").read_text() == "mine\n"
    assert (entry / "1" / "model.onnx").read_bytes() == (color_bundle.root / "model.onnx").read_bytes()
    assert (entry / "labels.txt").read_text().splitlines() == color_bundle.labels.joint_names
    assert "max_batch_size: 4" in (entry / "config.pbtxt").read_text()
    assert sorted(p.name for p in entry.iterdir()) == ["1", "2", "NOTES.md", "config.pbtxt", "labels.txt"]
    assert sorted(p.name for p in repo.iterdir()) == ["erudite"]  # no temporary or old folder left


def test_triton_classifier_config_parses_and_holds_the_bundle(color_bundle: Bundle, tmp_path: Path, capsys) -> None:
    """--kind classifier: the Python-backend entry's config (parsed with tritonclient's model_config_pb2), its copy of
    the bundle, the warm-up file in Triton's TYPE_STRING layout (the real server's load: tests/serve)."""
    import struct

    from google.protobuf import text_format

    pb2 = model_config_pb2()
    repo = tmp_path / "repo"
    assert main(["export", "triton", "--kind", "classifier", "--bundle", str(color_bundle.root), "--out", str(repo),
                 "--instances", "3", "--topk", "99", "--max-batch", "16", "--backend", "onnxruntime",
                 "--execution-env", "$$TRITON_MODEL_DIRECTORY/env.tar.gz"]) == 0
    entry = repo / "erudite_classifier"
    cfg = text_format.Parse((entry / "config.pbtxt").read_text(), pb2.ModelConfig())
    k, d = color_bundle.labels.num_classes, len(color_bundle.labels.datasets)  # --topk above the classes: all of them
    assert (cfg.backend, cfg.max_batch_size, cfg.instance_group[0].count) == ("python", 16, 3)
    assert [(t.name, t.data_type, list(t.dims), t.optional) for t in cfg.input] == [
        ("IMAGE", pb2.TYPE_STRING, [1], True), ("FRAME", pb2.TYPE_UINT8, [-1, -1, 3], True)]
    assert [(t.name, t.data_type, list(t.dims)) for t in cfg.output] == [
        ("LABELS", pb2.TYPE_STRING, [k]), ("DATASETS", pb2.TYPE_STRING, [k]), ("SCORES", pb2.TYPE_FP32, [k]),
        ("CLASS_IDS", pb2.TYPE_INT32, [k]), ("DATASET_MASS", pb2.TYPE_FP32, [d])]
    assert cfg.HasField("dynamic_batching")
    params = {key: v.string_value for key, v in cfg.parameters.items()}
    assert params == {"backend": "onnxruntime", "precision": "auto", "topk": str(k),
                      "EXECUTION_ENV_PATH": "$$TRITON_MODEL_DIRECTORY/env.tar.gz"}
    (warm,) = cfg.model_warmup
    warm_file = entry / "warmup" / warm.inputs["IMAGE"].input_data_file
    raw = warm_file.read_bytes()
    assert struct.unpack("<I", raw[:4])[0] == len(raw) - 4 and raw[4:12] == b"\x89PNG\r\n\x1a\n"
    assert (entry / "datasets.txt").read_text().splitlines() == list(color_bundle.labels.datasets)
    assert Bundle.load(entry / "1" / "bundle", verify=True).labels.joint_names == color_bundle.labels.joint_names
    assert (entry / "1" / "model.py").read_text().startswith('"""The Triton Python-backend model')


def test_triton_classifier_bad_flags_one_line_exit_2(color_bundle: Bundle, tmp_path: Path, capsys) -> None:
    out = ["--bundle", str(color_bundle.root), "--out", str(tmp_path / "r")]
    for args in (["--kind", "classifier", "--instances", "0"], ["--kind", "classifier", "--backend", "torch"],
                 ["--kind", "classifier", "--precision", "fp8"], ["--kind", "ensemble"], ["--instances", "2"],
                 ["--kind", "classifier", "--name", "../x"]):
        capsys.readouterr()
        assert main(["export", "triton", *args, *out]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), (args, err)
    assert not (tmp_path / "r").exists()
    # a folder it did not write is never replaced, even with --overwrite
    (tmp_path / "r" / "erudite_classifier").mkdir(parents=True)
    assert main(["export", "triton", "--kind", "classifier", *out, "--overwrite"]) == 2
    assert "not written by export triton" in capsys.readouterr().err


# -- DeepStream -------------------------------------------------------------------------------------------
NVINFER_KEYS = {  # gstnvinfer_property_parser.h (DeepStream 6.x/7.x), the [property] keys this export may write
    "gpu-id", "net-scale-factor", "offsets", "model-color-format", "onnx-file", "labelfile-path", "output-blob-names",
    "batch-size", "network-mode", "network-type", "classifier-threshold", "process-mode", "gie-unique-id",
    "maintain-aspect-ratio", "operate-on-gie-id", "operate-on-class-ids", "classifier-async-mode",
}


def read_key_file(path: Path) -> dict[str, dict[str, str]]:
    """GLib key-file rules as nvinfer reads them: [group] headers, key=value lines, '#' comments, blank lines;
    anything else is an error. Keys are case-sensitive and unique within a group."""
    groups: dict[str, dict[str, str]] = {}
    current = None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"\[([^\]\[]+)\]", line.strip())
        if m:
            current = groups.setdefault(m.group(1), {})
            continue
        assert current is not None, f"{path}:{n}: key outside a group"
        assert "=" in line, f"{path}:{n}: not key=value: {line!r}"
        key, value = line.split("=", 1)
        key = key.strip()
        assert re.fullmatch(r"[A-Za-z0-9-]+", key), f"{path}:{n}: bad key {key!r}"
        assert key not in current, f"{path}:{n}: duplicate key {key}"
        current[key] = value.strip()
    return groups


def real_photos() -> list[np.ndarray]:
    from export.images import photo_variants, sample_photos

    photos = photo_variants(sample_photos())
    if not photos:
        pytest.skip("scikit-image (its sample photographs) is not installed")
    return photos[:24]


def nvinfer_input(images: list[np.ndarray], prop: dict[str, str], spec: PreprocessSpec) -> np.ndarray:
    """What nvinfer feeds the network, from the config's own numbers: y = net-scale-factor * (x - offsets[c]),
    x the stretched pixel in model-color-format order, planar."""
    scale = float(prop["net-scale-factor"])
    offsets = np.array([float(v) for v in prop["offsets"].split(";")])
    order = {"0": "RGB", "1": "BGR"}[prop["model-color-format"]]
    out = []
    for im in images:
        x = resize_image(im, spec).astype(np.float64)
        if order == "BGR":
            x = x[..., ::-1]
        out.append((scale * (x - offsets)).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: batch})[0]


@pytest.mark.parametrize("kind", ["conv", "mul"])
def test_deepstream_config_and_parity_on_real_photos(color_bundle: Bundle, tmp_path: Path, kind: str) -> None:
    bundle = conv_bundle(tmp_path / "b") if kind == "conv" else color_bundle
    out = tmp_path / "ds"
    assert main(["export", "deepstream", "--bundle", str(bundle.root), "--out", str(out), "--mode", "secondary",
                 "--operate-on-gie-id", "3", "--operate-on-class-ids", "0;2", "--batch", "4"]) == 0
    groups = read_key_file(out / "config_infer_erudite.txt")
    assert list(groups) == ["property"]
    prop = groups["property"]
    assert set(prop) <= NVINFER_KEYS, set(prop) - NVINFER_KEYS
    assert (prop["network-type"], prop["process-mode"], prop["operate-on-gie-id"], prop["operate-on-class-ids"]) == ("1", "2", "3", "0;2")
    assert (prop["batch-size"], prop["network-mode"]) == ("4", "2")
    assert prop["model-color-format"] == ("1" if bundle.preprocess.channel_order == "BGR" else "0")
    for key in ("onnx-file", "labelfile-path"):  # relative to the config file, as nvinfer resolves them
        assert (out / prop[key]).is_file(), key
    labels = (out / prop["labelfile-path"]).read_text().splitlines()
    assert len(labels) == 1 and labels[0].split(";") == bundle.labels.joint_names

    folded = onnx.load(str(out / prop["onnx-file"]))
    assert [o.name for o in folded.graph.output] == [prop["output-blob-names"]]
    ops = [n.op_type for n in folded.graph.node]
    assert ops[0] == ("Conv" if kind == "conv" else "Mul") and ops[-1] == "Softmax"

    photos = real_photos()
    spec = bundle.preprocess
    ref = run_onnx(bundle.root / "model.onnx", np.stack([preprocess(im, spec) for im in photos])).astype(np.float64)
    ref = np.exp(ref - ref.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    got = run_onnx(out / prop["onnx-file"], nvinfer_input(photos, prop, spec))
    assert np.abs(got - ref).max() < 1e-4
    assert (got.argmax(1) == ref.argmax(1)).all()
    if kind == "conv":
        assert len(set(ref.argmax(1))) > 1  # the photos are told apart: the check is not of one constant answer


def test_deepstream_primary_and_bad_options(color_bundle: Bundle, tmp_path: Path, capsys) -> None:
    out = tmp_path / "primary"
    assert main(["export", "deepstream", "--bundle", str(color_bundle.root), "--out", str(out), "--mode", "primary",
                 "--precision", "fp32"]) == 0
    prop = read_key_file(out / "config_infer_erudite.txt")["property"]
    assert (prop["process-mode"], prop["network-mode"], prop["gie-unique-id"]) == ("1", "0", "1")
    assert "operate-on-gie-id" not in prop
    for args in (["--mode", "tertiary"], ["--precision", "int8"], ["--threshold", "1.5"]):
        capsys.readouterr()
        assert main(["export", "deepstream", "--bundle", str(color_bundle.root), "--out", str(tmp_path / "x"), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), (args, err)
    assert not (tmp_path / "x").exists()
