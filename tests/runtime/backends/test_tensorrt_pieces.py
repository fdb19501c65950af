"""The TensorRT side without TensorRT: batch ranges, profile shapes, the per-version build plan,
source selection per role, the engine sidecar and its compatibility check, and the real CLI's
answer where TensorRT is missing (exit code 2, one line saying how to get it)."""

from __future__ import annotations

import enum
import json
import subprocess
import sys
from pathlib import Path

import pytest

from erudite_edge.backends.tensorrt.build import (
    BatchRange,
    TrtCapabilities,
    engine_filename,
    make_sidecar,
    parse_batch,
    plan_build,
    profile_shapes,
    select_sources,
    workspace_bytes,
)
from erudite_edge.backends.tensorrt.runner import TRT_MISSING, TensorRTRunner, available, tensorrt_version
from erudite_edge.backends.tensorrt.sidecar import (
    DeviceInfo,
    EngineSidecar,
    check_compatible,
    compatibility_problems,
    read_sidecar,
    rebuild_command,
    sidecar_path,
    write_sidecar,
)
from erudite_edge.cli.app import main as cli_main
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import BackendUnavailable, BundleError, UsageError
from tensorrt_bundles import (
    LABELS,
    TRT10,
    TRT10_BUILDER,
    TRT10_NETWORK,
    TRT11,
    TRT11_BUILDER,
    TRT11_NETWORK,
    TRT86,
    make_bundle,
    onnx_input_shape,
    tiny_onnx,
)


# -- batch range and workspace -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [("1:8:32", (1, 8, 32)), ("8", (1, 8, 8)), (" 2:4:4 ", (2, 4, 4)), ("1:1:1", (1, 1, 1)), (16, (1, 16, 16))],
)
def test_parse_batch(text, expected):
    b = parse_batch(text)
    assert (b.min, b.opt, b.max) == expected
    assert parse_batch(str(b)) == b


@pytest.mark.parametrize("text", ["", "0", "-1", "a", "1:8", "8:4:2", "1:2:3:4", "1:x:8", "1.5", "0:1:2", "1::8"])
def test_parse_batch_rejects(text):
    with pytest.raises(UsageError) as e:
        parse_batch(text)
    assert "--batch" in str(e.value) and "\n" not in str(e.value)


def test_workspace_bytes():
    assert workspace_bytes(1) == 1 << 30
    assert workspace_bytes(0.5) == 1 << 29
    for bad in (0, -2, float("nan"), float("inf"), "lots"):
        with pytest.raises(UsageError):
            workspace_bytes(bad)  # type: ignore[arg-type]


# -- profile shapes ----------------------------------------------------------------------------------
def test_profile_shapes_from_bundle_and_onnx(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    onnx_shape = onnx_input_shape(bundle.path(bundle.entry("main")))
    assert onnx_shape == [-1, 3, 32, 32]
    shapes = profile_shapes(bundle.preprocess, onnx_shape, parse_batch("1:8:32"))
    assert shapes == {"min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [32, 3, 32, 32]}


def test_profile_shapes_nhwc_and_dynamic_spatial_dims():
    spec = PreprocessSpec(input_size=(24, 40), layout="NHWC")
    assert profile_shapes(spec, [-1, 24, 40, 3], BatchRange(2, 4, 8))["max"] == [8, 24, 40, 3]
    # dynamic height and width (-1, or 0 as some exporters write) are filled from the preprocessing
    nchw = PreprocessSpec(input_size=(24, 40))
    assert profile_shapes(nchw, [-1, 3, -1, 0], BatchRange(1, 1, 4))["opt"] == [1, 3, 24, 40]


def test_profile_shapes_disagreement_and_fixed_batch():
    spec = PreprocessSpec.square(32)
    with pytest.raises(BundleError, match="disagree"):
        profile_shapes(spec, [-1, 3, 64, 64], BatchRange(1, 8, 32))
    with pytest.raises(BundleError, match="disagree"):  # NHWC model, NCHW preprocessing
        profile_shapes(spec, [-1, 32, 32, 3], BatchRange(1, 8, 32))
    with pytest.raises(BundleError, match="4 dims"):
        profile_shapes(spec, [-1, 3, 32], BatchRange(1, 8, 32))
    with pytest.raises(UsageError, match="fixed batch of 4: pass --batch 4:4:4"):
        profile_shapes(spec, [4, 3, 32, 32], BatchRange(1, 8, 32))
    assert profile_shapes(spec, [4, 3, 32, 32], BatchRange(4, 4, 4))["min"] == [4, 3, 32, 32]


# -- what to build with, per TensorRT version --------------------------------------------------------
def test_plan_tensorrt10_weak_typing():
    fp32, fp16, int8, best = (plan_build(p, TRT10) for p in ("fp32", "fp16", "int8", "best"))
    assert (fp32.source_precision, fp32.builder_flags, fp32.network_flags) == ("fp32", (), ())
    assert (fp16.source_precision, fp16.builder_flags, fp16.strongly_typed) == ("fp32", ("FP16",), False)
    assert (int8.source_precision, int8.builder_flags, int8.strongly_typed) == ("int8", ("INT8",), False)
    assert (best.source_precision, set(best.builder_flags), best.note) == ("int8", {"INT8", "FP16"}, "")
    assert best.bundle_precision == "best" and fp16.bundle_precision == "fp16"  # best is its own engine kind


def test_plan_tensorrt11_strong_typing():
    fp16 = plan_build("fp16", TRT11)
    assert (fp16.source_precision, fp16.builder_flags, fp16.network_flags) == ("fp16", (), ("STRONGLY_TYPED",))
    int8 = plan_build("int8", TRT11)
    assert (int8.source_precision, int8.builder_flags, int8.strongly_typed) == ("int8", (), True)
    best = plan_build("best", TRT11)
    assert (best.source_precision, best.builder_flags, best.strongly_typed) == ("int8", (), True)
    assert "no FP16 builder flag" in best.note
    assert plan_build("fp32", TRT11).network_flags == ("STRONGLY_TYPED",)


def test_plan_tensorrt8_needs_explicit_batch():
    assert plan_build("fp16", TRT86).network_flags == ("EXPLICIT_BATCH",)
    assert "EXPLICIT_BATCH" not in plan_build("fp16", TRT10).network_flags  # deprecated (a no-op) in 10


def test_plan_is_chosen_by_feature_not_by_version_string():
    """A TensorRT whose version string says 11 but which still has the weak-typing flags builds weakly typed;
    one that says 10 but lacks them builds strongly typed: the flags decide, not the number."""
    says_11_has_flags = TrtCapabilities("11.9.0.1", TRT10_BUILDER, TRT10_NETWORK)
    says_10_no_flags = TrtCapabilities("10.99.0.1", TRT11_BUILDER, TRT11_NETWORK)
    assert plan_build("fp16", says_11_has_flags) == plan_build("fp16", TRT10)
    assert plan_build("fp16", says_10_no_flags) == plan_build("fp16", TRT11)
    assert plan_build("int8", says_10_no_flags).strongly_typed and not plan_build("int8", says_11_has_flags).strongly_typed


def test_plan_rejects_unknown_precision():
    with pytest.raises(UsageError, match="--precision 'int4'"):
        plan_build("int4", TRT10)


def test_capabilities_from_module_reads_enum_members():
    """pybind11 enums expose __members__ like Python enums; the decision reads only those names."""

    class Module:
        __version__ = "11.0.0.4"
        BuilderFlag = enum.Enum("BuilderFlag", sorted(TRT11_BUILDER))
        NetworkDefinitionCreationFlag = enum.Enum("NetworkDefinitionCreationFlag", sorted(TRT11_NETWORK))

    caps = TrtCapabilities.from_module(Module)
    assert caps == TRT11 and caps.major == 11 and not caps.weak_typing
    assert plan_build("fp16", caps).source_precision == "fp16"


# -- sources per role ------------------------------------------------------------------------------
def test_select_sources_zoo_one_per_role(tmp_path):
    bundle = make_bundle(tmp_path / "zoo", kind="zoo")
    sources = select_sources(bundle, "fp32")
    assert list(sources) == ["coarse", "fine:birds", "fine:cars"]
    assert sources["fine:cars"].file == "fine.cars.onnx"
    assert list(select_sources(bundle, "fp32", "fine:birds")) == ["fine:birds"]
    with pytest.raises(UsageError, match="--role 'main'"):
        select_sources(bundle, "fp32", "main")
    with pytest.raises(BundleError, match="erudite-edge export int8"):  # int8 needs the Q/DQ model first
        select_sources(bundle, "int8")
    with pytest.raises(BundleError, match="erudite-edge export fp16"):  # TensorRT 11's fp16 source
        select_sources(bundle, plan_build("fp16", TRT11).source_precision)


def test_select_sources_refuses_a_changed_model(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    tiny_onnx(tmp_path / "b" / "model.onnx", LABELS.num_classes, seed=1)  # overwritten after export
    with pytest.raises(BundleError, match="sha256"):
        select_sources(bundle, "fp32")


def test_dla_problems_are_one_line():
    from erudite_edge.backends.tensorrt.build import dla_problem

    assert dla_problem(0, 2, "Orin") is None and dla_problem(1, 2, "Orin") is None
    for core, cores, words in [(0, 0, "has no DLA"), (2, 2, "numbered 0 to 1"), (-1, 2, "numbered from 0")]:
        msg = dla_problem(core, cores, "NVIDIA H200 (sm_90)")
        assert msg and words in msg and "\n" not in msg and msg.startswith(f"--dla-core {core}")
    assert engine_filename("main", "fp16", 0) == "model.fp16.dla0.engine"


def test_dla_batch_is_static_and_gpu_batch_unchanged():
    """Issue 24 item 1: a DLA takes static shapes only, so a DLA build's profile is N:N:N."""
    from erudite_edge.backends.tensorrt.build import check_dla_core, resolve_batch

    assert resolve_batch("4", 0) == BatchRange(4, 4, 4)
    assert resolve_batch(" 2:2:2 ", 1) == BatchRange(2, 2, 2)
    assert resolve_batch(None, 0) == BatchRange(8, 8, 8)
    assert resolve_batch(BatchRange(3, 3, 3), 0) == BatchRange(3, 3, 3)
    assert resolve_batch("8", None) == BatchRange(1, 8, 8) and resolve_batch(None, None) == BatchRange(1, 8, 32)
    for bad in ("1:8:32", "4:4:8", BatchRange(1, 4, 4)):
        with pytest.raises(UsageError, match="one batch size") as e:
            resolve_batch(bad, 0)
        assert "\n" not in str(e.value)
    check_dla_core(None, "fp32")
    for ok in ("fp16", "int8", "best"):
        check_dla_core(0, ok)
    with pytest.raises(UsageError, match="FP16 and INT8 only"):
        check_dla_core(0, "fp32")
    with pytest.raises(UsageError, match="numbered from 0"):
        check_dla_core(-1, "fp16")


@pytest.mark.parametrize("args, words", [
    (["--precision", "fp32", "--dla-core", "0"], "--precision fp32 --dla-core 0: a DLA runs FP16 and INT8 only"),
    (["--precision", "fp16", "--dla-core", "1", "--batch", "1:8:32"], "--batch 1:8:32 --dla-core 1: a DLA engine takes one batch size"),
])
def test_cli_dla_mistakes_are_one_line_before_tensorrt(tmp_path, capsys, args, words):
    bundle = make_bundle(tmp_path / "b")
    assert cli_main(["export", "engine", "--bundle", str(bundle.root), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_engine_filenames():
    assert engine_filename("main", "fp16") == "model.fp16.engine"
    assert engine_filename("main", "fp32") == "model.fp32.engine"
    assert engine_filename("coarse", "int8") == "coarse.int8.engine"
    assert engine_filename("fine:birds", "best") == "fine.birds.best.engine"


# -- the sidecar -----------------------------------------------------------------------------------
ORIN = DeviceInfo("Orin", (8, 7))


def sample_sidecar(tmp_path: Path, role: str = "main") -> tuple[Bundle, EngineSidecar]:
    bundle = make_bundle(tmp_path / "b")
    entry = bundle.entry("main")
    shapes = profile_shapes(bundle.preprocess, onnx_input_shape(bundle.path(entry)), parse_batch("1:8:32"))
    sidecar = make_sidecar(
        tensorrt_version="10.3.0.30",
        device=ORIN,
        plan=plan_build("fp16", TRT10),
        role=role,
        inputs=["images"],
        outputs=["logits"],
        profile={"images": shapes},
        source_onnx=entry.file,
        source_sha256=entry.sha256,
    )
    return bundle, sidecar


def test_sidecar_round_trip(tmp_path):
    bundle, sidecar = sample_sidecar(tmp_path)
    engine = bundle.root / engine_filename("main", "fp16")
    engine.write_bytes(b"plan bytes")
    written = write_sidecar(engine, sidecar)
    assert written == sidecar_path(engine) and written.name == "model.fp16.engine.json"
    on_disk = json.loads(written.read_text())
    assert on_disk["tensorrt_version"] == "10.3.0.30" and on_disk["compute_capability"] == "8.7"
    assert on_disk["source_sha256"] == bundle.entry("main").sha256 and on_disk["builder_flags"] == ["FP16"]
    back = read_sidecar(engine)
    assert back == sidecar
    assert back.device == ORIN and back.batch_range == (1, 8, 32)
    # recorded in bundle.json the way build_engine records it
    bundle.add_model("main", "fp16", engine, fmt="engine", info=back.to_dict())
    bundle.save()
    entry = Bundle.load(bundle.root).entry("main", "fp16", "engine")
    assert entry.file == "model.fp16.engine" and EngineSidecar.from_dict(entry.info or {}) == sidecar


def test_sidecar_missing_or_malformed(tmp_path):
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"x")
    with pytest.raises(BundleError, match="export engine"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(BundleError, match="not an erudite-edge engine sidecar"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "erudite-edge-engine", "tensorrt_version": "10.3"}))
    with pytest.raises(BundleError, match="malformed"):
        read_sidecar(engine)


def test_sidecar_compatibility(tmp_path):
    bundle, sidecar = sample_sidecar(tmp_path)
    engine = bundle.root / "model.fp16.engine"
    hint = rebuild_command(bundle.root, sidecar)
    assert hint == f"erudite-edge export engine --bundle {bundle.root} --precision fp16 --batch 1:8:32"
    check_compatible(sidecar, "10.3.0.30", DeviceInfo("orin", (8, 7)), engine, hint)  # same: no error

    desktop = DeviceInfo("NVIDIA GeForce RTX 3090", (8, 6))
    with pytest.raises(BundleError) as e:
        check_compatible(sidecar, "10.7.0.23", desktop, engine, hint)
    assert str(e.value) == (
        f"{engine}: engine was built with TensorRT 10.3.0.30 on Orin (sm_87); "
        f"this is TensorRT 10.7.0.23 on NVIDIA GeForce RTX 3090 (sm_86): rebuild it with `{hint}`"
    )
    assert compatibility_problems(sidecar, "10.3.0.26", ORIN) == ["TensorRT version"]  # same minor, other build
    assert compatibility_problems(sidecar, "10.3.0.30", DeviceInfo("Orin", (8, 6))) == ["compute capability"]
    assert compatibility_problems(sidecar, "10.3.0.30", DeviceInfo("Thor", (8, 7))) == ["GPU"]


def test_rebuild_command_names_the_role(tmp_path):
    _, sidecar = sample_sidecar(tmp_path, role="fine:birds")
    assert rebuild_command("zoo", sidecar).endswith("--batch 1:8:32 --role fine:birds")


# -- without TensorRT --------------------------------------------------------------------------------
def tensorrt_missing() -> bool:
    try:
        tensorrt_version()
    except BackendUnavailable:
        return True
    return False


needs_no_tensorrt = pytest.mark.skipif(not tensorrt_missing(), reason="TensorRT is installed here")


@needs_no_tensorrt
def test_cli_without_tensorrt_exits_2_with_one_line(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b")
    before = (bundle.root / "bundle.json").read_text()
    code = cli_main(["export", "engine", "--bundle", str(bundle.root), "--precision", "fp16", "--batch", "1:4:8"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"error: {TRT_MISSING}"]
    assert "python3-libnvinfer" in err and "pip install 'erudite-edge[trt]'" in err
    assert (bundle.root / "bundle.json").read_text() == before
    assert not list(bundle.root.glob("*.engine*"))


@pytest.mark.slow  # a child process
@needs_no_tensorrt
def test_cli_subprocess_without_tensorrt(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    proc = subprocess.run(
        [sys.executable, "-m", "erudite_edge.cli.app", "export", "engine", "--bundle", str(bundle.root), "--precision", "int8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {TRT_MISSING}"]


def test_cli_bad_arguments_before_tensorrt(tmp_path, capsys):
    """Argument mistakes are reported as such, with or without TensorRT."""
    bundle = make_bundle(tmp_path / "b")
    assert cli_main(["export", "engine", "--bundle", str(bundle.root), "--precision", "fp16", "--batch", "8:2"]) == 2
    assert "--batch '8:2'" in capsys.readouterr().err
    assert cli_main(["export", "engine", "--bundle", str(bundle.root), "--precision", "fp8"]) == 2
    assert "--precision 'fp8'" in capsys.readouterr().err
    assert cli_main(["export", "engine", "--bundle", str(bundle.root), "--precision", "fp16", "--workspace", "0"]) == 2
    assert "--workspace" in capsys.readouterr().err


@needs_no_tensorrt
def test_runner_without_tensorrt(tmp_path):
    assert available() is False
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        TensorRTRunner(tmp_path / "model.fp16.engine")


def test_device_info_reads_sm_count_and_memory():
    """The device layer's facts (issue 24 item 6): compute capability and SM count by cudaDeviceGetAttribute
    (75, 76, 16), total memory by cudaMemGetInfo, the name from cudaDeviceProp; over a FAKE runtime library."""
    import ctypes

    from erudite_edge.backends.tensorrt.device_memory import PolygraphyDevice

    class FakeCudart:
        def cudaDeviceGetAttribute(self, out, attr, dev):  # noqa: N802 (CUDA's names)
            out._obj.value = {75: 8, 76: 7, 16: 16}[attr]
            return 0

        def cudaMemGetInfo(self, free, total):  # noqa: N802
            free._obj.value, total._obj.value = 1 << 30, 30536 << 20
            return 0

        def cudaGetDeviceProperties(self, props, dev):  # noqa: N802
            ctypes.memmove(props, b"Orin\0", 5)
            return 0

    layer = PolygraphyDevice.__new__(PolygraphyDevice)
    layer._lib, layer._device = FakeCudart(), ctypes.c_int(0)
    assert layer.device_info() == DeviceInfo("Orin", (8, 7), sm_count=16, total_memory_mib=30536)


def test_device_layer_without_gpu_is_one_line():
    """The real polygraphy.cuda over the real CUDA runtime library: without a GPU (or driver) opening the
    device is one named CUDA error, not a traceback; with one, it names the GPU and its capability."""
    pytest.importorskip("polygraphy")
    from erudite_edge.backends.tensorrt.device_memory import CudaError, open_device

    try:
        device = open_device()
    except CudaError as e:
        msg = str(e)
        assert "\n" not in msg and ("CUDA" in msg or "libcudart" in msg), msg
        return
    info = device.device_info()
    assert info.name and info.compute_capability[0] >= 5
