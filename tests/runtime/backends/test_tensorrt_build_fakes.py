"""The engine build's own logic over FAKES of TensorRT, of Polygraphy's build loaders and of the device layer
(tests/fakes_tensorrt.py): which loaders it calls, what it writes, how often the plan is deserialised, what
it refuses for a DLA build and what it reports. They prove erudite-edge's code around the builder, not
that TensorRT builds anything; tools/device_check.sh does that on a GPU."""

from __future__ import annotations

import numpy as np
import pytest

import erudite_edge.backends.tensorrt.runner as runner_mod
from erudite_edge.backends.tensorrt.build import build_checked, parse_batch, plan_build
from erudite_edge.core.check_set import write_check_set
from fakes_tensorrt import (
    FAKE_GPU,
    FAKE_TRT_VERSION,
    EngineSpec,
    FakeBuild,
    FakeDevice,
    install_fake_polygraphy_build,
    install_fake_tensorrt,
)
from tensorrt_bundles import TRT10, make_bundle

SIZE = 8


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """A real bundle (tiny ONNX model, a check set the fake engine agrees with), with TensorRT, Polygraphy's
    loaders and the GPU replaced by FAKES."""
    bundle = make_bundle(tmp_path / "b", size=SIZE)
    rng = np.random.default_rng(0)
    spec = EngineSpec(weights=rng.standard_normal((3, bundle.expected_outputs("main"))).astype(np.float32), size=SIZE)
    device = FakeDevice()
    trt = install_fake_tensorrt(monkeypatch, spec, device)
    build = install_fake_polygraphy_build(monkeypatch, trt, spec, FakeBuild())
    monkeypatch.setattr(runner_mod, "open_device", lambda: device)
    x = rng.standard_normal((6, 3, SIZE, SIZE)).astype(np.float32)
    write_check_set(bundle, x, "test inputs", False, lambda role, batch: spec.reference(batch))
    bundle.save()
    return bundle, spec, device, trt, build


def test_build_writes_the_serialized_plan_and_deserialises_it_once(fake_build):
    """Item 8 of issue 24: EngineBytesFromNetwork + SaveBytes, then one deserialisation (the check set's);
    EngineFromNetwork + SaveEngine deserialised the plan only to serialise it again."""
    bundle, spec, device, trt, build = fake_build
    engine = bundle.root / "model.fp16.engine"
    said: list[str] = []
    sidecar = build_checked(bundle, "main", bundle.entry("main"), plan_build("fp16", TRT10), parse_batch("1:4:8"),
                            1 << 30, engine, version=FAKE_TRT_VERSION, device=FAKE_GPU, say=said.append)
    assert build.built == 1
    assert engine.read_bytes() == build.plan  # the builder's bytes, as they were
    assert trt.deserialized == 1, "the plan is deserialised once, for the check set, and never to be re-serialised"
    assert sidecar.check is not None and sidecar.check["top1_agreement"] == 1.0 and sidecar.check["passed"]
    assert device.memory == {} and device.pinned_live == 0  # the check's runner was closed
