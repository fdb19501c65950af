"""The options erudite-edge gives ONNX Runtime's TensorRT execution provider (which cannot run here: no
GPU): precision flags, the profile over the bundle's input, an engine cache per model file outside the
bundle, and the runner that never feeds the provider a batch above the profile. The session is the real
ONNX Runtime (CPU); where a test needs the session "set up for the TensorRT EP", this onnxruntime is told
it has the provider and the session then runs on the CPU with the options it was given recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner, provider_options
from erudite_edge.backends.ort_tensorrt_ep import tensorrt_ep_options
from erudite_edge.backends.registry import RunnerOptions, load_runner
from erudite_edge.cli.app import main as cli_main
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.check_set import write_check_set
from erudite_edge.core.fileio import sha256_file
from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import BundleError
from tensorrt_bundles import make_bundle, tiny_onnx

SHA = "ab" * 32


def test_options_follow_precision_profile_and_cache(tmp_path):
    spec = PreprocessSpec.square(224)
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    fp16 = tensorrt_ep_options("fp16", spec, "images", env=env, model_sha256=SHA)
    assert fp16["trt_fp16_enable"] and not fp16["trt_int8_enable"]
    assert fp16["trt_profile_min_shapes"] == "images:1x3x224x224"
    assert fp16["trt_profile_opt_shapes"] == "images:8x3x224x224"
    assert fp16["trt_profile_max_shapes"] == "images:32x3x224x224"
    assert fp16["trt_engine_cache_path"] == str(tmp_path / "xdg" / "erudite-edge" / "ort-tensorrt" / SHA)
    assert fp16["trt_timing_cache_path"] == str(tmp_path / "xdg" / "erudite-edge" / "ort-tensorrt")
    int8 = tensorrt_ep_options("int8", spec, env=env, model_sha256=SHA)
    assert int8["trt_int8_enable"] and int8["trt_fp16_enable"]
    fp32 = tensorrt_ep_options("fp32", spec, env=env, model_sha256=SHA)
    assert not fp32["trt_fp16_enable"] and not fp32["trt_int8_enable"]


def test_a_sha256_that_is_not_one_is_refused_in_one_line(tmp_path):
    """The sha256 becomes a directory name: a damaged bundle.json must not point it elsewhere."""
    for bad in ("../../etc", "", "xyz", SHA[:-1]):
        with pytest.raises(BundleError, match="not 64 hex digits") as e:
            tensorrt_ep_options("fp16", PreprocessSpec.square(32), env={"XDG_CACHE_HOME": str(tmp_path)}, model_sha256=bad)
        assert "\n" not in str(e.value)


def test_provider_options_put_them_on_the_tensorrt_provider_only(tmp_path):
    opts = tensorrt_ep_options("fp16", PreprocessSpec.square(32), env={"XDG_CACHE_HOME": str(tmp_path)}, model_sha256=SHA)
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    out = provider_options(providers, tmp_path / "bundle" / "model.onnx", opts)
    assert out[0] == ("TensorrtExecutionProvider", opts) and out[1:] == providers[1:]
    assert Path(opts["trt_engine_cache_path"]).is_dir() and not (tmp_path / "bundle").exists()  # nothing in the bundle
    assert provider_options(["CPUExecutionProvider"], tmp_path / "model.onnx", opts) == ["CPUExecutionProvider"]


def test_profile_max_batch_reads_the_shapes_onnx_runtime_is_given():
    from erudite_edge.backends.ort_tensorrt_ep import profile_max_batch

    opts = tensorrt_ep_options("fp16", PreprocessSpec.square(32), env={"XDG_CACHE_HOME": "/nowhere"}, model_sha256=SHA,
                               profile=(1, 4, 16))
    assert profile_max_batch(opts, "images") == 16
    assert profile_max_batch({"trt_profile_max_shapes": "a:4x3,images:7x3x8x8"}, "images") == 7
    assert profile_max_batch(opts, "other") is None and profile_max_batch(None, "images") is None


# -- the session set up for the TensorRT EP, on the real ONNX Runtime ------------------------------------
@pytest.fixture
def trt_ep_sessions(monkeypatch):
    """This onnxruntime claims the TensorRT EP; each session's TensorRT options are recorded, and the session
    is made on the CPU (the provider cannot load here)."""
    seen: list[dict] = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])

    def session(path, sess_options=None, providers=None, **kw):
        trt = [p[1] for p in providers or [] if isinstance(p, tuple) and p[0] == "TensorrtExecutionProvider"]
        seen.append(dict(trt[0]) if trt else {})
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", session)
    return seen


def reweighted(bundle: Bundle, seed: int) -> Bundle:
    """The same model file name and topology with other weights (a retrained or re-calibrated model)."""
    tiny_onnx(bundle.root / "model.onnx", bundle.expected_outputs("main"), seed=seed)
    bundle.add_model("main", "fp32", "model.onnx")
    bundle.save()
    return Bundle.load(bundle.root)


def load(bundle: Bundle):
    return load_runner(bundle, "main", RunnerOptions(backend="onnxruntime", precision="fp32"), announce=None)


def test_same_topology_other_weights_get_their_own_engine_cache(tmp_path, monkeypatch, trt_ep_sessions):
    """ONNX Runtime names cached engines by file name and tensor names, not weights: two models that differ
    only in weights must not share an engine cache directory, or the second returns the first one's logits."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    a = make_bundle(tmp_path / "a")
    b = reweighted(make_bundle(tmp_path / "b"), seed=1)
    ma, mb = (onnx.load(str(x.root / "model.onnx")).graph for x in (a, b))
    assert [n.output for n in ma.node] == [n.output for n in mb.node]  # what ORT's engine id hashes: the same
    assert [i.name for i in ma.initializer] == [i.name for i in mb.initializer]
    assert ma.initializer[0].raw_data != mb.initializer[0].raw_data  # the weights: not the same
    for bundle in (a, b, a):
        with load(bundle):
            pass
    dirs = [Path(s["trt_engine_cache_path"]) for s in trt_ep_sessions]
    assert len(dirs) == 3 and dirs[0] != dirs[1] and dirs[2] == dirs[0]  # the same model finds its own cache again
    for d, bundle in zip(dirs, (a, b)):
        assert d.name == sha256_file(bundle.root / "model.onnx") and d.is_dir()
        assert d.parent == tmp_path / "xdg" / "erudite-edge" / "ort-tensorrt"
    # a model re-exported in place (same bundle, same file name, new weights) gets a new directory too
    reweighted(a, seed=2)
    with load(Bundle.load(a.root)):
        pass
    assert Path(trt_ep_sessions[-1]["trt_engine_cache_path"]) not in dirs


def test_without_options_the_cache_beside_the_model_is_per_file_contents(tmp_path):
    path = tiny_onnx(tmp_path / "model.onnx", 3, seed=0)
    first = provider_options(["TensorrtExecutionProvider"], path)[0][1]["trt_engine_cache_path"]
    tiny_onnx(path, 3, seed=1)
    second = provider_options(["TensorrtExecutionProvider"], path)[0][1]["trt_engine_cache_path"]
    assert first != second and Path(second).name == sha256_file(path)


# -- item 4: never a batch above the profile ---------------------------------------------------------------
def sizes_of_runs(runner: OnnxRuntimeRunner) -> list[int]:
    sizes: list[int] = []
    run = runner.session.run

    class Recording:
        def __getattr__(self, name):
            return getattr(runner.session_real, name)

        def run(self, names, feeds, *a, **kw):
            sizes.append(len(next(iter(feeds.values()))))
            return run(names, feeds, *a, **kw)

    runner.session_real = runner.session
    runner.session = Recording()
    return sizes


def test_runner_set_up_for_the_trt_ep_chunks_to_the_profile_max(tmp_path, trt_ep_sessions):
    path = tiny_onnx(tmp_path / "model.onnx", 5, seed=0)
    opts = tensorrt_ep_options("fp32", PreprocessSpec.square(32), env={"XDG_CACHE_HOME": str(tmp_path / "xdg")},
                               model_sha256=sha256_file(path))
    batch = np.random.default_rng(0).standard_normal((64, 3, 32, 32)).astype(np.float32)
    with OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"]) as plain:
        reference = plain.infer(batch)  # one batch of 64: no profile, no chunking
    with OnnxRuntimeRunner(path, trt_options=opts) as runner:
        assert trt_ep_sessions[-1]["trt_profile_max_shapes"] == "images:32x3x32x32"
        assert runner.max_batch == 32
        sizes = sizes_of_runs(runner)
        got = runner.infer_chunked(batch)
    assert sizes == [32, 32]
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)


def test_check_feeds_its_64_inputs_in_chunks_of_the_profile(tmp_path, monkeypatch, capsys, trt_ep_sessions):
    """`check` through the registry's ONNX Runtime runner (set up for the TensorRT EP): no call above 32."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    bundle = make_bundle(tmp_path / "b")
    inputs = np.random.default_rng(1).standard_normal((64, 3, 32, 32)).astype(np.float32)

    def fp32(role, x):
        with OnnxRuntimeRunner(bundle.path(bundle.entry(role, "fp32", "onnx")), providers=["CPUExecutionProvider"]) as r:
            return r.infer(x)  # the reference: one batch of 64, no profile

    write_check_set(bundle, inputs, "test inputs", False, fp32)
    bundle.save()
    sizes: list[int] = []
    original = OnnxRuntimeRunner.infer

    def infer(self, batch):
        sizes.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(OnnxRuntimeRunner, "infer", infer)
    rc = cli_main(["check", str(bundle.root), "--backend", "onnxruntime", "--precision", "fp32"])
    assert rc == 0, capsys.readouterr()
    assert sizes == [32, 32], sizes
