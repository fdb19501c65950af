"""Choosing and loading an inference backend for one model role of a bundle.

`auto` takes the fastest one available, in this order:
  tensorrt     a TensorRT engine of the asked precision is in the bundle and TensorRT is importable
  onnxruntime  an ONNX model of that precision is in the bundle and onnxruntime is importable
  torch        never chosen automatically; only with --backend torch --checkpoint RUN (debugging)
and says on stderr which it picked and why. Backends are imported lazily, so a device without one
of them (and every device without torch) still runs.

`--backend tensorrt` on a bundle without an engine of the asked precision builds one on first use
(its check set run, the engine cached under a key of model, TensorRT, GPU, precision and batch
profile: erudite_edge/backends/tensorrt/cache.py) instead of failing; `auto` never builds, it says how to.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Mapping

from erudite_edge.core.bundle import Bundle
from erudite_edge.errors import BackendUnavailable, BundleError
from erudite_edge.backends.base import Runner

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
TENSORRT_MODULE = "erudite_edge.backends.tensorrt.runner"
TENSORRT_HELP = (
    "TensorRT comes with JetPack on a Jetson (`sudo apt install python3-libnvinfer`; in a venv use "
    "--system-site-packages) and `pip install polygraphy`; elsewhere `pip install 'erudite-edge[trt]'`"
)
TORCH_HELP = "the torch backend runs a training checkpoint: pass --checkpoint RUN (and have torch installed)"


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # "tensorrt" or "onnxruntime"
    fmt: str  # the model format it runs: "engine" or "onnx"
    reason: str  # one line: why this one (and why not the faster ones)


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


ENGINE_PRECISION_ORDER = ("fp16", "int8", "fp32")


def resolve_precision(bundle: Bundle, backend: str = "auto", precision: str = "auto", role: str | None = None) -> str:
    """`auto`: where TensorRT can run, the first engine the bundle holds in the order fp16, int8, fp32
    (what `export engine` builds on the device); otherwise fp32 (the ONNX model every bundle has)."""
    if precision != "auto":
        return precision
    role = role or bundle.roles()[0]
    if backend in ("auto", "tensorrt") and _tensorrt_module()[0] is not None:
        for p in ENGINE_PRECISION_ORDER:
            if bundle.find(role, p, "engine") is not None:
                return p
        if backend == "tensorrt":
            return "fp16"  # the engine built on first use
    return "fp32"


def choose_backend(bundle: Bundle, role: str = "main", backend: str = "auto", precision: str = "fp32") -> BackendChoice:
    """Decide which backend runs `role` at `precision`; raise BackendUnavailable / BundleError when none can."""
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
    if backend == "torch":
        if not bundle.meta.get("checkpoint"):
            raise BackendUnavailable(TORCH_HELP)
        return BackendChoice("torch", "checkpoint", f"asked for; checkpoint {bundle.meta['checkpoint']}")
    if backend == "tensorrt":
        mod, why = _tensorrt_module()
        if mod is None:
            raise BackendUnavailable(f"--backend tensorrt: {why}; {TENSORRT_HELP}; or use --backend onnxruntime")
        if bundle.find(role, precision, "engine") is not None:
            return BackendChoice("tensorrt", "engine", f"asked for; {precision} engine in the bundle")
        # No engine in the bundle: build one on first use (cached; erudite_edge/backends/tensorrt/build.py engine_on_first_use).
        return BackendChoice("tensorrt", "cache", f"asked for; {precision} engine built on first use and cached")
    if backend == "onnxruntime":
        from erudite_edge.backends.onnxruntime_runner import import_onnxruntime

        import_onnxruntime()  # BackendUnavailable saying how to install it
        bundle.entry(role, precision, "onnx")
        return BackendChoice("onnxruntime", "onnx", "asked for")

    # auto
    trt, trt_why = _tensorrt_module()
    if trt is not None:
        if bundle.find(role, precision, "engine") is not None:
            return BackendChoice("tensorrt", "engine", f"fastest available; {precision} engine in the bundle")
        trt_why = (f"no {precision} TensorRT engine in the bundle (build one on this device: "
                   f"`erudite-edge export engine --bundle {bundle.root} --precision {precision}`)")
    ort, ort_why = _onnxruntime_module()
    if ort is not None:
        bundle.entry(role, precision, "onnx")  # BundleError: no ONNX model of this precision
        return BackendChoice("onnxruntime", "onnx", f"tensorrt skipped: {trt_why}")
    raise BackendUnavailable(
        f"no backend can run this bundle here: tensorrt: {trt_why}; onnxruntime: {ort_why} "
        "(`pip install onnxruntime`, or the onnxruntime-gpu wheel for your JetPack)"
    )


def announce_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_runner(
    bundle: Bundle,
    role: str = "main",
    backend: str = "auto",
    precision: str = "fp32",
    threads: int | None = None,
    announce: Callable[[str], None] | None = announce_stderr,
    spinning: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Runner:
    """Load the model for `role` on the chosen backend. Says on stderr (via `announce`; None: quiet)
    which backend it picked and why. `spinning`: ONNX Runtime's thread spinning (off: see
    onnxruntime_runner). `options`: keyword options for the runner that only some backends take
    (TensorRT's `cuda_graph`, `data_transfers`, as trtexec's --useCudaGraph / --noDataTransfers);
    a backend whose runner does not take one ignores it with a RuntimeWarning."""
    ignored = dict(options or {})
    choice = choose_backend(bundle, role, backend, precision)
    if choice.backend == "torch":
        from erudite_edge.backends.torch_runner import TorchRunner

        runner: Runner = TorchRunner(bundle.meta["checkpoint"], role=role, precision=precision)
        _warn_ignored("torch", ignored)
        if announce is not None:
            announce(f"backend: torch {precision} on {runner.describe()['device']} ({choice.reason})")
        return runner
    if choice.fmt == "cache":
        runner = _cached_engine_runner(bundle, role, precision, announce)
        _warn_ignored("tensorrt", ignored)
        if announce is not None:
            announce(f"backend: tensorrt {precision} ({choice.reason}: {runner.describe()['engine']})")
        return runner
    entry = bundle.entry(role, precision, choice.fmt)
    if choice.backend == "tensorrt":
        mod, why = _tensorrt_module()
        if mod is None:  # pragma: no cover - checked by choose_backend a moment ago
            raise BackendUnavailable(f"tensorrt: {why}")
        cls = mod.TensorRTRunner
        # from_bundle reads the engine's sidecar (rebuild hint, expected outputs) as well
        factory = cls.from_bundle if hasattr(cls, "from_bundle") else cls
        taken = {k: v for k, v in ignored.items() if takes_keyword(factory, k)}
        ignored = {k: v for k, v in ignored.items() if k not in taken}
        runner = factory(bundle, role, precision, **taken) if factory is not cls else cls(bundle, entry, **taken)
    else:
        from erudite_edge.backends.ort_tensorrt_ep import tensorrt_ep_options
        from erudite_edge.backends.onnxruntime_runner import OnnxRuntimeRunner

        # Used only where this onnxruntime has the TensorRT EP. INT8 there needs the TensorRT Q/DQ layout.
        ep_precision = "fp16" if precision == "int8" and (entry.info or {}).get("target", "tensorrt") != "tensorrt" else precision
        trt_ep = tensorrt_ep_options(ep_precision, bundle.preprocess, entry.input)
        runner = OnnxRuntimeRunner(bundle.path(entry), precision=precision, threads=threads, spinning=spinning,
                                   trt_options=trt_ep)
    _warn_ignored(choice.backend, ignored)
    outputs = runner_outputs(runner)
    expected = bundle.expected_outputs(role)
    if outputs is not None and outputs != expected:
        runner.close()
        raise BundleError(f"{bundle.path(entry)}: model gives {outputs} outputs but role {role!r} needs {expected} "
                          "(the label table and the model disagree)")
    if announce is not None:
        detail = runner.describe()
        providers = detail.get("providers")
        extra = f", {providers[0]}" if providers else ""
        announce(f"backend: {choice.backend} {precision}{extra} ({choice.reason})")
    return runner


def _warn_ignored(backend: str, ignored: Mapping[str, Any]) -> None:
    if ignored:
        warnings.warn(f"{backend} runner ignores {', '.join(f'{k}={v}' for k, v in ignored.items())} "
                      "(an option this backend's runner does not take)", RuntimeWarning, stacklevel=3)


def takes_keyword(fn: Callable[..., Any], name: str) -> bool:
    """Whether `fn` accepts the keyword argument `name` (by name or through **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _cached_engine_runner(bundle: Bundle, role: str, precision: str, announce: Callable[[str], None] | None) -> Runner:
    """The engine for (role, precision) from the engine cache, built now if missing or stale."""
    from erudite_edge.backends.tensorrt.build import engine_on_first_use

    from erudite_edge.backends.tensorrt.runner import TensorRTRunner

    path = engine_on_first_use(bundle, role, precision, log=announce or announce_stderr)
    return TensorRTRunner(path, precision=precision, expected_outputs=bundle.expected_outputs(role))


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


__all__ = ["BACKENDS", "BackendChoice", "Runner", "choose_backend", "load_runner", "resolve_precision"]
