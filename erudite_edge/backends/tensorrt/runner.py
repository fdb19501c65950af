"""TensorRT backend: runs an engine built on this device by `erudite-edge export engine`.

Before deserialising, the engine's sidecar is checked against this TensorRT and this GPU, so a
plan from another version or device fails with one line saying to rebuild it, not a crash. Device
buffers (polygraphy.cuda, the one device-memory layer: backends/device_memory.py) and page-locked
host buffers are allocated once, for the optimisation profile's largest batch; each call copies in,
runs `execute_async_v3` on named tensors and copies out on one CUDA stream, with CUDA events around
the execution alone (`last_compute_ms`). Polygraphy's own TrtRunner is made for comparisons (it
reallocates per shape and returns dicts); this hot path stays lean on purpose.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from erudite_edge.backends.base import Runner
from erudite_edge.backends.tensorrt.device_memory import DeviceBuffer, PolygraphyDevice, layer_available, open_device
from erudite_edge.backends.tensorrt.sidecar import (
    DeviceInfo,
    EngineSidecar,
    check_compatible,
    read_sidecar,
    rebuild_command,
)
from erudite_edge.core.bundle import Bundle
from erudite_edge.errors import BackendUnavailable, BundleError

if TYPE_CHECKING:
    import tensorrt as trt

TRT_MISSING = (
    "TensorRT is not installed: on a Jetson it comes with JetPack (python3-libnvinfer); "
    "on x86 `pip install 'erudite-edge[trt]'`"
)


def tensorrt_version() -> str:
    """The version of the importable TensorRT; BackendUnavailable (exit code 2) where there is none.

    A stubs-only install (tensorrt-stubs) leaves an importable but empty `tensorrt` namespace
    package, so the import alone proves nothing: the real module has `Builder`.
    """
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailable(TRT_MISSING) from e
    if not hasattr(trt, "Builder") or not hasattr(trt, "__version__"):
        raise BackendUnavailable(TRT_MISSING)
    return str(trt.__version__)


def available() -> bool:
    """TensorRT and the device-memory layer (Polygraphy) are importable (backend auto-selection; no GPU call)."""
    try:
        tensorrt_version()
    except BackendUnavailable:
        return False
    return layer_available()


def dims_list(dims: "trt.Dims") -> list[int]:
    return [int(dims[i]) for i in range(len(dims))]


def device_with_dla_cores(info: DeviceInfo, runtime: Any) -> DeviceInfo:
    """`info` with the DLA core count TensorRT sees (IRuntime.num_DLA_cores: TensorRT 8.6, 10.x, 11.x; a
    TensorRT without it leaves the count unknown)."""
    cores = getattr(runtime, "num_DLA_cores", None)
    return dataclasses.replace(info, dla_cores=int(cores)) if cores is not None else info


class PinnedAllocator:
    """TensorRTRunner.host_allocator's allocator: `allocator(nbytes)` is a page-locked uint8 buffer of the
    runner's device layer; `release(buf)` frees one now; `closed` says the runner is closed (its memory is
    gone: whoever holds a view of it must not touch it, InputRing checks this)."""

    def __init__(self, runner: "TensorRTRunner"):
        self._runner = runner

    @property
    def closed(self) -> bool:
        return self._runner.cuda is None

    def __call__(self, nbytes: int) -> np.ndarray:
        return self._runner._allocate_pinned(nbytes)

    def release(self, buf: np.ndarray) -> None:
        self._runner._release_pinned(buf)


class TensorRTRunner(Runner):
    """One engine, one execution context, one stream; buffers sized for the profile's max batch."""

    backend = "tensorrt"

    def __init__(
        self,
        engine_path: str | os.PathLike[str],
        precision: str = "fp16",
        *,
        rebuild: str | None = None,
        expected_outputs: int | None = None,
        device: PolygraphyDevice | None = None,
        sidecar: EngineSidecar | None = None,
    ):
        """`device`: the device-memory layer (default: open the current CUDA device through Polygraphy).
        `sidecar`: the engine's sidecar where the caller has read it already (from_bundle)."""
        super().__init__(precision)
        version = tensorrt_version()
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise BundleError(f"{self.engine_path}: engine file not found")
        self.sidecar: EngineSidecar = sidecar if sidecar is not None else read_sidecar(self.engine_path)
        self._buffers: list[DeviceBuffer] = []
        self._host: list[np.ndarray] = []
        self._callers_pinned: list[tuple[int, int]] = []  # address ranges of host_allocator's buffers
        self.last_staged = True  # whether the last batch went through the staging buffer (False: straight from ours)
        self._stream: Any = None
        self._events: list[int] = []
        self.cuda: PolygraphyDevice | None = None
        try:
            import tensorrt as trt

            self.cuda = device if device is not None else open_device()
            self.logger = trt.Logger(trt.Logger.WARNING)
            self.runtime = trt.Runtime(self.logger)
            self.device = device_with_dla_cores(self.cuda.device_info(), self.runtime)
            # Engines live in their bundle directory, so that is the one to rebuild from.
            hint = rebuild or rebuild_command(self.engine_path.parent, self.sidecar)
            # before deserialising: another TensorRT, GPU, module (SM count, memory, DLA cores), erudite-edge or
            # Polygraphy is one line saying to rebuild, never a crash or an engine tuned for another device
            check_compatible(self.sidecar, version, self.device, self.engine_path, hint,
                             polygraphy_version=getattr(self.cuda, "polygraphy_version", None))
            self.tensorrt_version = version
            self._load(expected_outputs)
        except BaseException:
            self.close()
            raise

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_bundle(
        cls, bundle: Bundle, role: str = "main", precision: str = "fp16", device: PolygraphyDevice | None = None,
        dla_core: int | None = None,
    ) -> "TensorRTRunner":
        """The engine a bundle records for exactly (role, precision, DLA core): `best` is its own kind, and an
        engine for a DLA core is taken only when that core is asked for. BundleError (one line listing the
        engines there are) when there is none."""
        entry = bundle.entry(role, precision, "engine", dla_core)
        path = bundle.path(entry)
        sidecar = read_sidecar(path)
        return cls(
            path,
            precision=precision,
            rebuild=rebuild_command(bundle.root, sidecar),
            expected_outputs=entry.num_outputs or None,
            device=device,
            sidecar=sidecar,
        )

    def _load(self, expected_outputs: int | None) -> None:
        import tensorrt as trt

        assert self.cuda is not None
        if self.sidecar.dla_core is not None:  # an engine built for a DLA core runs on that core
            self.runtime.DLA_core = int(self.sidecar.dla_core)
        engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise BundleError(
                f"{self.engine_path}: TensorRT {self.tensorrt_version} cannot deserialise it (corrupt or truncated "
                "file? see TensorRT's message above); rebuild it with `erudite-edge export engine`"
            )
        self.engine: trt.ICudaEngine = engine
        context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailable(f"{self.engine_path}: TensorRT could not create an execution context (GPU memory?)")
        self.context: trt.IExecutionContext = context

        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            mode = engine.get_tensor_mode(name)
            if mode == trt.TensorIOMode.INPUT:
                inputs.append(name)
            elif mode == trt.TensorIOMode.OUTPUT:
                outputs.append(name)
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(
                f"{self.engine_path}: engine has inputs {inputs} and outputs {outputs}; an erudite-edge model has one of each"
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.output_name)))

        lo, opt, hi = (dims_list(d) for d in engine.get_tensor_profile_shape(self.input_name, 0))
        self.profile_min, self.profile_opt, self.profile_max = lo, opt, hi
        self._max_batch = int(hi[0])
        self._min_batch = max(1, int(lo[0]))
        if self.sidecar.dla_core is not None:
            # A DLA runs static shapes only: the run-time shape must be the one it was built for (TensorRT's
            # "DLA Supported Layers and Restrictions"). A DLA build's profile is N:N:N; every batch is padded
            # to N and none is larger (infer_chunked splits to it). An engine from before static DLA builds
            # (a 1:8:32 profile) gets its OPT batch, which its profile accepts.
            self._min_batch = self._max_batch = int(opt[0])

        # Output size at the largest batch: set the max input shape and let TensorRT infer it.
        if not self.context.set_input_shape(self.input_name, tuple(hi)):
            raise BundleError(f"{self.engine_path}: TensorRT rejects the profile's own max shape {hi}")
        out_max = dims_list(self.context.get_tensor_shape(self.output_name))
        if expected_outputs and out_max[-1] != expected_outputs:
            raise BundleError(
                f"{self.engine_path}: engine gives {out_max[-1]} outputs, bundle.json expects {expected_outputs}; "
                "the engine was built from another model: rebuild it"
            )
        in_bytes = int(np.prod(hi)) * self.input_dtype.itemsize
        out_bytes = int(np.prod(out_max)) * self.output_dtype.itemsize

        cuda = self.cuda
        self._d_in = cuda.array(in_bytes)
        self._buffers.append(self._d_in)
        self._d_out = cuda.array(out_bytes)
        self._buffers.append(self._d_out)
        self._h_in = cuda.pinned(in_bytes)
        self._host.append(self._h_in)
        self._h_out = cuda.pinned(out_bytes)
        self._host.append(self._h_out)
        self._stream = cuda.stream()
        # h2d start | compute start | compute end | d2h end: trtexec's H2D, GPU compute and D2H times
        self._h2d = cuda.event()
        self._events.append(self._h2d)
        self._start = cuda.event()
        self._events.append(self._start)
        self._end = cuda.event()
        self._events.append(self._end)
        self._d2h = cuda.event()
        self._events.append(self._d2h)
        if not (
            self.context.set_tensor_address(self.input_name, self._d_in.ptr)
            and self.context.set_tensor_address(self.output_name, self._d_out.ptr)
        ):
            raise BackendUnavailable(f"{self.engine_path}: TensorRT refused the device buffers' addresses")

    # -- running ----------------------------------------------------------------------------------
    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.cuda is None:
            raise RuntimeError("TensorRTRunner is closed")
        x = np.asarray(batch)
        sample_shape = list(self.profile_max[1:])
        if x.ndim != len(self.profile_max) or list(x.shape[1:]) != sample_shape:
            raise ValueError(
                f"input batch of shape {list(x.shape)} does not fit engine input {self.input_name!r} "
                f"[N, {', '.join(map(str, sample_shape))}]"
            )
        n = len(x)
        if n == 0:
            raise ValueError("empty batch")
        if n > self._max_batch:
            raise ValueError(f"batch of {n} exceeds the engine's max batch {self._max_batch}; use infer_chunked")
        if n < self._min_batch:  # an engine built with min batch > 1: pad, then drop the padding's rows
            pad = np.zeros((self._min_batch - n, *x.shape[1:]), dtype=x.dtype)
            x = np.concatenate([x, pad], axis=0)
        if self.input_dtype == np.uint8 and x.dtype != np.uint8:  # a cast would wrap normalised floats silently
            raise ValueError(f"engine input {self.input_name!r} is uint8 (NHWC bytes, normalised in the graph), "
                             f"not {x.dtype}: feed what the bundle's preprocess dtype says")
        # The engine's input may be FP16 (a strongly typed FP16 model): convert on the host; a uint8 input
        # (bundle preprocess dtype "uint8") is copied as bytes: a quarter of float32's host and H2D traffic.
        # A batch already in page-locked memory of ours, of the engine's dtype (a pipeline's ring allocated by
        # host_allocator), goes to the device from where it is: no staging copy.
        self.last_staged = not (x.dtype == self.input_dtype and self._in_callers_pinned(x))
        if self.last_staged:
            host_in = self._h_in[: x.size * self.input_dtype.itemsize].view(self.input_dtype).reshape(x.shape)
            np.copyto(host_in, x, casting="unsafe")
            source = self._h_in[: x.size * self.input_dtype.itemsize]
        else:
            source = x.reshape(-1).view(np.uint8)
        if not self.context.set_input_shape(self.input_name, tuple(int(d) for d in x.shape)):
            raise ValueError(f"TensorRT rejects input shape {list(x.shape)} (profile {self.profile_min}..{self.profile_max})")
        out_shape = dims_list(self.context.get_tensor_shape(self.output_name))
        out_bytes = int(np.prod(out_shape)) * self.output_dtype.itemsize
        host_out = self._h_out[:out_bytes]

        cuda, stream = self.cuda, self._stream
        cuda.record(self._h2d, stream)
        self._d_in.copy_from(source, stream)
        cuda.record(self._start, stream)
        if not self.context.execute_async_v3(stream.ptr):
            raise BackendUnavailable(f"{self.engine_path}: TensorRT execution failed (see TensorRT's message above)")
        cuda.record(self._end, stream)
        self._d_out.resize((out_bytes,))  # no reallocation: the buffer holds the max batch; copy only this batch
        self._d_out.copy_to(host_out, stream)
        cuda.record(self._d2h, stream)
        cuda.synchronize(stream)
        self.last_compute_ms = cuda.elapsed_ms(self._start, self._end)
        self.last_stage_ms = {"h2d": cuda.elapsed_ms(self._h2d, self._start), "compute": self.last_compute_ms,
                              "d2h": cuda.elapsed_ms(self._end, self._d2h)}
        out = host_out.view(self.output_dtype).reshape(out_shape)[:n]
        return np.array(out, dtype=np.float32)  # a copy: the pinned buffer is reused by the next call

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            engine=str(self.engine_path),
            tensorrt=getattr(self, "tensorrt_version", None),
            device=self.device.describe() if hasattr(self, "device") else None,
            built_precision=self.sidecar.precision,
            max_batch=self._max_batch if hasattr(self, "_max_batch") else None,
            cuda_binding=self.cuda.name if self.cuda is not None else None,
            cuda_runtime=getattr(getattr(self.cuda, "runtime", None), "line", None),  # which libcudart, and why
        )
        return d

    def host_allocator(self) -> Callable[[int], np.ndarray] | None:
        """Page-locked host buffers from the device-memory layer (a PinnedAllocator): a pipeline's input ring
        allocated here is copied to the device straight from its slots (no staging copy). Its owner gives them
        back with `release` (InputRing.release, before this runner closes); what is left is freed by close."""
        if self.cuda is None:
            raise RuntimeError("TensorRTRunner is closed")
        return PinnedAllocator(self)

    def _allocate_pinned(self, nbytes: int) -> np.ndarray:
        cuda = self.cuda
        if cuda is None:
            raise RuntimeError("TensorRTRunner is closed: it hands out no more page-locked memory")
        buf = cuda.pinned(int(nbytes))
        self._host.append(buf)
        self._callers_pinned.append((int(buf.ctypes.data), int(buf.ctypes.data) + int(nbytes)))
        return buf

    def _release_pinned(self, buf: np.ndarray) -> None:
        """Free one buffer handed out by host_allocator now (nothing to do when close freed it already)."""
        cuda = self.cuda
        for i, host in enumerate(self._host):
            if host is buf:
                del self._host[i]
                lo = int(buf.ctypes.data)
                self._callers_pinned = [r for r in self._callers_pinned if r[0] != lo]
                if cuda is not None:
                    cuda.free_pinned(buf)
                return

    def _in_callers_pinned(self, x: np.ndarray) -> bool:
        """Whether x lies wholly inside a page-locked buffer handed out by host_allocator (and is contiguous)."""
        if not x.flags.c_contiguous:
            return False
        lo = int(x.ctypes.data)
        return any(a <= lo and lo + x.nbytes <= b for a, b in self._callers_pinned)

    def close(self) -> None:
        """Wait for the stream, then drop the execution context, engine and runtime, then free the device and
        page-locked buffers (a pipeline's input ring gives its own back first: InputRing.release), the events
        and the stream. Idempotent; infer, host_allocator and a ring on its memory raise RuntimeError after."""
        cuda, self.cuda = self.cuda, None  # from here on: "closed" for infer, the allocator and its rings
        try:
            if cuda is not None and self._stream is not None:
                # an execution or copy still queued on the stream finishes before the context that runs it,
                # or a buffer it reads or writes, is released
                cuda.synchronize(self._stream)
        finally:
            for attr in ("context", "engine", "runtime"):  # in this order: the context uses the engine
                if hasattr(self, attr):
                    delattr(self, attr)
            if cuda is not None:
                try:
                    for buf in self._buffers:
                        buf.free()
                    for host in self._host:
                        cuda.free_pinned(host)
                    for ev in self._events:
                        cuda.destroy_event(ev)
                    if self._stream is not None:
                        self._stream.free()
                finally:
                    self._buffers, self._host, self._events, self._stream = [], [], [], None
                    self._callers_pinned = []
