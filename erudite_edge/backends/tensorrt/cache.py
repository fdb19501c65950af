"""Where engines built on first use are kept, under which key, and the lock that lets one process build.

An engine is valid only for one ONNX model, one TensorRT version, one GPU (name, compute capability, SM
count, total memory, DLA core count: every Orin module is "Orin" / 8.7, and an engine tuned on an AGX Orin
is not the one for an Orin NX or Nano), one precision, one batch profile and one DLA core (or none), and it
is what one erudite-edge and one Polygraphy built. All of these make the cache key; its digest is part of
the file name, so an engine from another TensorRT or GPU is simply not found, and one found is still
checked against its sidecar before it is loaded (a stale or foreign file is rebuilt, never loaded).

Cache directory: `<bundle>/engines/` where the bundle directory is writable (the engine then travels
with the bundle to identical devices), else `$XDG_CACHE_HOME/erudite-edge/engines` (default
`~/.cache/erudite-edge/engines`).

Two processes asking for the same engine at once: the first takes an exclusive `fcntl.flock` on
`<engine>.lock` and builds; the other waits on the lock, then finds the finished engine. flock is
released by the kernel when a process dies, so a killed build never leaves the cache locked; the
engine itself is written under a temporary name and renamed, so a killed build leaves no half engine.
(fcntl is POSIX: Jetson and x86 Linux are the targets; Polygraphy's own LockFile needs a pip package
a Jetson image lacks.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from erudite_edge._version import __version__
from erudite_edge.backends.tensorrt.sidecar import DeviceInfo, EngineSidecar
from erudite_edge.errors import BackendUnavailable

CACHE_SUBDIR = "engines"


@dataclass(frozen=True)
class CacheKey:
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    precision: str
    batch_profile: str  # "1:8:32"
    dla_core: int | None = None
    sm_count: int | None = None
    total_memory_mib: int | None = None
    dla_cores: int | None = None
    erudite_edge_version: str = __version__
    polygraphy_version: str | None = None

    @classmethod
    def make(cls, onnx_sha256: str, tensorrt_version: str, device: DeviceInfo, precision: str,
             batch_profile: str, dla_core: int | None = None, *, polygraphy_version: str | None = None,
             erudite_edge_version: str = __version__) -> "CacheKey":
        return cls(onnx_sha256, tensorrt_version.strip(), device.name.strip(), device.capability_text, precision,
                   str(batch_profile), dla_core, device.sm_count, device.total_memory_mib, device.dla_cores,
                   erudite_edge_version.strip(), polygraphy_version.strip() if polygraphy_version else None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def digest(self) -> str:
        """16 hex digits of the sha256 of the key's canonical JSON: any field changed, another file."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def filename(self, stem: str) -> str:
        dla = f".dla{self.dla_core}" if self.dla_core is not None else ""
        return f"{stem}.{self.precision}{dla}.{self.digest}.engine"

    def matches(self, sidecar: EngineSidecar) -> list[str]:
        """What in an engine's sidecar disagrees with this key (empty: it is this key's engine)."""
        problems = []
        if sidecar.cache_key != self.to_dict():
            problems.append("cache key")
        if sidecar.source_sha256 != self.onnx_sha256:
            problems.append("ONNX model")
        if sidecar.tensorrt_version.strip() != self.tensorrt_version:
            problems.append("TensorRT version")
        if sidecar.gpu_name.strip() != self.gpu_name or sidecar.compute_capability != self.compute_capability:
            problems.append("GPU")
        if sidecar.precision != self.precision:
            problems.append("precision")
        lo, opt, hi = sidecar.batch_range
        if f"{lo}:{opt}:{hi}" != self.batch_profile:
            problems.append("batch profile")
        if sidecar.dla_core != self.dla_core:
            problems.append("DLA core")
        for label, got, want in (("SM count", sidecar.sm_count, self.sm_count),
                                 ("GPU memory", sidecar.total_memory_mib, self.total_memory_mib),
                                 ("DLA cores", sidecar.dla_cores, self.dla_cores),
                                 ("erudite-edge version", sidecar.erudite_edge_version, self.erudite_edge_version),
                                 ("Polygraphy version", sidecar.polygraphy_version, self.polygraphy_version)):
            if got != want:
                problems.append(label)
        return problems


def writable_dir(path: Path) -> bool:
    """`path` (created if missing) accepts a new file: tried for real, since permissions, read-only
    mounts and full disks all answer only to a write."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
        return True
    except OSError:
        return False


def user_cache_dir(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "erudite-edge" / CACHE_SUBDIR


def cache_dir(bundle_root: str | os.PathLike[str], env: dict[str, str] | None = None) -> Path:
    """`<bundle>/engines` when it can be written, else the user's cache directory (BackendUnavailable
    when neither can)."""
    beside = Path(bundle_root) / CACHE_SUBDIR
    if writable_dir(beside):
        return beside
    user = user_cache_dir(env)
    if writable_dir(user):
        return user
    raise BackendUnavailable(
        f"no writable place for a TensorRT engine: {beside} and {user} cannot be written; "
        "set XDG_CACHE_HOME to a writable directory or build ahead of time with `erudite-edge export engine`"
    )


@contextlib.contextmanager
def engine_lock(engine_path: str | os.PathLike[str], on_wait: Callable[[str], None] | None = None,
                timeout_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `<engine>.lock` for the duration; says once (`on_wait`) when another
    process holds it and this one waits. TimeoutError after timeout_s (None: wait as long as it takes)."""
    lock_path = Path(str(engine_path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if on_wait is not None:
                on_wait(f"another process is building {Path(engine_path).name}; waiting for it")
            if timeout_s is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                deadline = time.monotonic() + timeout_s
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{lock_path}: still locked after {timeout_s:.0f} s") from None
                        time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
