"""Choosing and loading an inference backend for one model role of a bundle: the registry.

`auto` takes the fastest one available, in this order:
  tensorrt     a TensorRT engine of the asked precision is in the bundle and TensorRT is importable
  onnxruntime  an ONNX model of that precision is in the bundle and onnxruntime is importable
  torch        never chosen automatically; only with --backend torch --checkpoint RUN (debugging)
and says on stderr which it picked and why. Backends are imported lazily, so a device without one
of them (and every device without torch) still runs.

`--backend tensorrt` on a bundle without an engine of the asked precision builds one on first use
(its check set run, the engine cached under a key of model, TensorRT, GPU, precision and batch
profile: erudite_edge/backends/tensorrt/cache.py) instead of failing; `auto` never builds, it says how to.

How to run is one frozen `RunnerOptions` (shared by `run`, `check`, `bench`, the API); which backend runs
is decided once per load (`choose_backend`, TensorRT probed once) into a `BackendChoice` that the loader
and every member of a zoo reuse. Each backend is one `Backend` entry in `REGISTRY`: its loader and the
runner options it takes; an option set for a backend that does not take it is warned about and ignored.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

from erudite_edge.backends.base import Runner
from erudite_edge.core.bundle import PRECISIONS, Bundle, file_sha256
from erudite_edge.errors import BackendUnavailable, BundleError, UsageError

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
TENSORRT_MODULE = "erudite_edge.backends.tensorrt.runner"
TENSORRT_HELP = (
    "TensorRT comes with JetPack on a Jetson (`sudo apt install python3-libnvinfer`; in a venv use "
    "--system-site-packages) and `pip install polygraphy`; elsewhere `pip install 'erudite-edge[trt]'`"
)
TORCH_HELP = "the torch backend runs a training checkpoint: pass --checkpoint RUN (and have torch installed)"
ENGINE_PRECISION_ORDER = ("fp16", "int8", "best", "fp32")

Announce = Callable[[str], None]


@dataclass(frozen=True)
class RunnerOptions:
    """How to run a bundle's models. `precision` "auto": the bundle's TensorRT engine (fp16, then int8,
    then best, then fp32) where TensorRT runs, else the fp32 ONNX model; any other precision takes the engine
    of exactly that kind (`best`: a TensorRT engine built with INT8 and FP16). `dla_core`: the engine built
    for that DLA core (`export engine --dla-core N`), none other; None: engines built for the GPU.
    `threads`, `spinning`: ONNX Runtime's
    intra-op threads and thread spinning (off: see onnxruntime_runner). `cuda_graph`, `data_transfers`:
    TensorRT execution through a captured CUDA graph / without host<->device copies (trtexec's
    --useCudaGraph / --noDataTransfers), for benchmarks."""

    backend: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    spinning: bool = False
    cuda_graph: bool = False
    data_transfers: bool = True
    dla_core: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UsageError(f"backend {self.backend!r}: one of {', '.join(BACKENDS)}")
        if self.precision not in ("auto", *PRECISIONS, "best"):
            raise UsageError(f"precision {self.precision!r}: one of auto, {', '.join(PRECISIONS)} (best: a TensorRT "
                             "engine built with INT8 and FP16)")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"threads {self.threads}: at least 1")
        if self.dla_core is not None and self.dla_core < 0:
            raise UsageError(f"dla-core {self.dla_core}: a DLA core is numbered from 0")
        if self.dla_core is not None and self.backend in ("onnxruntime", "torch"):
            raise UsageError(f"dla-core {self.dla_core}: a DLA runs TensorRT engines; use --backend tensorrt or auto")

    def replace(self, **changes: Any) -> "RunnerOptions":
        return dataclasses.replace(self, **changes)

    def set_options(self) -> dict[str, Any]:
        """The backend-specific options that differ from their defaults (bench records them)."""
        return {**({"cuda_graph": True} if self.cuda_graph else {}),
                **({"data_transfers": False} if not self.data_transfers else {})}


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # "tensorrt", "onnxruntime" or "torch"
    fmt: str  # the model format it runs: "engine", "cache" (built on first use), "onnx" or "checkpoint"
    reason: str  # one line: why this one (and why not the faster ones)
    precision: str = "fp32"  # resolved: never "auto"
    module: ModuleType | None = field(default=None, compare=False, repr=False)  # the probed TensorRT runner
    dla_core: int | None = None  # the engine's DLA core (tensorrt)


@dataclass(frozen=True)
class Backend:
    """One entry of the registry: how to load a runner, and which backend-specific options it takes."""

    name: str
    load: Callable[[Bundle, str, RunnerOptions, BackendChoice, Announce], Runner]
    takes: frozenset[str] = frozenset()


# -- probing ----------------------------------------------------------------------------------------
def _tensorrt_module() -> tuple[ModuleType | None, str]:
    """The TensorRT runner module and "" when TensorRT can run here, else (None, why not)."""
    try:
        mod = importlib.import_module(TENSORRT_MODULE)
    except ModuleNotFoundError as e:
        if e.name == TENSORRT_MODULE:
            return None, "this erudite-edge has no TensorRT runner"
        return None, f"TensorRT is not importable ({e})"
    except ImportError as e:
        return None, f"TensorRT is not importable ({e})"
    except Exception as e:  # a runner module that fails while loading must not stop auto-selection
        return None, f"the TensorRT runner failed to load ({type(e).__name__}: {e})"
    try:
        ok = bool(mod.available())
    except Exception as e:  # a broken CUDA driver shows up here, not at import
        return None, f"TensorRT is not usable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    if not ok:
        return None, "TensorRT (or Polygraphy, its device-memory layer) is not importable here"
    return mod, ""


def _onnxruntime_module() -> tuple[ModuleType | None, str]:
    from erudite_edge.backends import onnxruntime_runner

    if not onnxruntime_runner.available():
        return None, "onnxruntime is not installed"
    return onnxruntime_runner, ""


def _resolve(bundle: Bundle, backend: str, precision: str, role: str, trt: ModuleType | None,
             dla_core: int | None = None) -> str:
    if precision != "auto":
        return precision
    if backend in ("auto", "tensorrt") and trt is not None:
        for p in ENGINE_PRECISION_ORDER:
            if bundle.find(role, p, "engine", dla_core) is not None:
                return p
        if backend == "tensorrt" or dla_core is not None:
            return "fp16"  # the engine built on first use (or, for a DLA core, the one to say is missing)
    return "fp32"


def _on(dla_core: int | None) -> str:
    return "" if dla_core is None else f" for DLA core {dla_core}"


# -- choosing ---------------------------------------------------------------------------------------
def choose_backend(bundle: Bundle, role: str = "main", options: RunnerOptions | None = None, *,
                   like: BackendChoice | None = None) -> BackendChoice:
    """Decide which backend runs `role` and at which precision (TensorRT probed once, here); raise
    BackendUnavailable / BundleError when none can. `like`: the
    choice made for another role of the same bundle (a zoo's members): the same backend and precision,
    TensorRT not probed again."""
    if like is not None:
        options = (options or RunnerOptions()).replace(backend=like.backend, precision=like.precision)
    opts = options or RunnerOptions()
    backend = opts.backend
    asked = opts.precision
    if backend == "torch":
        if not bundle.meta.get("checkpoint"):
            raise BackendUnavailable(TORCH_HELP)
        p = "fp32" if asked == "auto" else asked
        return BackendChoice("torch", "checkpoint", f"asked for; checkpoint {bundle.meta['checkpoint']}", p)
    trt: ModuleType | None
    if like is not None and like.module is not None:
        trt, trt_why = like.module, ""
    else:
        trt, trt_why = _tensorrt_module() if backend in ("auto", "tensorrt") else (None, "not asked for")
    dla = opts.dla_core
    p = _resolve(bundle, backend, asked, role, trt, dla)
    if backend == "tensorrt":
        if trt is None:
            raise BackendUnavailable(f"--backend tensorrt: {trt_why}; {TENSORRT_HELP}; or use --backend onnxruntime")
        if bundle.find(role, p, "engine", dla) is not None:
            return BackendChoice("tensorrt", "engine", f"asked for; {p} engine{_on(dla)} in the bundle", p, trt, dla)
        if dla is not None:  # a DLA engine is built ahead (static batch): one line naming the engines there are
            bundle.entry(role, p, "engine", dla)
        # No engine in the bundle: build one on first use (cached; backends/tensorrt/build.py engine_on_first_use).
        return BackendChoice("tensorrt", "cache", f"asked for; {p} engine built on first use and cached", p, trt)
    if backend == "onnxruntime":
        from erudite_edge.backends.onnxruntime_runner import import_onnxruntime

        import_onnxruntime()  # BackendUnavailable saying how to install it
        bundle.entry(role, p, "onnx")
        return BackendChoice("onnxruntime", "onnx", "asked for", p)

    # auto
    if trt is not None:
        if bundle.find(role, p, "engine", dla) is not None:
            return BackendChoice("tensorrt", "engine", f"fastest available; {p} engine{_on(dla)} in the bundle", p,
                                 trt, dla)
        if dla is not None or p == "best":  # only a TensorRT engine is that: say which engines there are
            bundle.entry(role, p, "engine", dla)
        trt_why = (f"no {p} TensorRT engine in the bundle (build one on this device: "
                   f"`erudite-edge export engine --bundle {bundle.root} --precision {p}`)")
    elif dla is not None or p == "best":
        what = f"--dla-core {dla}" if dla is not None else "--precision best"
        raise BackendUnavailable(f"{what} runs a TensorRT engine: {trt_why}; {TENSORRT_HELP}")
    ort, ort_why = _onnxruntime_module()
    if ort is not None:
        bundle.entry(role, p, "onnx")  # BundleError: no ONNX model of this precision
        return BackendChoice("onnxruntime", "onnx", f"tensorrt skipped: {trt_why}", p)
    raise BackendUnavailable(
        f"no backend can run this bundle here: tensorrt: {trt_why}; onnxruntime: {ort_why} "
        "(`pip install onnxruntime`, or the onnxruntime-gpu wheel for your JetPack)"
    )


def announce_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- loaders, one per backend -----------------------------------------------------------------------
def _load_torch(bundle: Bundle, role: str, options: RunnerOptions, choice: BackendChoice, log: Announce) -> Runner:
    from erudite_edge.backends.torch_runner import TorchRunner

    return TorchRunner(bundle.meta["checkpoint"], role=role, precision=choice.precision)


def _load_tensorrt(bundle: Bundle, role: str, options: RunnerOptions, choice: BackendChoice, log: Announce) -> Runner:
    mod = choice.module
    if mod is None:  # a choice made by hand (tests): probe now
        mod, why = _tensorrt_module()
        if mod is None:
            raise BackendUnavailable(f"tensorrt: {why}")
    if choice.fmt == "cache":
        from erudite_edge.backends.tensorrt.build import engine_on_first_use

        path = engine_on_first_use(bundle, role, choice.precision, log=log)
        return mod.TensorRTRunner(path, precision=choice.precision, expected_outputs=bundle.expected_outputs(role))
    # from_bundle reads the engine's sidecar (rebuild hint, expected outputs) as well
    return mod.TensorRTRunner.from_bundle(bundle, role, choice.precision, dla_core=choice.dla_core)


def _load_onnxruntime(bundle: Bundle, role: str, options: RunnerOptions, choice: BackendChoice, log: Announce) -> Runner:
    from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner, input_mismatch
    from erudite_edge.backends.ort_tensorrt_ep import tensorrt_ep_options

    precision = choice.precision
    entry = bundle.entry(role, precision, "onnx")
    # Used only where this onnxruntime has the TensorRT EP. INT8 there needs the TensorRT Q/DQ layout.
    ep_precision = "fp16" if precision == "int8" and (entry.info or {}).get("target", "tensorrt") != "tensorrt" else precision
    path = bundle.path(entry)  # checks the sha256 where the bundle verifies reads
    # The EP's engine cache is per model file: the hash of what the session loads (the same as the entry's
    # unless --no-verify let a changed file through), cached by size and mtime.
    trt_ep = tensorrt_ep_options(ep_precision, bundle.preprocess, entry.input,
                                 model_sha256=file_sha256(bundle.root, entry.file))
    runner = OnnxRuntimeRunner(path, precision=precision, threads=options.threads,
                               spinning=options.spinning, trt_options=trt_ep)
    mismatch = input_mismatch(bundle.preprocess, runner.session.get_inputs()[0])
    if mismatch:
        runner.close()
        raise BundleError(f"{bundle.path(entry)}: {mismatch}; re-export the bundle, or correct bundle.json's "
                          "preprocess to the graph's input")
    outputs = runner_outputs(runner)
    expected = bundle.expected_outputs(role)
    if outputs is not None and outputs != expected:
        runner.close()
        raise BundleError(f"{bundle.path(entry)}: model gives {outputs} outputs but role {role!r} needs {expected} "
                          "(the label table and the model disagree)")
    return runner


REGISTRY: dict[str, Backend] = {
    "tensorrt": Backend("tensorrt", _load_tensorrt),
    "onnxruntime": Backend("onnxruntime", _load_onnxruntime),
    "torch": Backend("torch", _load_torch),
}

def load_runner(
    bundle: Bundle,
    role: str = "main",
    options: RunnerOptions | None = None,
    *,
    choice: BackendChoice | None = None,
    announce: Announce | None = announce_stderr,
) -> Runner:
    """Load the model for `role` with `options` (or the backend already chosen: `choice`, as a zoo does for
    its members). Says (via `announce`; None: quiet) which backend it picked and why. A backend-specific
    option set for a backend that does not take it is ignored with a RuntimeWarning."""
    opts = options or RunnerOptions()
    choice = choice or choose_backend(bundle, role, opts)
    backend = REGISTRY[choice.backend]
    ignored = {k: v for k, v in opts.set_options().items() if k not in backend.takes}
    if ignored:
        warnings.warn(f"{backend.name} runner ignores {', '.join(f'{k}={v}' for k, v in ignored.items())} "
                      "(an option this backend's runner does not take)", RuntimeWarning, stacklevel=2)
    runner = backend.load(bundle, role, opts, choice, announce or announce_stderr)
    if announce is not None:
        if choice.backend == "torch":
            announce(f"backend: torch {choice.precision} on {runner.describe()['device']} ({choice.reason})")
        elif choice.fmt == "cache":
            announce(f"backend: tensorrt {choice.precision} ({choice.reason}: {runner.describe()['engine']})")
        else:
            providers = runner.describe().get("providers")
            extra = f", {providers[0]}" if providers else ""
            announce(f"backend: {choice.backend} {choice.precision}{extra} ({choice.reason})")
        if choice.backend == "tensorrt" and runner.describe().get("cuda_runtime"):
            announce(str(runner.describe()["cuda_runtime"]))  # which libcudart the device layer loaded, and why
    return runner


def runner_outputs(runner: Runner) -> int | None:
    """The number of logits a runner's model produces, where its session tells (ONNX Runtime)."""
    session = getattr(runner, "session", None)
    if session is None:
        return None
    try:
        dim = session.get_outputs()[0].shape[-1]
    except Exception:
        return None
    return dim if isinstance(dim, int) and dim > 0 else None


__all__ = ["BACKENDS", "REGISTRY", "Backend", "BackendChoice", "RunnerOptions", "announce_stderr", "choose_backend",
           "load_runner"]
