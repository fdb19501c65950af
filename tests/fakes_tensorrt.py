"""FAKES, not TensorRT: a stand-in `tensorrt` module and a stand-in device-memory layer.

They exist because neither TensorRT nor a GPU can exist on the machines that run this suite. They
let tests prove erudite-edge's OWN logic around TensorRT (padding below the profile minimum,
trimming outputs, the FP16 input cast, the one-input/one-output check, buffer lifetime, the
sidecar checks before deserialising). They prove nothing about TensorRT or CUDA themselves;
tools/device_check.sh does that on a real GPU.

The fake engine computes logits = mean over H, W of the input (NCHW) @ W, in float32, reading and
writing the fake device buffers by the addresses the runner gave it (set_tensor_address).
"""

from __future__ import annotations

import itertools
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from erudite_edge._version import __version__
from erudite_edge.backends.tensorrt.sidecar import DeviceInfo, EngineSidecar, write_sidecar

FAKE_TRT_VERSION = "10.3.0.30"
FAKE_GPU = DeviceInfo("Fake GPU (test double)", (8, 7), sm_count=8, total_memory_mib=7620, dla_cores=0)
FAKE_POLYGRAPHY = "0.53.6"
CORRUPT = b"corrupt"


# -- the fake device-memory layer ------------------------------------------------------------------------
class FakeDeviceArray:
    def __init__(self, device: "FakeDevice", nbytes: int):
        self.device = device
        self.ptr = next(device._addresses)
        self.data = np.zeros(nbytes, dtype=np.uint8)
        self.shape: tuple[int, ...] = (nbytes,)
        device.memory[self.ptr] = self

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def copy_from(self, host: np.ndarray, stream=None):
        assert host.dtype == np.uint8 and host.nbytes <= self.data.nbytes
        self.data[: host.nbytes] = host
        return self

    def copy_to(self, host: np.ndarray, stream=None):
        assert host.dtype == np.uint8 and host.nbytes >= self.nbytes
        host[: self.nbytes] = self.data[: self.nbytes]
        return host

    def resize(self, shape):
        assert int(np.prod(shape)) <= self.data.nbytes, "the runner must never need a larger buffer than it allocated"
        self.shape = tuple(shape)
        return self

    def free(self) -> None:
        self.device.memory.pop(self.ptr, None)
        self.device.freed += 1
        self.device.log.append("free device buffer")


class FakeStream:
    def __init__(self, device: "FakeDevice"):
        self.ptr = next(device._addresses)
        self.device = device

    def free(self) -> None:
        self.device.streams_freed += 1
        self.device.log.append("free stream")


@dataclass
class FakeDevice:
    info: DeviceInfo = FAKE_GPU
    memory: dict[int, FakeDeviceArray] = field(default_factory=dict)
    freed: int = 0
    pinned_live: int = 0
    events_live: int = 0
    streams_freed: int = 0
    name: str = "fake device layer (test double)"
    polygraphy_version: str | None = FAKE_POLYGRAPHY
    log: list[str] = field(default_factory=list)  # synchronize and every release, in order
    on_sync: Callable[[], None] | None = None  # called at each synchronize (a test looks at what is alive then)

    def __post_init__(self) -> None:
        self._addresses = itertools.count(0x1000, 0x1000)

    def device_info(self) -> DeviceInfo:
        return self.info

    def array(self, nbytes: int) -> FakeDeviceArray:
        return FakeDeviceArray(self, nbytes)

    def stream(self) -> FakeStream:
        return FakeStream(self)

    def synchronize(self, stream) -> None:
        self.log.append("synchronize")
        if self.on_sync is not None:
            self.on_sync()

    def pinned(self, nbytes: int) -> np.ndarray:
        self.pinned_live += 1
        return np.zeros(nbytes, dtype=np.uint8)

    def free_pinned(self, buf) -> None:
        self.pinned_live -= 1
        self.log.append(f"free pinned {buf.nbytes}")

    def event(self) -> int:
        self.events_live += 1
        return next(self._addresses)

    def record(self, event, stream) -> None:
        pass

    def elapsed_ms(self, start, end) -> float:
        return 0.25

    def destroy_event(self, event) -> None:
        self.events_live -= 1
        self.log.append("destroy event")


# -- the fake tensorrt module ----------------------------------------------------------------------------
@dataclass
class EngineSpec:
    """What the fake engine looks like: I/O names and dtypes, profile and weights."""

    weights: np.ndarray  # (C, K)
    size: int = 8
    profile: tuple[int, int, int] = (1, 4, 8)  # min, opt, max batch
    input_dtype: str = "FLOAT"
    outputs: tuple[str, ...] = ("logits",)
    inputs: tuple[str, ...] = ("images",)
    # what the engine inspector's get_engine_information(JSON) gives as "Layers" (None: this TensorRT has no
    # engine inspector, ICudaEngine.create_engine_inspector is missing)
    layer_info: list | None = None

    def reference(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32).mean(axis=(2, 3)) @ self.weights


class FakeContext:
    def __init__(self, engine: "FakeEngine"):
        self.engine = engine
        self.shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}
        self.runs: list[tuple[int, ...]] = []

    def set_input_shape(self, name: str, shape) -> bool:
        lo, _, hi = self.engine.spec.profile
        shape = tuple(int(d) for d in shape)
        if not lo <= shape[0] <= hi:
            return False
        self.shape = shape
        return True

    def get_tensor_shape(self, name: str):
        assert self.shape is not None
        if name in self.engine.spec.inputs:
            return self.shape
        return (self.shape[0], self.engine.spec.weights.shape[1])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        spec, mem = self.engine.spec, self.engine.device.memory
        assert self.shape is not None
        in_dtype = {"HALF": np.float16, "UINT8": np.uint8}.get(spec.input_dtype, np.float32)
        n = int(np.prod(self.shape))
        x = mem[self.addresses[spec.inputs[0]]].data[: n * np.dtype(in_dtype).itemsize].view(in_dtype).reshape(self.shape)
        y = spec.reference(x).astype(np.float32)
        mem[self.addresses[spec.outputs[0]]].data[: y.nbytes] = y.reshape(-1).view(np.uint8)
        self.runs.append(self.shape)
        return True


class FakeEngine:
    def __init__(self, spec: EngineSpec, device: FakeDevice, plan: bytes = b""):
        self.spec, self.device = spec, device
        self.plan = plan
        self.contexts: list[FakeContext] = []

    def serialize(self) -> bytes:
        return self.plan

    @property
    def create_engine_inspector(self):
        if self.spec.layer_info is None:
            raise AttributeError("create_engine_inspector")  # as on a TensorRT without IEngineInspector
        info = json.dumps({"Layers": self.spec.layer_info, "Bindings": list(self.spec.inputs + self.spec.outputs)})
        return lambda: types.SimpleNamespace(get_engine_information=lambda fmt: info if fmt == "JSON" else "")

    @property
    def num_io_tensors(self) -> int:
        return len(self.spec.inputs) + len(self.spec.outputs)

    def get_tensor_name(self, i: int) -> str:
        return (list(self.spec.inputs) + list(self.spec.outputs))[i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name in self.spec.inputs else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> str:
        return self.spec.input_dtype if name in self.spec.inputs else "FLOAT"

    def get_tensor_profile_shape(self, name: str, profile: int):
        s = self.spec.size
        return tuple((b, 3, s, s) for b in self.spec.profile)

    def create_execution_context(self) -> FakeContext:
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        return ctx


def fake_tensorrt_module(spec: EngineSpec, device: FakeDevice, version: str = FAKE_TRT_VERSION) -> types.ModuleType:
    """A module object named `tensorrt` with just what TensorRTRunner touches (a FAKE)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    trt.__dict__["IS_FAKE"] = True
    trt.__dict__["deserialized"] = 0  # engines deserialised so far (each one a copy in device memory)

    class Logger:
        WARNING = 2
        ERROR = 1

        def __init__(self, severity=None):
            self.severity = severity

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        @property
        def num_DLA_cores(self) -> int:  # noqa: N802 (TensorRT's name)
            return int(trt.__dict__.get("num_dla_cores", 0))

        def deserialize_cuda_engine(self, data: bytes):
            trt.__dict__["dla_core_at_load"] = getattr(self, "DLA_core", None)
            trt.__dict__["deserialized"] += 1
            if bytes(data).startswith(CORRUPT):
                return None
            trt.__dict__["last_engine"] = FakeEngine(spec, device, bytes(data))
            return trt.__dict__["last_engine"]

    class TensorIOMode:
        INPUT = "INPUT"
        OUTPUT = "OUTPUT"

    def nptype(dtype: str):
        return {"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8}[dtype]

    trt.Logger = Logger  # type: ignore[attr-defined]
    trt.Runtime = Runtime  # type: ignore[attr-defined]
    trt.TensorIOMode = TensorIOMode  # type: ignore[attr-defined]
    trt.nptype = nptype  # type: ignore[attr-defined]
    trt.Builder = object  # type: ignore[attr-defined]  # tensorrt_version() checks it is the real module's shape
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")  # type: ignore[attr-defined]
    trt.LayerInformationFormat = types.SimpleNamespace(ONELINE="ONELINE", JSON="JSON")  # type: ignore[attr-defined]
    trt.ProfilingVerbosity = types.SimpleNamespace(  # type: ignore[attr-defined]
        LAYER_NAMES_ONLY="LAYER_NAMES_ONLY", DETAILED="DETAILED", NONE="NONE")
    return trt


def install_fake_tensorrt(monkeypatch, spec: EngineSpec, device: FakeDevice, version: str = FAKE_TRT_VERSION):
    module = fake_tensorrt_module(spec, device, version)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


def write_fake_engine(path: Path, spec: EngineSpec, *, content: bytes = b"fake-engine", tensorrt_version: str = FAKE_TRT_VERSION,
                      device: DeviceInfo = FAKE_GPU, precision: str = "fp16", dla_core: int | None = None,
                      erudite_edge_version: str = __version__, polygraphy_version: str | None = FAKE_POLYGRAPHY) -> Path:
    """An engine file (opaque bytes) and the sidecar the builder would write beside it (by this erudite-edge
    and the fake device layer's Polygraphy unless told otherwise)."""
    path.write_bytes(content)
    lo, opt, hi = spec.profile
    s = spec.size
    write_sidecar(path, EngineSidecar(
        tensorrt_version=tensorrt_version, gpu_name=device.name, compute_capability=device.capability_text,
        precision=precision, role="main", inputs=list(spec.inputs), outputs=list(spec.outputs),
        profile={spec.inputs[0]: {"min": [lo, 3, s, s], "opt": [opt, 3, s, s], "max": [hi, 3, s, s]}},
        source_onnx="model.onnx", source_sha256="0" * 64, erudite_edge_version=erudite_edge_version, dla_core=dla_core,
        sm_count=device.sm_count, total_memory_mib=device.total_memory_mib, dla_cores=device.dla_cores,
        polygraphy_version=polygraphy_version,
    ))
    return path


# -- the fake Polygraphy build loaders -------------------------------------------------------------------
class FakeLayer:
    def __init__(self, name: str):
        self.name = name


class FakeTensor:
    def __init__(self, name: str, shape: tuple[int, ...]):
        self.name, self.shape = name, shape


class FakeNetwork:
    """What build_serialized reads of the parsed network: one input, one output, the layers' names."""

    def __init__(self, spec: EngineSpec, layer_names: tuple[str, ...]):
        s = spec.size
        self.inputs = [FakeTensor(spec.inputs[0], (-1, 3, s, s))]
        self.outputs = [FakeTensor(name, (-1, spec.weights.shape[1])) for name in spec.outputs]
        self.layers = [FakeLayer(n) for n in layer_names]

    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))
    num_layers = property(lambda self: len(self.layers))

    def get_input(self, i: int) -> FakeTensor:
        return self.inputs[i]

    def get_output(self, i: int) -> FakeTensor:
        return self.outputs[i]

    def get_layer(self, i: int) -> FakeLayer:
        return self.layers[i]

    def unmark_output(self, tensor: FakeTensor) -> None:
        self.outputs.remove(tensor)


class FakeBuilderConfig:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.DLA_core = 0

    def can_run_on_DLA(self, layer) -> bool:
        return True


@dataclass
class FakeBuild:
    """What the fake Polygraphy loaders were asked, and what they did (a FAKE: no engine is built)."""

    plan: bytes = b"fake serialized plan"
    dla_cores: int = 0
    layer_names: tuple[str, ...] = ("conv1", "relu1", "pool", "fc")
    configs: list[FakeBuilderConfig] = field(default_factory=list)
    built: int = 0  # plans built (IBuilder.build_serialized_network)
    saved: list[str] = field(default_factory=list)  # paths written
    # what TensorRT logs at INFO while building with SPARSE_WEIGHTS (the developer guide's two "(Sparsity)" lines):
    # (eligible, picked) layer names; None: it logs nothing about sparsity
    sparse_log: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    info_log: tuple[str, ...] = ("Building engine",)  # Polygraphy's own INFO messages during the build (shown)


def install_fake_polygraphy_build(monkeypatch, trt_module: types.ModuleType, spec: EngineSpec,
                                  build: FakeBuild | None = None) -> FakeBuild:
    """Stand-in `polygraphy.backend.trt`, `polygraphy.backend.common` and `polygraphy.exception` modules with
    the loaders build_serialized uses (and the EngineFromNetwork/SaveEngine pair it used before), over the
    fake tensorrt module: a build "serialises" `build.plan`; deserialising goes through trt.Runtime, counted."""
    build = build or FakeBuild()
    import polygraphy.config as real_config  # the real Polygraphy logger and what it imports when it logs,
    import polygraphy.constants as real_constants  # kept under the stand-in package
    import polygraphy.logger as real_logger

    G_LOGGER = real_logger.G_LOGGER  # noqa: N806 (Polygraphy's name)

    class PolygraphyException(Exception):
        pass

    def NetworkFromOnnxPath(path, strongly_typed=False):  # noqa: N802 (Polygraphy's names)
        builder = types.SimpleNamespace(num_DLA_cores=build.dla_cores)
        return lambda: (builder, FakeNetwork(spec, build.layer_names), object())

    def CreateConfig(**kwargs):  # noqa: N802
        def make(builder=None, network=None):
            cfg = FakeBuilderConfig(**kwargs)
            build.configs.append(cfg)
            return cfg
        return make

    def PostprocessConfig(config, func):  # noqa: N802
        def make(builder, network):
            cfg = config(builder, network)
            func(builder, network, cfg)
            return cfg
        return make

    class Profile(dict):
        def add(self, name, min, opt, max):  # noqa: A002
            self[name] = (min, opt, max)
            return self

    def EngineBytesFromNetwork(network, config=None, save_timing_cache=None):  # noqa: N802
        def call():
            builder, net, _ = network
            cfg = config(builder, net)
            build.built += 1
            for message in build.info_log:
                G_LOGGER.info(message)
            if build.sparse_log is not None and cfg.kwargs.get("sparse_weights"):
                # TensorRT logs these at INFO; Polygraphy's TensorRT logger hands INFO to G_LOGGER.verbose
                # (polygraphy/backend/trt/util.py get_trt_logger): the real Polygraphy logger gets them here
                eligible, picked = build.sparse_log
                G_LOGGER.verbose(f"(Sparsity) Layers eligible for sparse math: {', '.join(eligible)}")
                G_LOGGER.verbose(f"(Sparsity) TRT inference plan picked sparse implementation for layers: {', '.join(picked)}")
            return build.plan
        return call

    def EngineFromNetwork(network, config=None, save_timing_cache=None):  # noqa: N802
        def call():
            plan = EngineBytesFromNetwork(network, config, save_timing_cache)()
            return trt_module.Runtime(None).deserialize_cuda_engine(plan)
        return call

    def SaveBytes(obj, path):  # noqa: N802
        def call():
            Path(path).write_bytes(bytes(obj))
            build.saved.append(str(path))
            return obj
        return call

    def SaveEngine(engine, path):  # noqa: N802
        return SaveBytes(engine.serialize(), path)

    pkg = types.ModuleType("polygraphy")
    backend = types.ModuleType("polygraphy.backend")
    trt_loaders = types.ModuleType("polygraphy.backend.trt")
    common = types.ModuleType("polygraphy.backend.common")
    exception = types.ModuleType("polygraphy.exception")
    exception.PolygraphyException = PolygraphyException  # type: ignore[attr-defined]
    for name, obj in [("NetworkFromOnnxPath", NetworkFromOnnxPath), ("CreateConfig", CreateConfig),
                      ("PostprocessConfig", PostprocessConfig), ("Profile", Profile),
                      ("EngineBytesFromNetwork", EngineBytesFromNetwork), ("EngineFromNetwork", EngineFromNetwork),
                      ("SaveEngine", SaveEngine)]:
        setattr(trt_loaders, name, obj)
    common.SaveBytes = SaveBytes  # type: ignore[attr-defined]
    pkg.__version__ = "0.53.6"  # type: ignore[attr-defined]
    pkg.config, pkg.constants, pkg.logger = real_config, real_constants, real_logger  # type: ignore[attr-defined]
    for mod in (pkg, backend, trt_loaders, common, exception):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    for real in (real_config, real_constants, real_logger):
        monkeypatch.setitem(sys.modules, real.__name__, real)
    return build
