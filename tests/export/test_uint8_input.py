"""uint8 model inputs (issue 14): `export onnx --input uint8` puts Cast, scale, mean/std and transpose in
the graph; bundle.json records it; ONNX Runtime, the torch backend, FP16, INT8 and the pipeline's one
preallocated input buffer follow; the runtime's preprocessing equals training's eval transform on real
photographs. Tiny backbone, 32 px, real images (scikit-image's sample photographs as JPEG files)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner
from erudite_edge.backends.registry import RunnerOptions
from erudite_edge.cli.app import main
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.check_set import load_check_set
from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec, load_image, normalize, preprocess, preprocess_into, resize_image
from erudite_edge.errors import BundleError
from erudite_edge.inference.batch_buffer import InputRing
from erudite_edge.inference.check import check_bundle
from erudite_edge.inference.models import load_model
from erudite_edge.inference.pipeline import Pipeline
from erudite_edge.sources.open import open_source
from export.graph_input import preprocess_nodes
from export.images import photo_variants, sample_photos
from export.onnx_export import export_checkpoint
from train.checkpoint import load_checkpoint, save_checkpoint
from train.model import build_model
from train.model_spec import ModelConfig

pytestmark = pytest.mark.slow  # builds, trains and exports a uint8-input bundle once for the module

COUNTS = [3, 4]
LABELS = LabelSpace.build(["a", "b"], [["x", "y", "z"], ["p", "q", "r", "s"]])
SPEC = PreprocessSpec.square(32, resize="center_crop", crop_ratio=0.8, interpolation="area")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photographs (and crops of them), as JPEG files of different sizes and aspect ratios."""
    folder = tmp_path_factory.mktemp("photos")
    views = photo_variants(sample_photos())
    if not views:
        pytest.skip("scikit-image is not installed (its sample photographs are the real images here)")
    for i, rgb in enumerate(views[::3][:12]):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        buf.tofile(str(folder / f"photo_{i:02d}.jpg"))
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(variant="ours", backbone="tiny", class_counts=COUNTS, embed_dim=16, hidden=16)
    root = tmp_path_factory.mktemp("run") / "run"
    save_checkpoint(root, "best", build_model(cfg).eval(), model_config=cfg, labels=LABELS, preprocess=SPEC)
    return root


@pytest.fixture(scope="module")
def bundles(run: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    """The same run exported both ways: uint8 through the CLI's --input flag, float32 through the API."""
    root = tmp_path_factory.mktemp("bundles")
    rc = main(["export", "onnx", "--checkpoint", str(run), "--out", str(root / "uint8"), "--images", str(photos),
               "--parity-count", "8", "--input", "uint8"])
    assert rc == 0
    return {"uint8": Bundle.load(root / "uint8"),
            "float32": export_checkpoint(run, root / "float32", images=photos, parity_count=8, input_dtype="float32")}


def test_spec_uint8_is_nhwc_rgb_and_old_specs_stay_float() -> None:
    u8 = SPEC.as_input("uint8")
    assert (u8.dtype, u8.layout, u8.sample_shape, u8.np_dtype) == ("uint8", "NHWC", (32, 32, 3), np.uint8)
    assert u8.bytes_per_image * 4 == SPEC.bytes_per_image
    assert u8.host_float() == SPEC
    old = {k: v for k, v in SPEC.to_dict().items() if k not in ("dtype", "layout")}  # a bundle.json from before
    assert PreprocessSpec.from_dict(old).dtype == "float32" and PreprocessSpec.from_dict(old).layout == "NCHW"
    with pytest.raises(ValueError):
        PreprocessSpec(input_size=(8, 8), dtype="uint8", layout="NCHW")


def test_uint8_graph_and_bundle_record(bundles: dict[str, Bundle]) -> None:
    b = bundles["uint8"]
    meta = json.loads((b.root / "bundle.json").read_text())
    assert meta["preprocess"]["dtype"] == "uint8" and meta["preprocess"]["layout"] == "NHWC"
    assert meta["parity"]["main"]["fp32"]["passed"]
    model = onnx.load(str(b.path(b.entry())))
    inp = model.graph.input[0]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [32, 32, 3]
    assert [n.op_type for n in model.graph.node[:4]] == ["Cast", "Transpose", "Mul", "Add"]
    assert len(preprocess_nodes(model)) == 4
    assert load_check_set(b).inputs.dtype == np.uint8


def test_uint8_and_float32_bundles_agree_on_real_images(bundles: dict[str, Bundle], photos: Path) -> None:
    """The same photographs through each bundle's own preprocessing and ONNX Runtime: the same logits up
    to float rounding, so --input uint8 changes where the normalisation runs, not what the model sees."""
    images = [load_image(p) for p in sorted(photos.glob("*.jpg"))]
    logits = {}
    for dt, b in bundles.items():
        x = np.stack([preprocess(im, b.preprocess) for im in images])
        assert x.dtype == (np.uint8 if dt == "uint8" else np.float32)
        with OnnxRuntimeRunner(b.path(b.entry())) as r:
            logits[dt] = r.infer(x)
    scale = max(1.0, float(np.abs(logits["float32"]).max()))
    assert np.abs(logits["uint8"] - logits["float32"]).max() <= 1e-4 * scale
    assert (logits["uint8"].argmax(1) == logits["float32"].argmax(1)).all()
    with OnnxRuntimeRunner(bundles["uint8"].path(bundles["uint8"].entry())) as r, pytest.raises(ValueError, match="uint8"):
        r.infer(np.zeros((1, 32, 32, 3), np.float32))  # a float batch is refused, not wrapped into bytes


def test_runtime_preprocessing_matches_training_eval_transform(bundles: dict[str, Bundle], photos: Path, run: Path) -> None:
    """Training's eval transform (the data set's test item: train/data) against the runtime's: the
    pipeline's uint8 bytes normalised by the graph's own first nodes (cut out of the bundle's model)."""
    b = bundles["uint8"]
    paths = sorted(photos.glob("*.jpg"))
    ckpt = load_checkpoint(run)
    train_x = _training_eval_items(paths, ckpt.preprocess)
    # the runtime: the pipeline's preprocessing into its input ring, then the graph's Cast/Transpose/Mul/Add
    ring = InputRing(b.preprocess, batch=len(paths), depth=0)
    for i, p in enumerate(paths):
        preprocess_into(load_image(p), b.preprocess, ring.slot(i))
    u8 = ring.batch_of(list(range(len(paths))))
    sub = b.root / "preprocess_only.onnx"
    onnx.utils.extract_model(str(b.path(b.entry())), str(sub), ["images"], ["preprocess/normalized"])
    with OnnxRuntimeRunner(sub) as r:
        (graph_x,) = r.session.run(None, {"images": u8})
    assert graph_x.shape == train_x.shape
    assert np.abs(graph_x - train_x).max() <= 1e-5  # same resize, same interpolation, same crop; float rounding only
    with torch.inference_mode():
        ref = ckpt.build_model().inference_graph().eval()(torch.from_numpy(train_x)).numpy()
    with OnnxRuntimeRunner(b.path(b.entry())) as r:
        got = r.infer(u8)
    assert (ref.argmax(1) == got.argmax(1)).all()


def _training_eval_items(paths: list[Path], spec: PreprocessSpec) -> np.ndarray:
    """What training evaluation feeds the model for these files: the joint data set's test-time items."""
    from train.data.dataset import ImageListDataset
    from train.data.samples import Sample

    ds = ImageListDataset([Sample(str(p), 0) for p in paths], dataset_index=0, joint_offset=0, spec=spec, train=False)
    return np.stack([ds[i]["image"].numpy() for i in range(len(paths))])


def test_pipeline_on_uint8_bundle_uses_views_of_one_buffer(bundles: dict[str, Bundle], photos: Path) -> None:
    b = bundles["uint8"]
    clf = load_model(b, RunnerOptions("onnxruntime", "fp32"), announce=None)
    seen: list[np.ndarray] = []
    predict = clf.predict
    clf.predict = lambda x: (seen.append(x), predict(x))[1]  # type: ignore[method-assign]
    pipe = Pipeline(clf, b.labels, b.preprocess, batch=4, workers=2, progress=False)
    summary = pipe.run(open_source(str(photos)))
    assert summary.frames == 12 and len(seen) == 3
    assert all(x.dtype == np.uint8 and np.shares_memory(x, pipe.ring.array) for x in seen)
    first = sorted(photos.glob("*.jpg"))[:4]
    expect = np.stack([resize_image(load_image(p), b.preprocess) for p in first])
    assert np.array_equal(pipe.ring.array[:4], expect)  # written in place, same bytes as the reference resize
    stages = summary.to_dict()["stage_ms"]  # p50 / p99 per stage, as trtexec reports them
    assert list(stages) == ["decode", "preprocess", "inference", "postprocess", "output"]  # no h2d/d2h on the CPU
    assert stages["decode"]["n"] == 12 and stages["inference"]["n"] == 3
    assert all(0 <= v["p50"] <= v["p99"] for v in stages.values())
    assert not pipe.ring.pinned  # ONNX Runtime CPU: numpy memory, read in place
    # a runner with a host allocator (TensorRT's page-locked memory) gets the ring allocated there
    handed: list[np.ndarray] = []

    def allocate(nbytes: int) -> np.ndarray:
        handed.append(np.zeros(nbytes, dtype=np.uint8))
        return handed[-1]

    clf.host_allocator = lambda: allocate  # type: ignore[method-assign]
    seen.clear()
    pipe = Pipeline(clf, b.labels, b.preprocess, batch=4, workers=2, progress=False)
    assert pipe.run(open_source(str(photos))).frames == 12 and pipe.ring.pinned
    assert all(any(np.shares_memory(x, h) for h in handed) for x in seen)
    clf.close()


def test_ring_gathers_a_batch_with_a_gap() -> None:
    spec = SPEC.as_input("uint8")
    ring = InputRing(spec, batch=4, depth=8)
    assert ring.slots % 4 == 0 and ring.slots >= 8 + 4 + 2
    for s in range(6):
        ring.slot(s)[...] = s
    view = ring.batch_of([0, 1, 2, 3])
    assert np.shares_memory(view, ring.array) and ring.copies == 0
    gathered = ring.batch_of([0, 2, 5])  # item 1, 3 and 4 were bad files
    assert not np.shares_memory(gathered, ring.array) and ring.copies == 1
    assert [int(g.flat[0]) for g in gathered] == [0, 2, 5]
    last = ring.slots - 1
    ring.slot(last)[...] = 9
    assert [int(g.flat[0]) for g in ring.batch_of([last, last + 1])] == [9, 0]  # wraps around: gathered


@pytest.mark.parametrize("target", ["tensorrt", "onnxruntime"])
def test_fp16_and_int8_follow_a_uint8_bundle(bundles: dict[str, Bundle], photos: Path, tmp_path: Path, target: str) -> None:
    import shutil

    from export.fp16 import make_fp16
    from export.int8 import Int8Options, make_int8

    root = tmp_path / "b"
    shutil.copytree(bundles["uint8"].root, root)
    if target == "tensorrt":
        make_fp16(Bundle.load(root, verify=True), images=photos, count=8)
    make_int8(Bundle.load(root, verify=True), Int8Options(target=target, calib_images=photos, calib_count=8))
    b = Bundle.load(root)
    for precision in b.precisions():
        model = onnx.load(str(b.path(b.entry("main", precision))))
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
        assert [n.op_type for n in model.graph.node if "images" in n.input] == ["Cast"]
        # the bytes and their normalisation stay float: no Q/DQ on them (only the normalised tensor,
        # the first Conv's input, is quantized for the Conv)
        kept_float = {"images", "preprocess/float", "preprocess/nchw", "preprocess/scaled"}
        quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
        assert not quantized & kept_float
        if precision == "int8":
            assert quantized, "an INT8 model without Q/DQ"
        (result,) = check_bundle(b, RunnerOptions("onnxruntime", precision))
        assert result.count == len(load_check_set(b).inputs) and result.top1_agreement >= 0.75


def test_cli_export_input_flag(run: Path, bundles: dict[str, Bundle], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bundles["uint8"].preprocess.dtype == "uint8"  # made by `export onnx --input uint8` (the fixture)
    rc = main(["export", "onnx", "--checkpoint", str(run), "--out", str(tmp_path / "x"), "--input", "int16"])
    err = capsys.readouterr().err
    assert rc == 2 and "--input" in err and "Traceback" not in err and not (tmp_path / "x").exists()


def test_torch_backend_takes_uint8_bytes(run: Path, bundles: dict[str, Bundle], photos: Path) -> None:
    from erudite_edge.backends.torch_runner import TorchRunner

    images = [load_image(p) for p in sorted(photos.glob("*.jpg"))[:4]]
    u8 = np.stack([preprocess(im, bundles["uint8"].preprocess) for im in images])
    f32 = np.stack([normalize(resize_image(im, SPEC), SPEC) for im in images])
    r = TorchRunner(run)
    assert np.allclose(r.infer(u8), r.infer(f32), atol=1e-5)


def test_bundle_json_with_bad_dtype_is_one_line(bundles: dict[str, Bundle], tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "b"
    shutil.copytree(bundles["uint8"].root, root)
    meta = json.loads((root / "bundle.json").read_text())
    meta["preprocess"]["dtype"] = "int16"
    (root / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="preprocess.dtype"):
        Bundle.load(root)


def test_deepstream_export_of_a_uint8_bundle_cuts_the_graph_normalisation(bundles: dict[str, Bundle], photos: Path,
                                                                         tmp_path: Path) -> None:
    """nvinfer feeds float NCHW and normalises itself: the copy for DeepStream loses the preprocess/ nodes and
    still agrees with the uint8 bundle fed bytes (the parity check on real photographs passes)."""
    import onnx

    from export.deepstream import export_deepstream
    from export.graph_input import preprocess_nodes

    cfg = export_deepstream(bundles["uint8"], tmp_path / "ds", images=[load_image(p) for p in sorted(photos.glob("*.jpg"))])
    parity = json.loads((cfg.parent / "parity.json").read_text())
    assert parity["passed"] and parity["top1_agreement"] == 1.0
    model = onnx.load(str(next(cfg.parent.glob("*.onnx"))))
    inp = model.graph.input[0].type.tensor_type
    assert inp.elem_type == onnx.TensorProto.FLOAT and [d.dim_value for d in inp.shape.dim][1:] == [3, 32, 32]
    assert not preprocess_nodes(model)
