"""The engine build's own logic over FAKES of TensorRT, of Polygraphy's build loaders and of the device layer
(tests/fakes_tensorrt.py): which loaders it calls, what it writes, how often the plan is deserialised, what
it refuses for a DLA build and what it reports. They prove erudite-edge's code around the builder, not
that TensorRT builds anything; tools/device_check.sh does that on a GPU."""

from __future__ import annotations

import numpy as np
import pytest

import erudite_edge.backends.tensorrt.runner as runner_mod
from erudite_edge.backends.tensorrt.build import build_checked, parse_batch, plan_build, with_sparse_weights
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
from tensorrt_bundles import TRT10, TRT10_NETWORK, make_bundle

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


# -- 2:4 sparse weights (issue 30 item 3; FAKE TensorRT: the flag is asked for, not that TensorRT uses it) ----

def test_a_bundle_with_2_4_weights_builds_with_the_sparse_weights_flag_and_says_how_many_layers(fake_build):
    bundle, spec, device, trt, build = fake_build
    said: list[str] = []
    assert with_sparse_weights(plan_build("fp16", TRT10), bundle, TRT10, said.append) == plan_build("fp16", TRT10)
    assert said == []  # a dense bundle: no flag, nothing said
    bundle.meta["sparsity"] = {"pattern": "2:4", "layers": {"main": ["backbone.3", "backbone.6", "backbone.9"]}, "count": 3}
    plan = with_sparse_weights(plan_build("fp16", TRT10), bundle, TRT10, said.append)
    assert plan.builder_flags == ("FP16", "SPARSE_WEIGHTS") and "3 layers have 2:4 sparse weights" in said[0]
    sidecar = build_checked(bundle, "main", bundle.entry("main"), plan, parse_batch("1:4:8"), 1 << 30,
                            bundle.root / "model.fp16.engine", version=FAKE_TRT_VERSION, device=FAKE_GPU, say=said.append)
    assert build.configs[-1].kwargs["sparse_weights"] is True and "SPARSE_WEIGHTS" in sidecar.builder_flags
    no_flag = type(TRT10)("10.3.0.30", TRT10.builder_flags - {"SPARSE_WEIGHTS"}, TRT10_NETWORK)
    assert "SPARSE_WEIGHTS" not in with_sparse_weights(plan_build("fp16", no_flag), bundle, no_flag, said.append).builder_flags
    assert "built dense" in said[-1]


def test_the_build_says_which_layers_tensorrt_ran_sparse_from_its_log_and_prints_no_more(fake_build, capsys):
    """TensorRT logs the layers eligible for sparse math and those it picked sparse kernels for at INFO, which
    Polygraphy shows only at VERBOSE: the build reads them through the real Polygraphy logger and says them,
    prints what it printed before (Polygraphy's INFO), not the verbose lines, and leaves the logger as it was.
    FAKE TensorRT: the two lines are the developer guide's, emitted as Polygraphy's TensorRT logger would."""
    from polygraphy.logger import G_LOGGER

    bundle, spec, device, trt, build = fake_build
    bundle.meta["sparsity"] = {"pattern": "2:4", "layers": {"main": ["conv1", "conv2", "conv3"]}, "count": 3}
    said: list[str] = []
    plan = with_sparse_weights(plan_build("fp16", TRT10), bundle, TRT10, said.append)
    before = (G_LOGGER.module_severity.get(), G_LOGGER.use_python_logging_system)
    capsys.readouterr()
    build.sparse_log = (("conv1", "conv2", "conv3"), ("conv2", "conv3"))
    build_checked(bundle, "main", bundle.entry("main"), plan, parse_batch("1:4:8"), 1 << 30,
                  bundle.root / "model.fp16.engine", version=FAKE_TRT_VERSION, device=FAKE_GPU, say=said.append)
    assert "TensorRT ran 2 of 3 eligible layers on sparse kernels: conv2, conv3" in said
    out = capsys.readouterr().out
    assert "Building engine" in out and "(Sparsity)" not in out
    assert (G_LOGGER.module_severity.get(), G_LOGGER.use_python_logging_system) == before
    G_LOGGER.verbose("(Sparsity) after the build")  # nothing is kept or shown any more
    assert "(Sparsity)" not in capsys.readouterr().out

    build.sparse_log = (("conv1", "conv2", "conv3"), ())
    build_checked(bundle, "main", bundle.entry("main"), plan, parse_batch("1:4:8"), 1 << 30,
                  bundle.root / "model.fp16.engine", version=FAKE_TRT_VERSION, device=FAKE_GPU, say=said.append)
    assert any("none of the 3 layers eligible" in m for m in said)
    build.sparse_log = None  # a TensorRT that logs nothing about it
    build_checked(bundle, "main", bundle.entry("main"), plan, parse_batch("1:4:8"), 1 << 30,
                  bundle.root / "model.fp16.engine", version=FAKE_TRT_VERSION, device=FAKE_GPU, say=said.append)
    assert "named no layer for sparse math" in said[-2] or "named no layer for sparse math" in said[-1]
    dense: list[str] = []
    build_checked(bundle, "main", bundle.entry("main"), plan_build("fp16", TRT10), parse_batch("1:4:8"), 1 << 30,
                  bundle.root / "model.fp16.engine", version=FAKE_TRT_VERSION, device=FAKE_GPU, say=dense.append)
    assert not any("sparse" in m for m in dense)  # a dense build says nothing about it


def test_sparsity_lines_are_read_through_polygraphys_prefix_and_colours() -> None:
    from erudite_edge.backends.tensorrt.sparse_log import parse

    lines = ["[V] (Sparsity) Layers eligible for sparse math: backbone.conv1, backbone.layer1.0.conv2",
             "\x1b[38;5;207m[V] (Sparsity) TRT inference plan picked sparse implementation for layers: backbone.conv1\x1b[0m",
             "[I] Building engine with configuration"]
    got = parse(lines)
    assert got.seen and got.eligible == ("backbone.conv1", "backbone.layer1.0.conv2") and got.picked == ("backbone.conv1",)
    assert not parse(["[I] nothing about it"]).seen
    assert not parse(None).readable and "not known" in parse(None).summary()


def test_a_polygraphy_without_python_logging_leaves_the_log_unread_and_the_build_going(monkeypatch) -> None:
    import polygraphy.logger as real_logger

    from erudite_edge.backends.tensorrt.sparse_log import sparsity_log

    class OldLogger:  # a Polygraphy whose Logger has no use_python_logging_system property
        pass

    monkeypatch.setattr(real_logger, "G_LOGGER", OldLogger())
    with sparsity_log() as lines:
        assert lines is None


# -- DLA (issue 24 item 1) ---------------------------------------------------------------------------
NETWORK = ("conv1", "relu1", "pool", "fc")
# An engine inspector's view of a DLA build with GPU fallback (layer types as a DETAILED plan has them): one DLA
# loadable spanning conv1...pool, the reformats around it, and a GPU layer fused by Myelin under the same
# `{ForeignNode[...]}` name pattern, which is not on the DLA.
DLA_LAYERS = [
    {"Name": "images to nvm", "LayerType": "Reformat"},
    {"Name": "{ForeignNode[conv1...pool]}", "LayerType": "DLA (fake)"},
    {"Name": "pool from nvm", "LayerType": "Reformat"},
    {"Name": "{ForeignNode[fc]}", "LayerType": "Myelin"},
]


@pytest.fixture
def dla_build(fake_build, monkeypatch):
    import erudite_edge.backends.tensorrt.build as build_mod

    bundle, spec, device, trt, build = fake_build
    spec.profile = (4, 4, 4)  # what a static DLA build's engine reports
    spec.layer_info = list(DLA_LAYERS)
    build.dla_cores, build.layer_names = 2, NETWORK
    trt.BuilderFlag = type("BuilderFlag", (), {"__members__": {n: n for n in TRT10.builder_flags}})
    trt.NetworkDefinitionCreationFlag = type("Net", (), {"__members__": {n: n for n in TRT10.network_flags}})
    monkeypatch.setattr(build_mod, "current_device", lambda: FAKE_GPU)
    return bundle, spec, device, trt, build


def test_dla_build_is_static_and_reports_the_layers_the_inspector_places_on_the_dla(dla_build):
    from erudite_edge.backends.tensorrt.build import build_engine
    from erudite_edge.backends.tensorrt.sidecar import read_sidecar, rebuild_command

    bundle, spec, device, trt, build = dla_build
    said: list[str] = []
    [path] = build_engine(bundle, "fp16", batch="4", dla_core=1, log=said.append)
    cfg = build.configs[-1]
    assert cfg.DLA_core == 1 and cfg.kwargs["use_dla"] and cfg.kwargs["allow_gpu_fallback"]
    assert cfg.kwargs["profiling_verbosity"] == "DETAILED"  # the layer types the report needs stay in the plan
    [(lo, opt, hi)] = cfg.kwargs["profiles"][0].values()
    assert lo[0] == opt[0] == hi[0] == 4  # --batch 4 is 4:4:4 on a DLA, not 1:4:4
    assert ("DLA core 1: 3 of 4 network layers placed on the DLA in 1 DLA subgraph(s) (engine inspector); "
            "3 engine layer(s) run on the GPU") in said, said
    assert not any("can run on the DLA" in s for s in said)  # IBuilderConfig.can_run_on_DLA is not where layers went
    sidecar = read_sidecar(path)
    assert sidecar.dla_core == 1 and sidecar.batch_range == (4, 4, 4)
    assert rebuild_command(bundle.root, sidecar).endswith("--precision fp16 --batch 4:4:4 --dla-core 1")
    assert sidecar.dla_placement["subgraphs"] == ["{ForeignNode[conv1...pool]}"] and sidecar.dla_placement["on_dla"] == 3
    assert trt.deserialized == 1  # one deserialisation serves the report and the check set


def test_dla_report_says_when_it_cannot_tell(dla_build):
    from erudite_edge.backends.tensorrt.build import build_engine

    bundle, spec, device, trt, build = dla_build
    del bundle.meta["check_set"]  # without a check set the engine is still deserialised once, for the report
    said: list[str] = []
    spec.layer_info = None  # a TensorRT without IEngineInspector
    build_engine(bundle, "fp16", batch="4", dla_core=0, log=said.append)
    assert any(s.startswith("DLA core 0: cannot tell which layers run on the DLA (TensorRT 10.3.0.30 has no engine "
                            "inspector)") for s in said), said
    spec.layer_info = ["images to nvm", "{ForeignNode[conv1...pool]}"]  # names only: DLA and Myelin look alike
    said.clear()
    build_engine(bundle, "fp16", batch="4", dla_core=0, log=said.append)
    assert any("cannot tell" in s and "no layer types" in s for s in said), said
    spec.layer_info = [{"Name": "conv1 + relu1", "LayerType": "CaskConvolution"}, {"Name": "fc", "LayerType": "Gemm"}]
    said.clear()
    build_engine(bundle, "fp16", batch="4", dla_core=0, log=said.append)
    assert any(s.startswith("DLA core 0: no layer was placed on the DLA") for s in said), said
    assert trt.deserialized == 3


@pytest.mark.parametrize("batch, precision, words", [
    ("1:8:32", "fp16", "a DLA engine takes one batch size"),
    ("2:4:4", "int8", "a DLA engine takes one batch size"),
    ("4", "fp32", "a DLA runs FP16 and INT8 only"),
])
def test_dla_build_refuses_what_a_dla_cannot_run_before_building(dla_build, batch, precision, words):
    from erudite_edge.backends.tensorrt.build import build_engine
    from erudite_edge.errors import UsageError

    bundle, spec, device, trt, build = dla_build
    with pytest.raises(UsageError) as e:
        build_engine(bundle, precision, batch=batch, dla_core=0)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert build.built == 0


def test_dla_placement_reads_subgraph_names_as_tensorrt_writes_them():
    """dla_placement over engine objects that answer as the inspector does (FAKES): a DLA loadable of one
    unnamed layer (its name ends in "]", as in TensorRT's sampleCudla output), one spanning several, and names
    the network does not have."""
    import json
    import types

    from erudite_edge.backends.tensorrt.build import dla_placement

    trt = types.SimpleNamespace(__version__="10.3.0.30", LayerInformationFormat=types.SimpleNamespace(JSON="JSON"))

    def engine(layers):
        info = json.dumps({"Layers": layers})
        return types.SimpleNamespace(create_engine_inspector=lambda: types.SimpleNamespace(
            get_engine_information=lambda fmt: info))

    network = ("(Unnamed Layer* 0) [ElementWise]", "conv", "relu", "fc")
    one = dla_placement(engine([{"Name": "{ForeignNode[(Unnamed Layer* 0) [ElementWise]]}", "LayerType": "x"},
                                {"Name": "{ForeignNode[conv...fc]}", "LayerType": "x"}]), trt, network)
    assert one.known and one.on_dla == 4 and len(one.subgraphs) == 2
    unknown = dla_placement(engine([{"Name": "{ForeignNode[a...b]}", "LayerType": "x"}]), trt, network)
    assert unknown.on_dla is None
    assert unknown.summary(0) == ("DLA core 0: 1 DLA subgraph(s) placed on the DLA (engine inspector: "
                                  "{ForeignNode[a...b]}); 0 engine layer(s) run on the GPU")
    broken = dla_placement(types.SimpleNamespace(create_engine_inspector=lambda: types.SimpleNamespace(
        get_engine_information=lambda fmt: "")), trt, network)
    assert not broken.known and "unreadable" in broken.why
