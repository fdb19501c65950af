"""Engine entries in bundle.json keyed by build kind (issue 24 item 2): role, precision as built (`best`
included) and DLA core. A `best` build no longer replaces the int8 engine, a DLA build no longer replaces
the GPU fp16 engine, and a run takes the engine of exactly the kind it asks for (or says, in one line,
which engines there are). TensorRT cannot exist here: where a backend choice needs it, the TensorRT probe
is replaced (named as such) and where a build runs, TensorRT and Polygraphy are FAKES (tests/fakes_tensorrt.py).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from erudite_edge.backends import registry
from erudite_edge.backends.registry import RunnerOptions, choose_backend
from erudite_edge.cli.app import main as cli_main
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.check_set import write_check_set
from erudite_edge.errors import BundleError
from tensorrt_bundles import make_bundle


def engine_file(bundle: Bundle, name: str) -> str:
    (bundle.root / name).write_bytes(b"placeholder engine bytes (no TensorRT here) " + name.encode())
    return name


def bundle_with_engines(tmp_path, kinds) -> Bundle:
    """A real bundle with an int8 ONNX model and placeholder engine files of the given (precision, dla_core) kinds."""
    bundle = make_bundle(tmp_path / "b")
    shutil.copy(bundle.root / "model.onnx", bundle.root / "model.int8.onnx")
    bundle.add_model("main", "int8", "model.int8.onnx", info={"target": "tensorrt"})
    for precision, dla in kinds:
        name = f"model.{precision}{'' if dla is None else f'.dla{dla}'}.engine"
        bundle.add_model("main", precision, engine_file(bundle, name), fmt="engine", dla_core=dla)
    bundle.save()
    return Bundle.load(bundle.root)


ALL_KINDS = [("int8", None), ("best", None), ("fp16", None), ("fp16", 0)]


def test_best_and_dla_engines_sit_beside_int8_and_gpu_fp16(tmp_path):
    bundle = bundle_with_engines(tmp_path, ALL_KINDS)  # each added after the one it used to replace
    engines = {(m.precision, m.dla_core): m.file for m in bundle.models if m.format == "engine"}
    assert engines == {("int8", None): "model.int8.engine", ("best", None): "model.best.engine",
                       ("fp16", None): "model.fp16.engine", ("fp16", 0): "model.fp16.dla0.engine"}
    assert bundle.find("main", "int8", "engine").file == "model.int8.engine"
    assert bundle.find("main", "fp16", "engine").file == "model.fp16.engine"  # the GPU engine, not the DLA one
    assert bundle.find("main", "fp16", "engine", dla_core=0).file == "model.fp16.dla0.engine"
    assert bundle.find("main", "fp16", "engine", dla_core=1) is None
    # the same kind again replaces only that kind
    bundle.add_model("main", "best", engine_file(bundle, "model.best.engine"), fmt="engine")
    assert len([m for m in bundle.models if m.format == "engine"]) == 4
    with pytest.raises(ValueError):
        bundle.add_model("main", "best", "model.onnx")  # best exists only as an engine
    with pytest.raises(ValueError):
        bundle.add_model("main", "fp16", "model.onnx", dla_core=0)  # only engines are built for a DLA core


def test_entries_written_before_engine_kinds_were_keyed_read_as_what_they_are(tmp_path, tensorrt_here):
    """A bundle.json from before: the best engine recorded as int8 and the DLA engine without its core; the
    sidecar copy in `info` says what they are, so `int8` and GPU `fp16` do not find them."""
    from erudite_edge.core.bundle import file_sha256

    bundle = make_bundle(tmp_path / "b")
    for p in ("int8", "fp16"):  # the ONNX models a run falls back to
        shutil.copy(bundle.root / "model.onnx", bundle.root / f"model.{p}.onnx")
        bundle.add_model("main", p, f"model.{p}.onnx", info={"target": "tensorrt"})
    for name, precision, sidecar in [("model.best.engine", "int8", {"precision": "best", "dla_core": None}),
                                     ("model.fp16.dla1.engine", "fp16", {"precision": "fp16", "dla_core": 1})]:
        engine_file(bundle, name)
        bundle.meta["models"].append({"role": "main", "precision": precision, "file": name, "format": "engine",
                                      "sha256": file_sha256(bundle.root, name), "num_outputs": 5, "info": sidecar})
    bundle.save()
    old = Bundle.load(bundle.root)
    assert old.find("main", "int8", "engine") is None and old.find("main", "fp16", "engine") is None
    assert old.find("main", "best", "engine").file == "model.best.engine"
    assert old.find("main", "fp16", "engine", dla_core=1).file == "model.fp16.dla1.engine"
    # `run --precision int8` / `fp16` do not load them: no such engine, so the ONNX model (auto) runs
    for p in ("int8", "fp16"):
        assert choose_backend(old, options=RunnerOptions(precision=p)).backend == "onnxruntime"
    old.add_model("main", "int8", engine_file(old, "model.int8.engine"), fmt="engine")  # keeps the best entry
    assert {m.precision for m in old.models if m.format == "engine"} == {"int8", "best", "fp16"}


@pytest.fixture
def tensorrt_here(monkeypatch):
    """The TensorRT probe answers "available" (a stand-in module object; nothing is loaded: these tests only choose)."""
    monkeypatch.setattr(registry, "_tensorrt_module", lambda: (object(), ""))


def test_a_run_takes_the_engine_of_exactly_the_kind_asked(tmp_path, tensorrt_here):
    bundle = bundle_with_engines(tmp_path, [("best", None), ("fp16", 0)])

    def choice(**kw):
        c = choose_backend(bundle, options=RunnerOptions(**kw))
        return c.backend, c.fmt, c.precision, c.dla_core

    assert choice(precision="best") == ("tensorrt", "engine", "best", None)
    # int8: the best engine is not an int8 engine; auto falls to the int8 ONNX model, tensorrt builds an int8 engine
    assert choice(precision="int8") == ("onnxruntime", "onnx", "int8", None)
    assert choice(backend="tensorrt", precision="int8") == ("tensorrt", "cache", "int8", None)
    # the DLA engine only when its core is asked for
    assert choice() == ("tensorrt", "engine", "best", None)  # auto: a GPU engine (fp16, int8, best, fp32 in turn)
    assert choice(dla_core=0) == ("tensorrt", "engine", "fp16", 0)
    assert choice(backend="tensorrt", precision="fp16", dla_core=0) == ("tensorrt", "engine", "fp16", 0)


@pytest.mark.parametrize("options", [dict(dla_core=1), dict(precision="int8", dla_core=0),
                                     dict(backend="tensorrt", precision="fp16", dla_core=1)])
def test_a_missing_engine_kind_is_one_line_listing_the_engines_there_are(tmp_path, tensorrt_here, options):
    bundle = bundle_with_engines(tmp_path, [("best", None), ("fp16", 0)])
    with pytest.raises(BundleError) as e:
        choose_backend(bundle, options=RunnerOptions(**options))
    msg = str(e.value)
    assert "\n" not in msg and f"for DLA core {options['dla_core']}" in msg
    assert "(engines: best engine, fp16 engine for DLA core 0)" in msg and "export engine" in msg


def test_from_bundle_never_substitutes_another_engine(tmp_path):
    """TensorRTRunner.from_bundle asked for int8 used to take the engine recorded as int8, which a best build
    had replaced; now it takes the int8 engine or says which engines there are (before touching TensorRT)."""
    from erudite_edge.backends.tensorrt.runner import TensorRTRunner

    bundle = bundle_with_engines(tmp_path, [("best", None)])
    with pytest.raises(BundleError, match=r"no int8 engine for role 'main' \(engines: best engine\)"):
        TensorRTRunner.from_bundle(bundle, "main", "int8")
    with pytest.raises(BundleError, match="no fp16 engine for DLA core 0"):
        TensorRTRunner.from_bundle(bundle, "main", "fp16", dla_core=0)


def test_build_records_each_kind_beside_the_others(tmp_path, monkeypatch):
    """Over FAKES of TensorRT and Polygraphy: int8, then best, then fp16, then fp16 on DLA core 0 built into one
    bundle leave four engine entries (before, best replaced int8 and the DLA build replaced the GPU fp16)."""
    import erudite_edge.backends.tensorrt.build as build_mod
    import erudite_edge.backends.tensorrt.runner as runner_mod
    from fakes_tensorrt import FAKE_GPU, EngineSpec, FakeBuild, FakeDevice, install_fake_polygraphy_build, install_fake_tensorrt
    from tensorrt_bundles import TRT10

    bundle = bundle_with_engines(tmp_path, [])
    spec = EngineSpec(weights=np.ones((3, bundle.expected_outputs("main")), np.float32), size=32, profile=(4, 4, 4))
    device = FakeDevice()
    trt = install_fake_tensorrt(monkeypatch, spec, device)
    trt.BuilderFlag = type("BuilderFlag", (), {"__members__": {n: n for n in TRT10.builder_flags}})
    trt.NetworkDefinitionCreationFlag = type("Net", (), {"__members__": {n: n for n in TRT10.network_flags}})
    install_fake_polygraphy_build(monkeypatch, trt, spec, FakeBuild(dla_cores=1))
    monkeypatch.setattr(runner_mod, "open_device", lambda: device)
    monkeypatch.setattr(build_mod, "current_device", lambda: FAKE_GPU)
    for precision, dla in ALL_KINDS:
        build_mod.build_engine(bundle, precision, batch="4:4:4", dla_core=dla)
    again = Bundle.load(bundle.root)
    engines = {(m.precision, getattr(m, "dla_core", None)): m.file for m in again.models if m.format == "engine"}
    assert engines == {("int8", None): "model.int8.engine", ("best", None): "model.best.engine",
                       ("fp16", None): "model.fp16.engine", ("fp16", 0): "model.fp16.dla0.engine"}
    assert again.find("main", "best", "engine").info["precision"] == "best"


@pytest.mark.parametrize("args, words", [
    (["--dla-core", "0"], "--dla-core 0 runs a TensorRT engine"),
    (["--dla-core", "-1"], "--dla-core -1: a DLA core is numbered from 0"),
    (["--dla-core", "0", "--backend", "onnxruntime"], "a DLA runs TensorRT engines"),
])
def test_check_dla_core_is_one_line(tmp_path, capsys, args, words):
    bundle = make_bundle(tmp_path / "b")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    write_check_set(bundle, x, "test", False, lambda role, batch: np.zeros((len(batch), 5), np.float32))
    bundle.save()
    code = cli_main(["check", str(bundle.root), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
