"""The one device-memory layer of the TensorRT side: Polygraphy's `polygraphy.cuda`.

`polygraphy.cuda` gives device arrays (`DeviceArray`: malloc, async copies, free) and streams
(`Stream`) through ctypes over the CUDA runtime library that TensorRT itself loads, so it needs
no compiler (pycuda does) and no second CUDA binding whose major must match the driver's
(cuda-python; torch already brings cuda-bindings>=13). Three things the runner needs are not in
it: the GPU's name, compute capability, SM count and total memory (they key every engine), CUDA events (device time of
one execution, `last_compute_ms`) and page-locked host buffers (async copies overlap only from
pinned memory). Those are four or five runtime calls each, made through the very library handle
Polygraphy loaded (`polygraphy.cuda.wrapper().handle`), with the status of every call checked:
a failure is one line naming the call and CUDA's own error name.

Polygraphy's own failures raise PolygraphyException after printing their own message; they are
turned into one-line CudaError (exit code 2) here. No GPU, no driver, no runtime library: CudaError
from `open_device()`, before any buffer exists.
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

import numpy as np

from erudite_edge.backends.tensorrt.sidecar import DeviceInfo
from erudite_edge.errors import BackendUnavailable

POLYGRAPHY_MISSING = (
    "Polygraphy is not installed (it is the TensorRT side's device-memory layer and engine builder): "
    "`pip install 'erudite-edge[trt]'` or `pip install polygraphy`"
)
# cudaDeviceAttr values; part of the CUDA runtime ABI since CUDA 5.
ATTR_MULTIPROCESSOR_COUNT = 16  # cudaDevAttrMultiProcessorCount
ATTR_CC_MAJOR = 75
ATTR_CC_MINOR = 76
DEVICE_PROP_BYTES = 4096  # cudaDeviceProp is ~1 KiB; `char name[256]` is its first field in every CUDA release


class CudaError(BackendUnavailable):
    """A CUDA call that failed: no device or driver, out of memory, a failed copy."""


def import_polygraphy_cuda() -> Any:
    """`polygraphy.cuda`, or BackendUnavailable saying how to install it."""
    try:
        from polygraphy import cuda
    except ImportError as e:
        raise BackendUnavailable(POLYGRAPHY_MISSING) from e
    return cuda


def polygraphy_version() -> str | None:
    """The installed Polygraphy's version (it builds the engines: part of their cache key), None without it."""
    try:
        import polygraphy
    except ImportError:
        return None
    version = getattr(polygraphy, "__version__", None)
    return str(version) if version is not None else None


def layer_available() -> bool:
    """Polygraphy is importable (no CUDA call: for backend auto-selection)."""
    try:
        import_polygraphy_cuda()
    except BackendUnavailable:
        return False
    return True


class DeviceBuffer(Protocol):
    """What the runner uses of a device array (polygraphy.cuda.DeviceArray has these)."""

    ptr: int

    def copy_from(self, host_buffer: np.ndarray, stream: Any = None) -> Any: ...

    def copy_to(self, host_buffer: np.ndarray, stream: Any = None) -> Any: ...

    def resize(self, shape: tuple[int, ...]) -> Any: ...

    def free(self) -> None: ...


class PolygraphyDevice:
    """The current CUDA device through polygraphy.cuda and the runtime library it loaded."""

    name = "polygraphy.cuda"

    def __init__(self) -> None:
        cuda = import_polygraphy_cuda()
        from polygraphy.logger import G_LOGGER

        self._cuda = cuda
        self._logger = G_LOGGER
        self.polygraphy_version = polygraphy_version()
        try:
            with G_LOGGER.verbosity():  # its "searching for libcudart" notes are not ours to print
                self._lib = cuda.wrapper().handle
        except OSError as e:
            raise CudaError(f"the CUDA runtime library (libcudart) cannot be loaded ({e}): is CUDA installed?") from e
        count = ctypes.c_int(0)
        self._check(self._lib.cudaGetDeviceCount(ctypes.byref(count)), "cudaGetDeviceCount")
        if count.value < 1:
            raise CudaError("no CUDA GPU is visible (cudaGetDeviceCount = 0)")
        self._device = ctypes.c_int(0)
        self._check(self._lib.cudaGetDevice(ctypes.byref(self._device)), "cudaGetDevice")

    # -- errors -----------------------------------------------------------------------------------
    def _check(self, status: int, call: str) -> None:
        if status == 0:
            return
        try:
            self._lib.cudaGetErrorName.restype = ctypes.c_char_p
            name = self._lib.cudaGetErrorName(int(status)).decode()
        except Exception:
            name = f"error {status}"
        raise CudaError(f"CUDA {call} failed: {name} (no GPU, no driver, or a driver older than this CUDA runtime?)")

    def _polygraphy(self, what: str, fn: Any, *args: Any) -> Any:
        from polygraphy.exception import PolygraphyException

        try:
            with self._logger.verbosity():
                return fn(*args)
        except PolygraphyException as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CudaError(f"{what} failed: {first}") from e

    # -- facts ------------------------------------------------------------------------------------
    def device_info(self) -> DeviceInfo:
        """Name, compute capability, SM count and total memory (cudaMemGetInfo's total, in MiB: on a Jetson the
        memory the GPU shares with the CPU) of the current device. The DLA core count is TensorRT's to tell
        (runner.device_with_dla_cores)."""
        major, minor, sms = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        dev = self._device.value
        self._check(self._lib.cudaDeviceGetAttribute(ctypes.byref(major), ATTR_CC_MAJOR, dev), "cudaDeviceGetAttribute")
        self._check(self._lib.cudaDeviceGetAttribute(ctypes.byref(minor), ATTR_CC_MINOR, dev), "cudaDeviceGetAttribute")
        self._check(self._lib.cudaDeviceGetAttribute(ctypes.byref(sms), ATTR_MULTIPROCESSOR_COUNT, dev),
                    "cudaDeviceGetAttribute")
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        self._check(self._lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)), "cudaMemGetInfo")
        props = ctypes.create_string_buffer(DEVICE_PROP_BYTES)
        self._check(self._lib.cudaGetDeviceProperties(props, dev), "cudaGetDeviceProperties")
        name = props.raw[:256].split(b"\0", 1)[0].decode(errors="replace").strip() or f"CUDA device {dev}"
        return DeviceInfo(name, (major.value, minor.value), int(sms.value), int(total.value) >> 20)

    # -- memory and streams (Polygraphy) ----------------------------------------------------------
    def array(self, nbytes: int) -> DeviceBuffer:
        """An untyped device buffer of nbytes (a polygraphy.cuda.DeviceArray of uint8)."""
        return self._polygraphy(f"cudaMalloc({nbytes} bytes)", self._cuda.DeviceArray.raw, (int(nbytes),))  # type: ignore[no-any-return]

    def stream(self) -> Any:
        """A polygraphy.cuda.Stream: `.ptr` is the handle execute_async_v3 takes."""
        return self._polygraphy("cudaStreamCreate", self._cuda.Stream)

    def synchronize(self, stream: Any) -> None:
        self._polygraphy("cudaStreamSynchronize", stream.synchronize)

    # -- what Polygraphy lacks: pinned host memory and events -------------------------------------
    def pinned(self, nbytes: int) -> np.ndarray:
        """A page-locked host buffer as a uint8 array; free it with free_pinned."""
        ptr = ctypes.c_void_p()
        self._check(self._lib.cudaMallocHost(ctypes.byref(ptr), ctypes.c_size_t(int(nbytes))), "cudaMallocHost")
        raw = (ctypes.c_uint8 * int(nbytes)).from_address(int(ptr.value or 0))
        return np.frombuffer(memoryview(raw).cast("B"), dtype=np.uint8)

    def free_pinned(self, buf: np.ndarray) -> None:
        self._check(self._lib.cudaFreeHost(ctypes.c_void_p(buf.ctypes.data)), "cudaFreeHost")

    def event(self) -> int:
        ev = ctypes.c_void_p()
        self._check(self._lib.cudaEventCreate(ctypes.byref(ev)), "cudaEventCreate")
        return int(ev.value or 0)

    def record(self, event: int, stream: Any) -> None:
        self._check(self._lib.cudaEventRecord(ctypes.c_void_p(event), ctypes.c_void_p(stream.ptr)), "cudaEventRecord")

    def elapsed_ms(self, start: int, end: int) -> float:
        ms = ctypes.c_float(0.0)
        self._check(
            self._lib.cudaEventElapsedTime(ctypes.byref(ms), ctypes.c_void_p(start), ctypes.c_void_p(end)),
            "cudaEventElapsedTime",
        )
        return float(ms.value)

    def destroy_event(self, event: int) -> None:
        self._check(self._lib.cudaEventDestroy(ctypes.c_void_p(event)), "cudaEventDestroy")


def open_device() -> PolygraphyDevice:
    """The current CUDA device; BackendUnavailable/CudaError (exit code 2, one line) where there is none."""
    return PolygraphyDevice()


def current_device() -> DeviceInfo:
    """Name, compute capability, SM count and memory of the current CUDA device (one line and exit code 2
    without one)."""
    return open_device().device_info()
