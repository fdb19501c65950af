"""TensorRTRunner's own logic over a FAKE tensorrt module and a FAKE device layer (tests/fakes_tensorrt.py).

These prove erudite-edge's code around TensorRT (padding, trimming, the FP16 cast, the I/O check,
buffer lifetime, refusing foreign or corrupt engines); they are no evidence that TensorRT or CUDA
behave as the fakes do. The real thing is checked by tools/device_check.sh on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from erudite_edge.backends.tensorrt.runner import TensorRTRunner
from erudite_edge.backends.tensorrt.sidecar import DeviceInfo
from erudite_edge.errors import BundleError
from fakes_tensorrt import CORRUPT, FAKE_GPU, EngineSpec, FakeDevice, install_fake_tensorrt, write_fake_engine

FAKE_GPU_NAME = FAKE_GPU.name


def make(tmp_path, monkeypatch, **spec_kw):
    rng = np.random.default_rng(0)
    spec = EngineSpec(weights=rng.standard_normal((3, 5)).astype(np.float32), **spec_kw)
    device = FakeDevice()
    trt = install_fake_tensorrt(monkeypatch, spec, device)
    engine = write_fake_engine(tmp_path / "model.fp16.engine", spec)
    return spec, device, trt, engine


def batch(n, size=8, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def test_infer_matches_the_engine_and_trims_to_the_batch(tmp_path, monkeypatch):
    spec, device, trt, engine = make(tmp_path, monkeypatch, profile=(1, 4, 8))
    with TensorRTRunner(engine, device=device) as runner:
        assert runner.max_batch == 8
        for n in (8, 3, 1, 5):  # a smaller batch after a larger one: no stale rows from the last call
            x = batch(n, seed=n)
            y = runner.infer(x)
            assert y.shape == (n, 5) and y.dtype == np.float32
            np.testing.assert_allclose(y, spec.reference(x), rtol=1e-5, atol=1e-6)
        assert runner.last_compute_ms == 0.25


def test_pads_below_the_profile_minimum_and_drops_the_padding(tmp_path, monkeypatch):
    spec, device, trt, engine = make(tmp_path, monkeypatch, profile=(4, 4, 8))
    with TensorRTRunner(engine, device=device) as runner:
        x = batch(2)
        y = runner.infer(x)
        ctx = trt.last_engine.contexts[0]
        assert ctx.runs[-1] == (4, 3, 8, 8)  # the engine ran its minimum batch
        assert y.shape == (2, 5)
        np.testing.assert_allclose(y, spec.reference(x), rtol=1e-5, atol=1e-6)


def test_fp16_input_is_cast_on_the_host(tmp_path, monkeypatch):
    spec, device, trt, engine = make(tmp_path, monkeypatch, input_dtype="HALF")
    with TensorRTRunner(engine, device=device) as runner:
        assert runner.input_dtype == np.float16
        x = batch(3) * 1000.123
        y = runner.infer(x)
        np.testing.assert_allclose(y, spec.reference(x.astype(np.float16)), rtol=1e-5, atol=1e-3)
        assert not np.allclose(y, spec.reference(x), rtol=1e-7, atol=0)  # it really went through float16


def test_one_input_one_output_is_checked(tmp_path, monkeypatch):
    _, device, _, engine = make(tmp_path, monkeypatch, outputs=("logits", "features"))
    with pytest.raises(BundleError, match="one of each"):
        TensorRTRunner(engine, device=device)
    assert device.memory == {} and device.pinned_live == 0  # nothing allocated, nothing leaked


def test_expected_outputs_and_batch_checks(tmp_path, monkeypatch):
    _, device, _, engine = make(tmp_path, monkeypatch, profile=(1, 2, 4))
    with pytest.raises(BundleError, match="expects 7"):
        TensorRTRunner(engine, device=device, expected_outputs=7)
    with TensorRTRunner(engine, device=device, expected_outputs=5) as runner:
        with pytest.raises(ValueError, match="exceeds"):
            runner.infer(batch(5))
        assert runner.infer_chunked(batch(5)).shape == (5, 5)
        with pytest.raises(ValueError, match="does not fit"):
            runner.infer(np.zeros((1, 3, 9, 9), np.float32))


def test_close_frees_every_buffer_once(tmp_path, monkeypatch):
    _, device, _, engine = make(tmp_path, monkeypatch)
    runner = TensorRTRunner(engine, device=device)
    assert len(device.memory) == 2 and device.pinned_live == 2 and device.events_live == 4  # h2d, start, end, d2h
    runner.close()
    runner.close()
    assert device.memory == {} and device.pinned_live == 0 and device.events_live == 0 and device.streams_freed == 1
    with pytest.raises(RuntimeError, match="closed"):
        runner.infer(batch(1))


def test_corrupt_engine_is_one_line(tmp_path, monkeypatch):
    spec, device, _, engine = make(tmp_path, monkeypatch)
    write_fake_engine(engine, spec, content=CORRUPT + b"\x00\x01")
    with pytest.raises(BundleError) as e:
        TensorRTRunner(engine, device=device)
    assert "cannot deserialise" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("field", ["tensorrt_version", "device"])
def test_foreign_engine_is_refused_before_deserialising(tmp_path, monkeypatch, field):
    from erudite_edge.backends.tensorrt.sidecar import DeviceInfo

    spec, device, trt, engine = make(tmp_path, monkeypatch)
    if field == "tensorrt_version":
        write_fake_engine(engine, spec, tensorrt_version="8.6.2.3")
    else:
        write_fake_engine(engine, spec, device=DeviceInfo("Orin", (8, 7)))
    with pytest.raises(BundleError, match="rebuild it") as e:
        TensorRTRunner(engine, device=device)
    assert "\n" not in str(e.value)
    assert "last_engine" not in trt.__dict__  # never handed to TensorRT


@pytest.mark.parametrize("built, words", [
    (dict(device="agx"), "Orin (sm_87, 16 SMs, 30536 MiB, 2 DLA cores)"),
    (dict(device="more_memory"), "15656 MiB"),
    (dict(device="dla_cores"), "2 DLA cores"),
    (dict(erudite_edge_version="0.0.9"), "by erudite-edge 0.0.9"),
    (dict(polygraphy_version="0.49.9"), "with Polygraphy 0.49.9"),
])
def test_an_engine_for_another_module_or_from_another_build_is_refused_in_one_line(tmp_path, monkeypatch, built, words):
    """Issue 24 item 6: an engine given explicitly (a bundle's) is refused, in one line saying to rebuild it, when
    it was built on another module of the same name and capability (SM count, memory, DLA cores) or by
    another erudite-edge or Polygraphy; never deserialised."""
    from dataclasses import replace

    here = DeviceInfo("Orin", (8, 7), sm_count=8, total_memory_mib=7620)  # an Orin Nano; TensorRT sees no DLA
    spec, device, trt, engine = make(tmp_path, monkeypatch)
    device.info = here
    other = {"agx": replace(here, sm_count=16, total_memory_mib=30536, dla_cores=2),
             "more_memory": replace(here, total_memory_mib=15656), "dla_cores": replace(here, dla_cores=2)}
    kw = dict(built)
    write_fake_engine(engine, spec, device=other[kw.pop("device")] if "device" in kw else replace(here, dla_cores=0), **kw)
    with pytest.raises(BundleError, match="rebuild it") as e:
        TensorRTRunner(engine, device=device)
    assert "\n" not in str(e.value) and words in str(e.value), str(e.value)
    assert "last_engine" not in trt.__dict__ and device.memory == {}


def test_an_engine_whose_sidecar_predates_the_device_facts_still_runs(tmp_path, monkeypatch):
    """A sidecar without SM count, memory, DLA cores or Polygraphy version: unknown is never a mismatch."""
    spec, device, trt, engine = make(tmp_path, monkeypatch)
    write_fake_engine(engine, spec, device=DeviceInfo(FAKE_GPU_NAME, (8, 7)), polygraphy_version=None)
    with TensorRTRunner(engine, device=device) as runner:
        assert runner.device.sm_count == 8 and runner.device.dla_cores == 0
        assert runner.infer(batch(2)).shape == (2, 5)


def test_dla_engine_runs_on_its_core(tmp_path, monkeypatch):
    spec, device, trt, engine = make(tmp_path, monkeypatch)
    write_fake_engine(engine, spec, dla_core=1)
    with TensorRTRunner(engine, device=device):
        assert trt.dla_core_at_load == 1  # the runtime's DLA core was set before deserialising


def test_dla_engine_is_fed_exactly_its_batch(tmp_path, monkeypatch):
    """A DLA runs the one shape it was built for (issue 24 item 1): every batch is padded to it, none is
    larger; an engine recorded for a DLA core with a range profile (built before static DLA builds) gets its
    OPT batch, never another size."""
    for profile in [(4, 4, 4), (1, 4, 8)]:
        spec, device, trt, engine = make(tmp_path, monkeypatch, profile=profile)
        write_fake_engine(engine, spec, dla_core=0)
        with TensorRTRunner(engine, device=device) as runner:
            assert runner.max_batch == 4
            x = batch(3)
            y = runner.infer(x)
            ctx = trt.last_engine.contexts[0]
            assert ctx.runs[-1] == (4, 3, 8, 8) and y.shape == (3, 5)  # the short batch padded to 4, padding dropped
            np.testing.assert_allclose(y, spec.reference(x), rtol=1e-5, atol=1e-6)
            x = batch(10, seed=2)
            np.testing.assert_allclose(runner.infer_chunked(x), spec.reference(x), rtol=1e-5, atol=1e-6)
            assert ctx.runs[-3:] == [(4, 3, 8, 8)] * 3  # 4 + 4 + 2 padded to 4
            with pytest.raises(ValueError, match="exceeds"):
                runner.infer(batch(5))


def test_uint8_engine_input_takes_bytes_and_refuses_floats(tmp_path, monkeypatch):
    """A bundle exported with --input uint8 gives an engine whose input binding is UINT8: the runner copies
    the bytes as they are (a quarter of float32's traffic) and refuses a float batch rather than wrap it."""
    spec, device, trt, engine = make(tmp_path, monkeypatch, input_dtype="UINT8")
    with TensorRTRunner(engine, device=device) as runner:
        assert runner.input_dtype == np.uint8
        x = np.random.default_rng(3).integers(0, 256, size=(4, 3, 8, 8), dtype=np.uint8)
        np.testing.assert_allclose(runner.infer(x), spec.reference(x), rtol=1e-5, atol=1e-5)
        assert set(runner.last_stage_ms) == {"h2d", "compute", "d2h"}
        with pytest.raises(ValueError, match="uint8"):
            runner.infer(batch(2))


def test_a_batch_in_our_pinned_memory_goes_to_the_device_without_staging(tmp_path, monkeypatch):
    """A pipeline's input ring allocated by host_allocator: its batches are copied to the device from their
    slots; any other batch (numpy memory, a non-contiguous view, padding below the profile) is staged."""
    from erudite_edge.inference.batch_buffer import InputRing

    spec, device, trt, engine = make(tmp_path, monkeypatch, input_dtype="UINT8", profile=(2, 4, 8))
    with TensorRTRunner(engine, device=device) as runner:
        pinned_before = device.pinned_live
        allocate = runner.host_allocator()
        ring_mem = allocate(8 * 3 * 8 * 8).reshape(8, 3, 8, 8)
        assert device.pinned_live == pinned_before + 1
        ring_mem[:] = np.random.default_rng(5).integers(0, 256, size=ring_mem.shape, dtype=np.uint8)
        runner._h_in[:] = 0xAB  # the staging buffer: must stay untouched by a direct batch
        y = runner.infer(ring_mem[2:6])
        assert not runner.last_staged and (runner._h_in == 0xAB).all()
        np.testing.assert_allclose(y, spec.reference(ring_mem[2:6]), rtol=1e-5, atol=1e-5)
        y = runner.infer(ring_mem[::2])  # strided: not one contiguous range, staged
        assert runner.last_staged
        np.testing.assert_allclose(y, spec.reference(ring_mem[::2]), rtol=1e-5, atol=1e-5)
        assert runner.infer(ring_mem[:1]).shape == (1, 5) and runner.last_staged  # padded to the minimum of 2
        numpy_batch = ring_mem[:4].copy()
        np.testing.assert_allclose(runner.infer(numpy_batch), spec.reference(numpy_batch), rtol=1e-5, atol=1e-5)
        assert runner.last_staged

        # an InputRing on that allocator puts its slots and its gather buffer in page-locked memory
        class _Spec:
            np_dtype = np.uint8

            def batch_shape(self, n):
                return (n, 3, 8, 8)

        ring = InputRing(_Spec(), batch=4, depth=4, allocate=allocate)  # type: ignore[arg-type]
        assert ring.pinned and device.pinned_live == pinned_before + 3
        ring.slot(0)[:] = 7
        ring.slot(1)[:] = 9
        runner.infer(ring.batch_of([0, 1]))
        assert not runner.last_staged
    assert device.pinned_live == 0  # the runner's close freed what it handed out too


# -- closing (issue 24 item 7) ---------------------------------------------------------------------------
def test_close_waits_for_the_stream_before_releasing_anything(tmp_path, monkeypatch):
    """An execution or copy still queued on the stream must finish before its context, engine or buffers
    go: close synchronises first (the code before dropped context and engine, then synchronised)."""
    _, device, _, engine = make(tmp_path, monkeypatch)
    runner = TensorRTRunner(engine, device=device)
    runner.infer(batch(2))
    alive_at_sync: list[tuple[bool, bool, bool, int, int, int]] = []
    device.on_sync = lambda: alive_at_sync.append((hasattr(runner, "context"), hasattr(runner, "engine"),
                                                   hasattr(runner, "runtime"), len(device.memory),
                                                   device.pinned_live, device.events_live))
    device.log.clear()
    runner.close()
    assert alive_at_sync == [(True, True, True, 2, 2, 4)]  # everything the queued work could touch, still there
    assert device.log[0] == "synchronize" and device.log.count("synchronize") == 1
    assert device.log[-1] == "free stream" and not hasattr(runner, "context")
    runner.close()  # idempotent: nothing synchronised or freed twice
    assert device.log.count("synchronize") == 1 and device.pinned_live == 0 and device.events_live == 0


def _pipeline_parts(tmp_path, monkeypatch):
    from erudite_edge.api import ImagesSource
    from erudite_edge.core.preprocess import PreprocessSpec
    from tensorrt_bundles import LABELS

    spec, device, trt, engine = make(tmp_path, monkeypatch, profile=(1, 4, 8))
    images = [np.full((12, 12, 3), 40 * i, np.uint8) for i in range(6)]
    return device, engine, LABELS, PreprocessSpec.square(8), lambda: ImagesSource(images, "RGB")


def test_the_pipeline_gives_its_ring_back_before_the_runner_closes(tmp_path, monkeypatch):
    from erudite_edge.inference.models import EruditeModel
    from erudite_edge.inference.pipeline import Pipeline

    device, engine, labels, pre, source = _pipeline_parts(tmp_path, monkeypatch)
    runner = TensorRTRunner(engine, device=device)
    own = device.pinned_live  # the runner's staging buffers
    pipe = Pipeline(EruditeModel(runner, labels), labels, pre, batch=4, workers=1, progress=False, handle_signals=False)
    assert pipe.ring.pinned and device.pinned_live == own + 2  # the ring's slots and its gather buffer
    assert pipe.run(source()).frames == 6 and not runner.last_staged  # batches went from the ring's slots
    pipe.close()
    assert device.pinned_live == own  # freed now, while the runner is open
    with pytest.raises(RuntimeError, match="released"):
        pipe.ring.slot(0)
    with pytest.raises(RuntimeError, match="pipeline is closed"):
        pipe.run(source())
    pipe.close()  # idempotent
    runner.close()
    assert device.pinned_live == 0


def test_a_ring_whose_runner_closed_raises_instead_of_touching_freed_memory(tmp_path, monkeypatch):
    from erudite_edge.inference.batch_buffer import InputRing

    device, engine, labels, pre, _ = _pipeline_parts(tmp_path, monkeypatch)
    runner = TensorRTRunner(engine, device=device)
    allocate = runner.host_allocator()
    ring = InputRing(pre, batch=4, depth=4, allocate=allocate)
    ring.slot(0)[:] = 1
    runner.close()
    assert device.pinned_live == 0  # the runner freed what it handed out, ring included
    for use in (lambda: ring.slot(1), lambda: ring.batch_of([0, 1])):
        with pytest.raises(RuntimeError, match="runner that allocated it is closed"):
            use()
    for use in (lambda: allocate(64), runner.host_allocator, lambda: runner.infer(batch(1))):
        with pytest.raises(RuntimeError, match="closed"):
            use()
    ring.release()  # after the runner: nothing freed twice
    assert device.pinned_live == 0


def test_classifier_releases_its_rings_first_and_keeps_no_pinned_memory_between_calls(tmp_path, monkeypatch):
    """Classifier.predict makes a pipeline per call: its ring goes back when the call ends (the code before
    kept every call's ring until the runner closed), and Classifier.close releases the rings of pipelines
    still open before it closes the runner."""
    import erudite_edge.api as api
    from erudite_edge.inference.models import EruditeModel
    from tensorrt_bundles import make_bundle

    device, engine, labels, pre, _ = _pipeline_parts(tmp_path, monkeypatch)
    bundle = make_bundle(tmp_path / "b", size=8)
    runner = TensorRTRunner(engine, device=device)
    monkeypatch.setattr(api, "load_model", lambda b, options, announce: EruditeModel(runner, b.labels))
    clf = api.Classifier(bundle, batch=4)
    own = device.pinned_live
    for _ in range(3):
        assert len(clf.predict([np.zeros((12, 12, 3), np.uint8)] * 5, color="RGB")) == 5
        assert device.pinned_live == own
    pipe = clf.pipeline()  # made, never run: Classifier.close gives its ring back before closing the runner
    assert device.pinned_live == own + 2
    device.log.clear()
    clf.close()
    # the ring's two buffers (slots, gather) are freed first, then the runner synchronises and releases its own
    assert [e.startswith("free pinned") for e in device.log[:2]] == [True, True], device.log
    assert device.log[2] == "synchronize", device.log
    assert pipe.ring.released and device.pinned_live == 0
