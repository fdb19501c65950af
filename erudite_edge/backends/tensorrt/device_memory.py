"""The one device-memory layer of the TensorRT side: Polygraphy's `polygraphy.cuda`.

`polygraphy.cuda` gives device arrays (`DeviceArray`: malloc, async copies, free) and streams
(`Stream`) through ctypes over the CUDA runtime library (libcudart), so it needs no compiler (pycuda
does) and no second CUDA binding whose major must match the driver's (cuda-python; torch already
brings cuda-bindings>=13).

Which libcudart (`choose_cudart`), in this order: the one already mapped into the process
(/proc/self/maps: torch's, or one TensorRT's libraries loaded), so a process never holds two CUDA
runtimes; else the one the installed TensorRT wheel depends on (its Requires-Dist followed to the
wheel whose RECORD holds libcudart.so*, or the nvidia/cuNN/lib, nvidia/cuda_runtime/lib folder of
the wheel's CUDA major): Polygraphy itself searches only LD_LIBRARY_PATH, /usr/local/cuda/lib64,
/usr/lib, /lib and (0.53) nvidia/cuda_runtime/lib, so a pip-only CUDA 13 install (nvidia/cu13/lib)
was not found, and a machine with a system CUDA loaded that one instead of TensorRT's; else
Polygraphy's own search (JetPack: /usr/local/cuda/lib64). Polygraphy's loader takes no path: the
chosen folder is put first on LD_LIBRARY_PATH in os.environ (which Polygraphy reads when it first
loads the library, in 0.49.x and 0.53.x alike) for that one call, then restored.
`PolygraphyDevice.runtime.line` says in one line which file was loaded and why. Three things the runner needs are not in
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

import contextlib
import ctypes
import glob
import importlib.metadata as md
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol

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


# -- which CUDA runtime library ------------------------------------------------------------------------
CUDART_NAME = re.compile(r"libcudart\.so(\.\d+)*$")
POLYGRAPHY_SEARCH = "found by Polygraphy's search of LD_LIBRARY_PATH, /usr/local/cuda/lib64, /usr/lib, /lib"


@dataclass(frozen=True)
class CudaRuntime:
    """The CUDA runtime library the device layer uses: its file and why that one."""

    path: str | None  # None: Polygraphy's own search decides (before loading); after loading, what it loaded
    origin: str

    @property
    def line(self) -> str:
        return f"CUDA runtime: {self.path or 'libcudart.so'} ({self.origin})"


def mapped_cudart(maps: str | None = None) -> str | None:
    """The libcudart already mapped into this process (/proc/self/maps; `maps`: its text, for tests)."""
    if maps is None:
        try:
            with open("/proc/self/maps") as f:
                maps = f.read()
        except OSError:
            return None
    for line in maps.splitlines():
        fields = line.split(None, 5)  # address perms offset dev inode path (the path may hold spaces)
        path = fields[5].strip() if len(fields) == 6 else ""
        if path.startswith("/") and CUDART_NAME.search(os.path.basename(path)):
            return path
    return None


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requires(dist: md.Distribution) -> list[str]:
    """The names a distribution requires unconditionally (requirements behind an extra are left out)."""
    out = []
    for req in dist.requires or []:
        if "extra" in req.partition(";")[2]:
            continue
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if m:
            out.append(m.group(1))
    return out


def _cudart_file(dist: md.Distribution) -> str | None:
    for f in dist.files or []:
        if CUDART_NAME.search(f.name):
            path = str(dist.locate_file(f))
            if os.path.isfile(path):
                return path
    return None


def tensorrt_wheel_cudart(distributions: Iterable[md.Distribution] | None = None,
                          search_path: Iterable[str] | None = None) -> CudaRuntime | None:
    """The libcudart of the CUDA runtime wheel the installed TensorRT wheel depends on, or None (no TensorRT
    wheel: JetPack's apt TensorRT, or none at all). Follows Requires-Dist from every `tensorrt*` distribution
    (tensorrt -> tensorrt-cuNN -> tensorrt-cuNN-libs -> the runtime wheel) to a RECORD holding libcudart.so*;
    where that finds none, looks for the wheel layout of the CUDA major in the TensorRT wheel's name."""
    dists: dict[str, md.Distribution] = {}
    for found in md.distributions() if distributions is None else distributions:
        name = found.metadata["Name"] if found.metadata else None
        if name:
            dists.setdefault(_norm(name), found)
    roots = sorted(n for n in dists if n.startswith("tensorrt") and n != "tensorrt-stubs")
    seen: set[str] = set()
    queue = [(n, n) for n in roots]
    while queue:
        name, root = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        dist = dists.get(name)
        if dist is None:
            continue
        path = _cudart_file(dist)
        if path:
            return CudaRuntime(path, f"from {dist.metadata['Name']} {dist.version}, which the TensorRT wheel {root} depends on")
        if len(seen) < 64:
            queue += [(_norm(r), root) for r in _requires(dist)]
    majors = sorted({m.group(1) for n in roots for m in [re.match(r"tensorrt-cu(\d+)", n)] if m}, reverse=True)
    dirs = [p for p in (sys.path if search_path is None else search_path) if p and os.path.isdir(p)]
    for major in majors:
        for folder in dirs:
            for sub in (f"nvidia/cu{major}/lib", "nvidia/cuda_runtime/lib"):
                hits = sorted(glob.glob(os.path.join(folder, sub, f"libcudart.so.{major}*")))
                if hits:
                    return CudaRuntime(hits[0], f"the CUDA {major} runtime wheel beside tensorrt-cu{major}")
    return None


def choose_cudart(maps: str | None = None) -> CudaRuntime:
    """Which libcudart the device layer should load (see the module docstring for the order)."""
    loaded = mapped_cudart(maps)
    if loaded:
        return CudaRuntime(loaded, "already loaded in this process")
    wheel = tensorrt_wheel_cudart()
    if wheel is not None:
        return wheel
    return CudaRuntime(None, POLYGRAPHY_SEARCH)


@contextlib.contextmanager
def _searched_first(path: str | None) -> Iterator[None]:
    """Polygraphy's libcudart search begins with LD_LIBRARY_PATH as os.environ holds it: put `path`'s folder
    first there for the time it loads the library, then put the variable back."""
    if not path:
        yield
        return
    before = os.environ.get("LD_LIBRARY_PATH")
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (os.path.dirname(path), before) if p)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = before


_loaded: tuple[Any, CudaRuntime] | None = None


def load_cudart(cuda: Any, logger: Any) -> tuple[Any, CudaRuntime]:
    """Polygraphy's CUDA wrapper loaded over the chosen libcudart: (its ctypes handle, which file and why).
    OSError where no CUDA runtime library can be loaded."""
    global _loaded
    if _loaded is not None:
        return _loaded
    chosen = choose_cudart()
    with logger.verbosity(), _searched_first(chosen.path):  # its "searching for libcudart" notes are not ours to print
        handle = cuda.wrapper().handle
    loaded = mapped_cudart() or getattr(handle, "_name", None)
    if chosen.path and loaded and os.path.realpath(loaded) != os.path.realpath(chosen.path):
        origin = f"Polygraphy had loaded it already; {chosen.path} was chosen ({chosen.origin})"
    else:
        origin = chosen.origin
    _loaded = handle, CudaRuntime(loaded or chosen.path, origin)
    return _loaded


def _version_text(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def runtime_facts() -> dict[str, Any]:
    """The CUDA runtime's version and file and the newest CUDA the driver supports, through the device layer
    (no GPU needed: cudaRuntimeGetVersion / cudaDriverGetVersion); {} without Polygraphy or a runtime library.
    cuda_driver is None where no driver is installed (cudaDriverGetVersion gives 0)."""
    try:
        cuda = import_polygraphy_cuda()
        from polygraphy.logger import G_LOGGER

        lib, runtime = load_cudart(cuda, G_LOGGER)
    except (BackendUnavailable, OSError):
        return {}
    out: dict[str, Any] = {"cuda_runtime_library": runtime.path, "cuda_runtime_origin": runtime.origin}
    for key, call in (("cuda_runtime", "cudaRuntimeGetVersion"), ("cuda_driver", "cudaDriverGetVersion")):
        v = ctypes.c_int(0)
        try:
            status = getattr(lib, call)(ctypes.byref(v))
        except (AttributeError, OSError):
            status = -1
        out[key] = _version_text(v.value) if status == 0 and v.value > 0 else None
    return out


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
            self._lib, self.runtime = load_cudart(cuda, G_LOGGER)
        except OSError as e:
            raise CudaError(f"the CUDA runtime library (libcudart) cannot be loaded ({e}): is CUDA installed?") from e
        count = ctypes.c_int(0)
        self._check(self._lib.cudaGetDeviceCount(ctypes.byref(count)), "cudaGetDeviceCount")
        if count.value < 1:
            raise CudaError(f"no CUDA GPU is visible (cudaGetDeviceCount = 0; {self.runtime.line})")
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
        runtime = getattr(self, "runtime", None)
        where = f"; {runtime.line}" if runtime is not None else ""
        raise CudaError(f"CUDA {call} failed: {name} (no GPU, no driver, or a driver older than this CUDA runtime?){where}")

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

    def memory_info(self) -> tuple[int, int]:
        """(free, total) bytes of the current device's memory (cudaMemGetInfo)."""
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        self._check(self._lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)), "cudaMemGetInfo")
        return int(free.value), int(total.value)

    # -- memory and streams (Polygraphy) ----------------------------------------------------------
    def array(self, nbytes: int) -> DeviceBuffer:
        """An untyped device buffer of nbytes (a polygraphy.cuda.DeviceArray of uint8)."""
        return self._polygraphy(f"cudaMalloc({nbytes} bytes)", self._cuda.DeviceArray.raw, (int(nbytes),))

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
