"""The few CUDA runtime calls the TensorRT side needs: device facts, device and page-locked host
memory, one stream, timing events, async copies.

Through cuda-python (`cuda.bindings.runtime` from 12.8 on, `cuda.cudart` before) where installed,
else pycuda (older JetPack images ship it). The status of every call is checked, so a failure is
one line naming the call and CUDA's own error name, not a crash three calls later.
"""

from __future__ import annotations

import abc
import ctypes
from typing import Any

import numpy as np

from ..engine_sidecar import DeviceInfo
from ..errors import BackendUnavailable

CUDA_MISSING = (
    "no CUDA Python binding is installed: `pip install 'cuda-python<13'` (its major must match the CUDA driver's: "
    "12 on JetPack 6) "
    "(or pycuda, which older JetPack images ship)"
)


class CudaError(BackendUnavailable):
    """A CUDA call that failed: no device or driver, out of memory, a failed copy."""


def import_cudart() -> Any | None:
    """cuda-python's runtime module, or None where cuda-python is not installed."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.8, 13.x

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore[attr-defined,no-redef]  # cuda-python < 12.8

        return cudart
    except ImportError:
        return None


def import_pycuda() -> Any | None:
    try:
        import pycuda.driver as drv
    except ImportError:
        return None
    return drv


def cuda_binding_available() -> bool:
    return import_cudart() is not None or import_pycuda() is not None


class CudaApi(abc.ABC):
    """One CUDA binding, reduced to what the TensorRT runner and builder call.

    Streams and events are opaque objects of the binding; `stream_handle` gives the integer
    TensorRT's execute_async_v3 takes. Host buffers are page-locked uint8 numpy arrays (async
    copies need page-locked memory to overlap with compute).
    """

    name = "?"

    @abc.abstractmethod
    def device_info(self) -> DeviceInfo: ...

    @abc.abstractmethod
    def malloc(self, nbytes: int) -> int: ...

    @abc.abstractmethod
    def free(self, ptr: int) -> None: ...

    @abc.abstractmethod
    def host_alloc(self, nbytes: int) -> np.ndarray: ...

    @abc.abstractmethod
    def host_free(self, buf: np.ndarray) -> None: ...

    @abc.abstractmethod
    def stream_create(self) -> Any: ...

    @abc.abstractmethod
    def stream_handle(self, stream: Any) -> int: ...

    @abc.abstractmethod
    def stream_synchronize(self, stream: Any) -> None: ...

    @abc.abstractmethod
    def stream_destroy(self, stream: Any) -> None: ...

    @abc.abstractmethod
    def copy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None: ...

    @abc.abstractmethod
    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None: ...

    @abc.abstractmethod
    def event_create(self) -> Any: ...

    @abc.abstractmethod
    def event_record(self, event: Any, stream: Any) -> None: ...

    @abc.abstractmethod
    def event_elapsed_ms(self, start: Any, end: Any) -> float: ...

    @abc.abstractmethod
    def event_destroy(self, event: Any) -> None: ...

    def close(self) -> None:
        """Release what the binding itself holds (pycuda: the pushed context)."""


class CudaPythonApi(CudaApi):
    """cuda-python's runtime API (the primary context, which TensorRT also uses)."""

    name = "cuda-python"

    def __init__(self, cudart: Any | None = None):
        rt = cudart if cudart is not None else import_cudart()
        if rt is None:
            raise BackendUnavailable(CUDA_MISSING)
        self.rt: Any = rt
        self._host: dict[int, int] = {}  # id(array) -> pinned pointer

    def _error_name(self, err: Any) -> str:
        try:
            name = self.rt.cudaGetErrorName(err)[1]
            text = self.rt.cudaGetErrorString(err)[1]
            return f"{name.decode()} ({text.decode()})"
        except Exception:  # the error name is a courtesy; never hide the original failure
            return str(err)

    def call(self, fn: str, *args: Any) -> Any:
        """Call cudart.<fn>(*args); raise CudaError unless it returned cudaSuccess. Returns the
        single value after the status (or a tuple of them, or None)."""
        result = getattr(self.rt, fn)(*args)
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if err != self.rt.cudaError_t.cudaSuccess:
            raise CudaError(f"CUDA: {fn} failed: {self._error_name(err)}")
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else rest

    def device_info(self) -> DeviceInfo:
        device = self.call("cudaGetDevice")
        prop = self.call("cudaGetDeviceProperties", device)
        raw = prop.name
        name = raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
        return DeviceInfo(name.strip(), (int(prop.major), int(prop.minor)))

    def malloc(self, nbytes: int) -> int:
        return int(self.call("cudaMalloc", int(nbytes)))

    def free(self, ptr: int) -> None:
        self.call("cudaFree", ptr)

    def host_alloc(self, nbytes: int) -> np.ndarray:
        ptr = int(self.call("cudaMallocHost", int(nbytes)))
        buf = np.ctypeslib.as_array((ctypes.c_uint8 * int(nbytes)).from_address(ptr))
        self._host[id(buf)] = ptr
        return buf

    def host_free(self, buf: np.ndarray) -> None:
        ptr = self._host.pop(id(buf), None)
        if ptr is not None:
            self.call("cudaFreeHost", ptr)

    def stream_create(self) -> Any:
        return self.call("cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_synchronize(self, stream: Any) -> None:
        self.call("cudaStreamSynchronize", stream)

    def stream_destroy(self, stream: Any) -> None:
        self.call("cudaStreamDestroy", stream)

    def copy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.call("cudaMemcpyAsync", dst, src.ctypes.data, src.nbytes, kind, stream)

    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call("cudaMemcpyAsync", dst.ctypes.data, src, dst.nbytes, kind, stream)

    def event_create(self) -> Any:
        return self.call("cudaEventCreate")

    def event_record(self, event: Any, stream: Any) -> None:
        self.call("cudaEventRecord", event, stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self.call("cudaEventElapsedTime", start, end))

    def event_destroy(self, event: Any) -> None:
        self.call("cudaEventDestroy", event)


class PyCudaApi(CudaApi):
    """pycuda's driver API, on the device's primary context (shared with TensorRT's runtime calls).

    The context is pushed on the creating thread: call the runner from that thread.
    """

    name = "pycuda"

    def __init__(self, device: int = 0):
        drv = import_pycuda()
        if drv is None:
            raise BackendUnavailable(CUDA_MISSING)
        self.drv = drv
        try:
            drv.init()
            self.device = drv.Device(device)
            self.context = self.device.retain_primary_context()
            self.context.push()
        except drv.Error as e:
            raise CudaError(f"CUDA (pycuda): cannot open device {device}: {e}") from e
        self._dev: dict[int, Any] = {}  # pointer -> DeviceAllocation (freed by .free())

    def _guard(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.drv.Error as e:
            raise CudaError(f"CUDA (pycuda): {what} failed: {e}") from e

    def device_info(self) -> DeviceInfo:
        name = self._guard("Device.name", self.device.name)
        major, minor = self._guard("Device.compute_capability", self.device.compute_capability)
        return DeviceInfo(str(name).strip(), (int(major), int(minor)))

    def malloc(self, nbytes: int) -> int:
        alloc = self._guard("mem_alloc", self.drv.mem_alloc, int(nbytes))
        self._dev[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._dev.pop(ptr, None)
        if alloc is not None:
            self._guard("DeviceAllocation.free", alloc.free)

    def host_alloc(self, nbytes: int) -> np.ndarray:
        buf: np.ndarray = self._guard("pagelocked_empty", self.drv.pagelocked_empty, (int(nbytes),), np.uint8)
        return buf

    def host_free(self, buf: np.ndarray) -> None:
        base = getattr(buf, "base", None)
        free = getattr(base, "free", None)
        if callable(free):
            self._guard("HostAllocation.free", free)

    def stream_create(self) -> Any:
        return self._guard("Stream", self.drv.Stream)

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_synchronize(self, stream: Any) -> None:
        self._guard("Stream.synchronize", stream.synchronize)

    def stream_destroy(self, stream: Any) -> None:
        """pycuda destroys a stream when its object is collected."""

    def copy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self._guard("memcpy_htod_async", self.drv.memcpy_htod_async, dst, src, stream)

    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self._guard("memcpy_dtoh_async", self.drv.memcpy_dtoh_async, dst, src, stream)

    def event_create(self) -> Any:
        return self._guard("Event", self.drv.Event)

    def event_record(self, event: Any, stream: Any) -> None:
        self._guard("Event.record", event.record, stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._guard("Event.time_till", start.time_till, end))

    def event_destroy(self, event: Any) -> None:
        """pycuda destroys an event when its object is collected."""

    def close(self) -> None:
        ctx, self.context = self.context, None
        if ctx is not None:
            try:
                ctx.pop()
            except self.drv.Error:
                pass


def open_cuda() -> CudaApi:
    """cuda-python where installed (NVIDIA's supported binding), else pycuda."""
    if import_cudart() is not None:
        return CudaPythonApi()
    if import_pycuda() is not None:
        return PyCudaApi()
    raise BackendUnavailable(CUDA_MISSING)


def current_device() -> DeviceInfo:
    """Name and compute capability of the GPU this process runs on (CUDA's current device)."""
    api = open_cuda()
    try:
        return api.device_info()
    finally:
        api.close()
