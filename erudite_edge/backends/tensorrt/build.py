"""Build TensorRT engines from a bundle's ONNX models, on the device that will run them.

An engine is tuned for, and only loads on, the GPU and TensorRT version that built it, so this
runs on the target (a Jetson included) and imports no torch: numpy, TensorRT, Polygraphy (its
loaders build the engine; polygraphy.cuda is the device-memory layer).

Precision comes from the model where TensorRT wants it there:
  fp32  model.onnx
  fp16  TensorRT 10: model.onnx with BuilderFlag.FP16 (weak typing). TensorRT 11 removed the
        weak-typing precision flags: the bundle's model.fp16.onnx, strongly typed.
  int8  the bundle's Q/DQ model model.int8.onnx (explicit quantization, no calibrator), with
        BuilderFlag.INT8 where it still exists, else strongly typed.
  best  the Q/DQ model with FP16 allowed too (INT8 + FP16 flags) where the flags exist.
The choice is a pure function of the requested precision and what the installed TensorRT offers
(`plan_build`), decided with hasattr-style checks, so one code path serves 10.x and 11.x.

Outputs, per role: `model.<precision>.engine` (`model.<precision>.dla<N>.engine` for DLA core N; other
roles: bundle.default_filename), its sidecar `<engine>.json` (erudite_edge.backends.tensorrt.sidecar), and
an entry in bundle.json keyed by role, precision (best included) and DLA core.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from erudite_edge._version import __version__
from erudite_edge.backends.tensorrt.device_memory import current_device, polygraphy_version
from erudite_edge.backends.tensorrt.runner import device_with_dla_cores, dims_list, tensorrt_version
from erudite_edge.backends.tensorrt.sidecar import DeviceInfo, EngineSidecar, sidecar_path, write_sidecar
from erudite_edge.backends.tensorrt.sparse_log import SparseLayers, sparsity_log
from erudite_edge.backends.tensorrt.sparse_log import parse as parse_sparsity
from erudite_edge.core.bundle import ATTENTION_OUTPUT, Bundle, ModelEntry, default_filename
from erudite_edge.core.fileio import atomic_path
from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import BackendUnavailable, BundleError, EruditeError, UsageError

ENGINE_PRECISIONS = ("fp16", "int8", "best", "fp32")
DEFAULT_BATCH = "1:8:32"
DEFAULT_WORKSPACE_GIB = 1.0


# -- arguments ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchRange:
    """The optimisation profile's batch sizes: the engine accepts min..max, tuned for opt."""

    min: int
    opt: int
    max: int

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


def parse_batch(text: str | int) -> BatchRange:
    """"1:8:32" -> (1, 8, 32); "8" -> (1, 8, 8): any batch up to 8, tuned for 8."""
    s = str(text).strip()
    parts = s.split(":")
    usage = f"--batch {s!r}: expected MIN:OPT:MAX (e.g. {DEFAULT_BATCH}) or MAX (e.g. 8), positive integers"
    if len(parts) not in (1, 3):
        raise UsageError(usage)
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise UsageError(usage) from None
    if any(v < 1 for v in values):
        raise UsageError(usage)
    lo, opt, hi = (1, values[0], values[0]) if len(values) == 1 else values
    if not lo <= opt <= hi:
        raise UsageError(f"--batch {s!r}: need MIN <= OPT <= MAX")
    return BatchRange(lo, opt, hi)


def workspace_bytes(gib: float) -> int:
    """--workspace in GiB -> bytes for the builder's WORKSPACE memory pool."""
    try:
        value = float(gib)
    except (TypeError, ValueError):
        raise UsageError(f"--workspace {gib!r}: expected a size in GiB, e.g. 1 or 0.5") from None
    if not value > 0 or value != value or value == float("inf"):
        raise UsageError(f"--workspace {gib!r}: must be a positive size in GiB")
    return max(1, int(value * (1 << 30)))


def check_precision(precision: str) -> str:
    p = str(precision).lower()
    if p not in ENGINE_PRECISIONS:
        raise UsageError(f"--precision {precision!r}: one of {', '.join(ENGINE_PRECISIONS)}")
    return p


# -- DLA: static shapes, FP16/INT8 only ---------------------------------------------------------------------
# A DLA core runs only FP16 and INT8 and only static shapes: the optimisation profile must have min = opt = max
# and the engine gets that one shape at run time (TensorRT's DLA documentation, "DLA supported layers and
# restrictions"). A dynamic profile does not fail the build with GPU fallback on: the network silently lands
# on the GPU. So a DLA build takes one batch size (`--batch N` is N:N:N there) and the runner pads every batch
# to it (TensorRTRunner).
DLA_PRECISIONS = ("fp16", "int8", "best")
DEFAULT_DLA_BATCH = 8  # the GPU profile's OPT: what `run --batch` feeds by default


def check_dla_core(dla_core: int | None, precision: str) -> None:
    """UsageError (one line) for a DLA core that cannot be (negative) or a precision a DLA cannot run."""
    if dla_core is None:
        return
    if dla_core < 0:
        raise UsageError(f"--dla-core {dla_core}: a DLA core is numbered from 0")
    if precision not in DLA_PRECISIONS:
        raise UsageError(f"--precision {precision} --dla-core {dla_core}: a DLA runs FP16 and INT8 only; pass "
                         f"--precision {', '.join(DLA_PRECISIONS)}, or drop --dla-core to build for the GPU")


def resolve_batch(batch: str | int | BatchRange | None, dla_core: int | None = None) -> BatchRange:
    """The profile's batch range. GPU: `--batch` as parse_batch reads it (None: 1:8:32). DLA: one static
    batch, min = opt = max: `N` means N:N:N, MIN:OPT:MAX must have all three equal (None: 8:8:8)."""
    if dla_core is None:
        if batch is None:
            return parse_batch(DEFAULT_BATCH)
        return batch if isinstance(batch, BatchRange) else parse_batch(batch)
    if batch is None:
        return BatchRange(DEFAULT_DLA_BATCH, DEFAULT_DLA_BATCH, DEFAULT_DLA_BATCH)
    if isinstance(batch, BatchRange):
        b = batch
    else:
        text = str(batch).strip()
        b = parse_batch(text)
        if ":" not in text:
            b = BatchRange(b.max, b.max, b.max)
    if not b.min == b.opt == b.max:
        raise UsageError(f"--batch {b} --dla-core {dla_core}: a DLA engine takes one batch size (static shapes, "
                         f"min = opt = max): pass --batch N, e.g. --batch {b.opt} for {b.opt}:{b.opt}:{b.opt}")
    return b


# -- what to build with -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrtCapabilities:
    """What the installed TensorRT offers, reduced to what the build decision needs."""

    version: str
    builder_flags: frozenset[str]
    network_flags: frozenset[str]

    @classmethod
    def from_module(cls, trt_module: Any) -> "TrtCapabilities":
        return cls(
            version=str(trt_module.__version__),
            builder_flags=frozenset(trt_module.BuilderFlag.__members__),
            network_flags=frozenset(trt_module.NetworkDefinitionCreationFlag.__members__),
        )

    @property
    def major(self) -> int:
        try:
            return int(self.version.split(".")[0])
        except ValueError:
            return 0

    @property
    def weak_typing(self) -> bool:
        """Precision flags (FP16, INT8) exist: TensorRT <= 10. TensorRT 11 removed them."""
        return "FP16" in self.builder_flags


@dataclass(frozen=True)
class BuildPlan:
    precision: str  # as asked: fp32, fp16, int8, best
    source_precision: str  # which of the bundle's ONNX models to parse: fp32, fp16, int8
    builder_flags: tuple[str, ...] = ()  # trt.BuilderFlag names to set
    network_flags: tuple[str, ...] = ()  # trt.NetworkDefinitionCreationFlag names
    note: str = ""  # what the user should know about this choice, if anything

    @property
    def strongly_typed(self) -> bool:
        return "STRONGLY_TYPED" in self.network_flags

    @property
    def bundle_precision(self) -> str:
        """The precision of the engine's bundle.json entry: as built (a `best` engine is its own kind, beside
        the int8 one, not recorded as int8)."""
        return self.precision


def plan_build(precision: str, caps: TrtCapabilities) -> BuildPlan:
    """Which ONNX model and which flags give `precision` on this TensorRT (a pure function)."""
    precision = check_precision(precision)
    base: tuple[str, ...] = ()
    if caps.major and caps.major < 10 and "EXPLICIT_BATCH" in caps.network_flags:
        base = ("EXPLICIT_BATCH",)  # implicit batch was the default before 10; ONNX needs explicit
    strong = base + (("STRONGLY_TYPED",) if "STRONGLY_TYPED" in caps.network_flags else ())
    weak = caps.weak_typing
    if precision == "fp32":
        return BuildPlan("fp32", "fp32", (), base if weak else strong)
    if precision == "fp16":
        if weak:
            return BuildPlan("fp16", "fp32", ("FP16",), base)
        return BuildPlan("fp16", "fp16", (), strong)
    if precision == "int8":
        if weak and "INT8" in caps.builder_flags:
            return BuildPlan("int8", "int8", ("INT8",), base)
        return BuildPlan("int8", "int8", (), strong)
    # best
    if weak and {"INT8", "FP16"} <= caps.builder_flags:
        return BuildPlan("best", "int8", ("INT8", "FP16"), base)
    return BuildPlan(
        "best",
        "int8",
        (),
        strong,
        note=(
            f"TensorRT {caps.version} has no FP16 builder flag (strong typing only): layers outside the "
            "Q/DQ pairs run in the INT8 model's own types"
        ),
    )


def with_sparse_weights(plan: BuildPlan, bundle: Bundle, caps: TrtCapabilities, say: Callable[[str], None]) -> BuildPlan:
    """`plan` with TensorRT's SPARSE_WEIGHTS builder flag when the bundle's weights are 2:4 sparse (bundle.json
    "sparsity", counted on the weights at export: `prune --sparsity 2:4`); the layers that qualify are said.
    Which ones TensorRT then runs on sparse kernels is its choice: its build log lists them, and the build
    says them (sparse_log.py)."""
    sparsity = bundle.meta.get("sparsity") or {}
    count = int(sparsity.get("count", 0))
    if not count:
        return plan
    if "SPARSE_WEIGHTS" not in caps.builder_flags:
        say(f"note: {count} layers have 2:4 sparse weights, but TensorRT {caps.version} has no SPARSE_WEIGHTS flag; built dense")
        return plan
    say(f"{count} layers have 2:4 sparse weights: TensorRT's SPARSE_WEIGHTS flag is set (it picks sparse kernels "
        "where they are faster; on CNNs often none)")
    return dataclasses.replace(plan, builder_flags=plan.builder_flags + ("SPARSE_WEIGHTS",))


def profile_shapes(
    spec: PreprocessSpec,
    onnx_input_shape: Sequence[int],
    batch: BatchRange,
    input_name: str = "images",
) -> dict[str, list[int]]:
    """min/opt/max input shapes for the optimisation profile.

    Channels, height and width come from the bundle's preprocessing (its layout, NCHW or NHWC);
    the ONNX input's own fixed dims must agree with them (its dynamic dims, -1 or 0, are filled).
    """
    h, w = spec.input_size
    channels = 3  # RGB or BGR
    sample = [channels, h, w] if spec.layout == "NCHW" else [h, w, channels]
    dims = [int(d) for d in onnx_input_shape]
    if len(dims) != 4:
        raise BundleError(
            f"ONNX input {input_name!r} has shape {dims}; expected 4 dims ({spec.layout} with a batch axis)"
        )
    for got, want in zip(dims[1:], sample):
        if got > 0 and got != want:
            raise BundleError(
                f"ONNX input {input_name!r} is {dims} but the bundle's preprocessing gives "
                f"{spec.layout} {'x'.join(map(str, sample))}: the model and bundle.json disagree; re-export the bundle"
            )
    if dims[0] > 0 and (batch.min != dims[0] or batch.max != dims[0]):
        raise UsageError(
            f"ONNX input {input_name!r} has a fixed batch of {dims[0]}: pass --batch {dims[0]}:{dims[0]}:{dims[0]} "
            "or re-export the model with a dynamic batch axis"
        )
    return {
        "min": [batch.min, *sample],
        "opt": [batch.opt, *sample],
        "max": [batch.max, *sample],
    }


def select_sources(bundle: Bundle, source_precision: str, role: str | None = None) -> dict[str, ModelEntry]:
    """The ONNX model to build from for each role (all of the bundle's roles, or just `role`).

    An erudite bundle has one role ("main"); a zoo bundle one engine per role (coarse and each
    fine:<dataset>). Every source must be present and unchanged before the first, long, build
    starts; a missing precision names the export command that makes it.
    """
    roles = bundle.roles()
    if role is not None:
        if role not in roles:
            raise UsageError(f"--role {role!r}: this {bundle.kind} bundle has roles {', '.join(roles)}")
        roles = [role]
    sources = {r: bundle.entry(r, source_precision, "onnx") for r in roles}
    for r, entry in sources.items():
        path = bundle.path(entry)  # checks the sha256 (cached by size and mtime) unless --no-verify
        if not path.is_file():
            raise BundleError(f"{path}: listed in bundle.json for role {r!r} but missing")
        if source_precision == "int8":
            check_int8_target(entry, path)
    return sources


def check_int8_target(entry: ModelEntry, path: Path) -> None:
    """An INT8 engine needs the int8 model laid out for TensorRT (Q/DQ on layer inputs, symmetric int8).

    `export int8 --target onnxruntime` writes the same file name in ONNX Runtime's CPU layout (uint8
    activations, Q/DQ on outputs), which TensorRT's explicit quantization does not take. Int8 entries
    from before targets existed have no `target`: they were made in the TensorRT layout."""
    target = str((entry.info or {}).get("target", "tensorrt"))
    if target != "tensorrt":
        raise BundleError(
            f"{path}: this int8 model is laid out for {target}, not TensorRT; "
            "re-run `erudite-edge export int8 --target tensorrt` before building an int8 engine"
        )


def engine_filename(role: str, precision: str, dla_core: int | None = None) -> str:
    """model.<precision>.engine for the main role; coarse.<precision>.engine, fine.<ds>.<precision>.engine;
    a DLA engine adds .dla<N> (model.fp16.dla0.engine)."""
    return default_filename(role, precision if dla_core is None else f"{precision}.dla{dla_core}", "engine")


def make_sidecar(
    *,
    tensorrt_version: str,
    device: DeviceInfo,
    plan: BuildPlan,
    role: str,
    inputs: list[str],
    outputs: list[str],
    profile: dict[str, dict[str, list[int]]],
    source_onnx: str,
    source_sha256: str,
    polygraphy_version: str | None = None,
) -> EngineSidecar:
    return EngineSidecar(
        tensorrt_version=tensorrt_version,
        gpu_name=device.name,
        compute_capability=device.capability_text,
        precision=plan.precision,
        role=role,
        inputs=list(inputs),
        outputs=list(outputs),
        profile=profile,
        source_onnx=source_onnx,
        source_sha256=source_sha256,
        erudite_edge_version=__version__,
        strongly_typed=plan.strongly_typed,
        builder_flags=list(plan.builder_flags),
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        sm_count=device.sm_count,
        total_memory_mib=device.total_memory_mib,
        dla_cores=device.dla_cores,
        polygraphy_version=polygraphy_version,
    )


def this_device(trt_module: Any) -> DeviceInfo:
    """The current GPU as engines are keyed by it: name, compute capability, SM count, memory (the device
    layer) and the DLA core count TensorRT sees (a TensorRT runtime's num_DLA_cores)."""
    return device_with_dla_cores(current_device(), trt_module.Runtime(trt_module.Logger(trt_module.Logger.WARNING)))


# -- TensorRT, through Polygraphy's loaders -------------------------------------------------------------
@dataclass
class BuiltEngine:
    path: Path
    inputs: list[str]
    outputs: list[str]
    profile: dict[str, dict[str, list[int]]]
    seconds: float
    network_layers: tuple[str, ...] = ()  # the parsed network's layer names, in order (DLA builds: for the report)
    sparse_layers: SparseLayers | None = None  # SPARSE_WEIGHTS builds: what TensorRT's log said it ran sparse


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def parser_error_line(err: Any) -> str:
    """One line for one ONNX parser error: the node, its operator and TensorRT's description."""
    try:
        node = int(err.node())
        where = f"node {node} ({err.node_operator()} {err.node_name()!r}): " if node >= 0 else ""
        return _one_line(where + str(err.desc()))
    except Exception:  # an older parser error object: its str() is all there is
        return _one_line(str(err))


def polygraphy_error_line(err: BaseException) -> str:
    """Polygraphy prints its full message itself before raising; the exception's first line names it."""
    text = str(err).strip()
    return _one_line(text.splitlines()[0]) if text else type(err).__name__


def dla_problem(dla_core: int, cores: int, device_name: str) -> str | None:
    """Why `--dla-core dla_core` cannot be used on a device with `cores` DLA cores (None: it can)."""
    if dla_core < 0:
        return f"--dla-core {dla_core}: a DLA core is numbered from 0"
    if cores <= 0:
        return (f"--dla-core {dla_core}: {device_name} has no DLA (deep learning accelerator; Jetson AGX/NX Orin and "
                "Xavier have one or two): drop --dla-core to build for the GPU")
    if dla_core >= cores:
        return f"--dla-core {dla_core}: {device_name} has {cores} DLA core(s), numbered 0 to {cores - 1}"
    return None


def build_serialized(
    onnx_path: Path,
    plan: BuildPlan,
    batch: BatchRange,
    spec: PreprocessSpec,
    workspace: int,
    out_path: Path,
    timing_cache: Path | None = None,
    dla_core: int | None = None,
    device_name: str = "this device",
) -> BuiltEngine:
    """Parse `onnx_path`, build with `plan`'s precision and one optimisation profile, write `out_path` whole.

    Polygraphy's loaders do the TensorRT API work (NetworkFromOnnxPath with strong typing where the
    plan says, CreateConfig with the profile, precision flags, workspace pool and timing cache,
    EngineBytesFromNetwork, SaveBytes), so differences between TensorRT 8.6 and 10 are theirs to handle.
    The plan is written as the builder serialised it, never deserialised here: the one deserialisation
    is the check set's (check_engine), so a 4 or 8 GB Orin Nano never holds a second copy of the engine.
    The engine is saved under a temporary name and renamed: a killed build leaves no half engine.
    With `dla_core`: DLA as the default device on that core, GPU fallback on, detailed layer information
    kept in the plan (where the layers ended up is read from the built engine: dla_placement), and the
    network's layer names returned; `batch` must be static there (resolve_batch).
    """
    import tensorrt as trt
    from polygraphy.backend.common import SaveBytes
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        PostprocessConfig,
        Profile,
    )
    from polygraphy.exception import PolygraphyException

    try:
        builder, network, parser = NetworkFromOnnxPath(str(onnx_path), strongly_typed=plan.strongly_typed)()
    except PolygraphyException as e:
        raise BundleError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse it: {polygraphy_error_line(e)}") from e
    # a model exported --with-attention has the masks as a second output: the engine serves the logits only
    # (TensorRTRunner takes one output), so that output is unmarked; `run --save-attention` uses ONNX Runtime
    for i in reversed(range(network.num_outputs)):
        if network.num_outputs > 1 and network.get_output(i).name == ATTENTION_OUTPUT:
            network.unmark_output(network.get_output(i))
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise BundleError(
            f"{onnx_path}: {network.num_inputs} inputs and {network.num_outputs} outputs; an erudite-edge model has one of each"
        )
    inp = network.get_input(0)
    out = network.get_output(0)
    shapes = profile_shapes(spec, dims_list(inp.shape), batch, inp.name)
    config: Any = CreateConfig(
        fp16="FP16" in plan.builder_flags,
        int8="INT8" in plan.builder_flags,
        sparse_weights="SPARSE_WEIGHTS" in plan.builder_flags,  # Polygraphy sets trt.BuilderFlag.SPARSE_WEIGHTS
        profiles=[Profile().add(inp.name, min=shapes["min"], opt=shapes["opt"], max=shapes["max"])],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: workspace},
        load_timing_cache=str(timing_cache) if timing_cache is not None else None,
        use_dla=dla_core is not None,
        allow_gpu_fallback=dla_core is not None,
        # DETAILED (TensorRT 8.2+; Polygraphy's own default where it sets one) keeps each engine layer's type in
        # the plan, which tells a DLA subgraph from a GPU (Myelin) one in the engine inspector's output
        profiling_verbosity=getattr(getattr(trt, "ProfilingVerbosity", None), "DETAILED", None) if dla_core is not None else None,
    )
    layer_names: tuple[str, ...] = ()
    if dla_core is not None:
        if batch.min != batch.max or batch.opt != batch.max:
            raise UsageError(f"--batch {batch} --dla-core {dla_core}: a DLA engine takes one batch size (N:N:N)")
        # IBuilder.num_DLA_cores (TensorRT 8.6, 10.x, 11.x)
        problem = dla_problem(dla_core, int(getattr(builder, "num_DLA_cores", 0)), device_name)
        if problem:
            raise BackendUnavailable(problem)
        layer_names = tuple(str(network.get_layer(i).name) for i in range(network.num_layers))

        def on_dla(_builder: Any, _net: Any, cfg: Any) -> None:
            cfg.DLA_core = dla_core  # IBuilderConfig.DLA_core; Polygraphy's use_dla picks core 0

        config = PostprocessConfig(config, on_dla)
    started = time.monotonic()
    try:
        # EngineBytesFromNetwork (Polygraphy 0.47.1 with TensorRT 8.6 up to 0.53): IBuilder.build_serialized_network,
        # the plan as IHostMemory; SaveBytes writes it as it is. (EngineFromNetwork + SaveEngine, used before,
        # deserialised the plan into an ICudaEngine only to serialise it again.)
        sparse = "SPARSE_WEIGHTS" in plan.builder_flags
        with contextlib.ExitStack() as stack:
            sparsity_lines: list[str] | None = stack.enter_context(sparsity_log()) if sparse else []  # which went sparse
            plan_bytes = EngineBytesFromNetwork(
                (builder, network, parser),
                config=config,
                save_timing_cache=str(timing_cache) if timing_cache is not None else None,
            )()
        with atomic_path(out_path) as tmp:
            SaveBytes(plan_bytes, str(tmp))()
        del plan_bytes  # the host copy of the plan goes before the check set deserialises it
    except PolygraphyException as e:
        raise BundleError(
            f"{onnx_path}: TensorRT could not build a {plan.precision} engine ({polygraphy_error_line(e)}); "
            "a larger --workspace or another --precision may help"
        ) from e
    return BuiltEngine(
        path=out_path,
        inputs=[inp.name],
        outputs=[out.name],
        profile={inp.name: shapes},
        seconds=time.monotonic() - started,
        network_layers=layer_names,
        sparse_layers=parse_sparsity(sparsity_lines) if sparse else None,
    )


# -- where the layers of a DLA build ended up ---------------------------------------------------------------
@dataclass(frozen=True)
class DlaPlacement:
    """Which layers of a built engine run on the DLA, as TensorRT's engine inspector tells (`known` False: it
    cannot tell, `why` says why). `subgraphs`: the engine layers that are DLA loadables; `on_dla`: how many
    of the network's layers their names span (None where a name is not the network's)."""

    known: bool
    why: str = ""
    subgraphs: tuple[str, ...] = ()
    on_dla: int | None = None
    network_layers: int = 0
    engine_layers: int = 0

    def summary(self, dla_core: int) -> str:
        head = f"DLA core {dla_core}"
        if not self.known:
            return f"{head}: cannot tell which layers run on the DLA ({self.why})"
        if not self.subgraphs:
            return (f"{head}: no layer was placed on the DLA (engine inspector): the whole network runs on the GPU; "
                    "TensorRT's warnings above say why")
        gpu = self.engine_layers - len(self.subgraphs)
        if self.on_dla is None:  # a subgraph named by layers the parsed network does not have
            return (f"{head}: {len(self.subgraphs)} DLA subgraph(s) placed on the DLA (engine inspector: "
                    f"{', '.join(self.subgraphs)}); {gpu} engine layer(s) run on the GPU")
        return (f"{head}: {self.on_dla} of {self.network_layers} network layers placed on the DLA in "
                f"{len(self.subgraphs)} DLA subgraph(s) (engine inspector); {gpu} engine layer(s) run on the GPU")

    def to_dict(self) -> dict[str, Any]:
        return {"known": self.known, "why": self.why, "subgraphs": list(self.subgraphs), "on_dla": self.on_dla,
                "network_layers": self.network_layers, "engine_layers": self.engine_layers}


FOREIGN_NODE = "{ForeignNode["


def _span(name: str, order: dict[str, int]) -> int | None:
    """How many network layers `{ForeignNode[first...last]}` spans in network order (None: names not found)."""
    inner = name[len(FOREIGN_NODE):]
    inner = inner[:-2] if inner.endswith("]}") else inner  # a layer name may end in "]" itself
    ends = inner.split("...")
    if len(ends) == 1 and ends[0] in order:
        return 1
    if len(ends) == 2 and ends[0] in order and ends[1] in order and order[ends[1]] >= order[ends[0]]:
        return order[ends[1]] - order[ends[0]] + 1
    return None


def dla_placement(engine: Any, trt_module: Any, network_layers: Sequence[str] = ()) -> DlaPlacement:
    """Where a built engine's layers run, from TensorRT's engine inspector.

    ICudaEngine.create_engine_inspector and IEngineInspector.get_engine_information(LayerInformationFormat.JSON)
    exist from TensorRT 8.2 (checked in pyCore.cpp of 8.6, 10.3 and 11); the JSON holds "Layers". A DLA
    loadable is one engine layer named `{ForeignNode[first...last]}` (TensorRT's own DLA report prints it as
    "[DlaLayer] {ForeignNode[...]}", sampleCudla's README); GPU layers fused by Myelin can carry that name too,
    with LayerType "Myelin", so the layer types are needed (ProfilingVerbosity.DETAILED) and a plan without them
    gets "cannot tell". NVIDIA's DLA guide names this inspector output as the way to verify DLA placement."""
    version = getattr(trt_module, "__version__", "?")
    inspector_of = getattr(engine, "create_engine_inspector", None)
    json_format = getattr(getattr(trt_module, "LayerInformationFormat", None), "JSON", None)
    if inspector_of is None or json_format is None:
        return DlaPlacement(False, f"TensorRT {version} has no engine inspector")
    try:
        layers = json.loads(inspector_of().get_engine_information(json_format))["Layers"]
    except Exception as e:  # an inspector that returns nothing usable
        return DlaPlacement(False, f"the engine inspector's layer information is unreadable: {type(e).__name__}")
    if not isinstance(layers, list) or not all(isinstance(x, dict) and "LayerType" in x for x in layers):
        return DlaPlacement(False, "the engine's layer information has no layer types (not built with detailed "
                                   "profiling verbosity)")
    subgraphs = tuple(str(x.get("Name", "")) for x in layers
                      if str(x.get("Name", "")).startswith(FOREIGN_NODE) and str(x["LayerType"]).lower() != "myelin")
    order = {name: i for i, name in enumerate(network_layers)}
    spans = [_span(name, order) for name in subgraphs]
    on_dla = None if any(n is None for n in spans) else sum(n for n in spans if n is not None)
    return DlaPlacement(True, subgraphs=subgraphs, on_dla=on_dla, network_layers=len(network_layers),
                        engine_layers=len(layers))


def check_engine(
    engine_path: Path,
    bundle: Bundle,
    role: str,
    precision: str,
    expected_outputs: int | None,
    accept_drop: bool,
    say: Callable[[str], None],
    *,
    dla_core: int | None = None,
    network_layers: Sequence[str] = (),
) -> tuple[dict[str, Any] | None, DlaPlacement | None]:
    """Deserialise a just-built engine once, to run the bundle's check set on it and, for a DLA build, read
    where its layers were placed (said, and returned). Returns the check result for its sidecar (None: no
    check set, said as a warning) and the placement (None: not a DLA build). AccuracyDrop below the
    precision's minimum unless `accept_drop`."""
    from erudite_edge.backends.tensorrt.runner import TensorRTRunner
    from erudite_edge.core.check_set import REEXPORT_HINT, enforce, has_check_set, load_check_set, run_check

    checked = has_check_set(bundle)
    if not checked:
        say(f"warning: {bundle.root} has no check set, so this engine's accuracy is not checked; {REEXPORT_HINT}")
    if not checked and dla_core is None:
        return None, None  # nothing to learn from deserialising it here
    placement = None
    result = None
    runner = TensorRTRunner(engine_path, precision=precision, expected_outputs=expected_outputs)
    with runner:
        if dla_core is not None:
            import tensorrt as trt

            placement = dla_placement(runner.engine, trt, network_layers)
            say(placement.summary(dla_core))
        if checked:
            result = run_check(runner, load_check_set(bundle), role, precision, backend="tensorrt")
    if result is None:
        return None, placement
    say(f"check: {result.summary()}")
    enforce([result], accept_drop, say)
    return result.to_dict(), placement


def build_checked(
    bundle: Bundle,
    role: str,
    entry: ModelEntry,
    plan: BuildPlan,
    batch: BatchRange,
    workspace: int,
    engine_path: Path,
    *,
    version: str,
    device: DeviceInfo,
    timing_cache: Path | None = None,
    accept_drop: bool = False,
    cache_key: dict[str, Any] | None = None,
    dla_core: int | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> EngineSidecar:
    """Build one engine under a candidate name, run the check set on it, and only then move it (and its
    sidecar) to `engine_path`: an engine that fails its check never replaces one that worked."""
    candidate = engine_path.with_name(f".{engine_path.name}.candidate-{os.getpid()}")
    try:
        say(f"building {plan.precision} engine for role {role} from {entry.file} with TensorRT {version} on "
            f"{device.describe()} (batch {batch}); this takes minutes")
        result = build_serialized(bundle.path(entry), plan, batch, bundle.preprocess, workspace, candidate, timing_cache,
                                  dla_core, device.describe())
        say(f"built {engine_path.name} in {result.seconds:.1f} s")
        if result.sparse_layers is not None:
            say(result.sparse_layers.summary())
        sidecar = make_sidecar(
            tensorrt_version=version,
            device=device,
            plan=plan,
            role=role,
            inputs=result.inputs,
            outputs=result.outputs,
            profile=result.profile,
            source_onnx=entry.file,
            source_sha256=entry.sha256,
            polygraphy_version=polygraphy_version(),
        )
        sidecar.cache_key = cache_key
        sidecar.dla_core = dla_core
        write_sidecar(candidate, sidecar)
        sidecar.check, placement = check_engine(candidate, bundle, role, plan.precision, entry.num_outputs or None,
                                                accept_drop, say, dla_core=dla_core, network_layers=result.network_layers)
        sidecar.dla_placement = placement.to_dict() if placement is not None else None
        # Old sidecar first: a crash between the two renames leaves an engine the runner refuses
        # (no sidecar), never a new engine described by an old sidecar.
        sidecar_path(engine_path).unlink(missing_ok=True)
        os.replace(candidate, engine_path)
        write_sidecar(engine_path, sidecar)
        return sidecar
    finally:
        candidate.unlink(missing_ok=True)
        sidecar_path(candidate).unlink(missing_ok=True)


def build_engine(
    bundle: Bundle,
    precision: str,
    batch: str | BatchRange | None = None,
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    timing_cache: str | os.PathLike[str] | None = None,
    role: str | None = None,
    *,
    accept_accuracy_drop: bool = False,
    dla_core: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Build one engine per role of the (loaded) bundle (or just `role`) on this GPU; returns the engine paths.

    Each engine is written whole (temporary name, then rename) with its sidecar, checked against the
    bundle's check set (the result goes into the sidecar), and recorded in bundle.json under its build
    kind (role, precision as built, `best` included, and DLA core), replacing only an engine of that kind. Raises UsageError for bad arguments, BackendUnavailable (exit code 2)
    without TensorRT, Polygraphy or a GPU, BundleError for a model that is missing or that TensorRT
    cannot parse or build, AccuracyDrop (exit code 1) below the minimum agreement with FP32.
    `batch`: None is 1:8:32 for the GPU; with `dla_core` one static batch (resolve_batch), 8:8:8 by default.
    """
    say = log or (lambda _msg: None)
    precision = check_precision(precision)
    check_dla_core(dla_core, precision)
    batch_range = resolve_batch(batch, dla_core)
    workspace = workspace_bytes(workspace_gib)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None and cache_path.is_dir():
        raise UsageError(f"--timing-cache {cache_path}: is a directory; name a file")

    version = tensorrt_version()  # BackendUnavailable: the one-line "how to get TensorRT"
    import tensorrt as trt

    caps = TrtCapabilities.from_module(trt)
    plan = with_sparse_weights(plan_build(precision, caps), bundle, caps, say)
    sources = select_sources(bundle, plan.source_precision, role)

    device = this_device(trt)
    if plan.note:
        say(f"note: {plan.note}")
    built: list[Path] = []
    for r, entry in sources.items():
        engine_path = bundle.root / engine_filename(r, plan.precision, dla_core)
        sidecar = build_checked(bundle, r, entry, plan, batch_range, workspace, engine_path, version=version,
                                device=device, timing_cache=cache_path, accept_drop=accept_accuracy_drop,
                                dla_core=dla_core, say=say)
        bundle.add_model(r, plan.bundle_precision, engine_path, fmt="engine", info=sidecar.to_dict(), dla_core=dla_core)
        bundle.save()
        built.append(engine_path)
    return built


def engine_on_first_use(
    bundle: Bundle,
    role: str,
    precision: str,
    batch: str | BatchRange | None = None,
    dla_core: int | None = None,
    *,
    accept_accuracy_drop: bool = False,
    env: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The cached engine for (bundle model, this TensorRT, this GPU: name, capability, SM count, memory, DLA
    cores; precision, batch profile, DLA core; this erudite-edge and Polygraphy), built now when there is none
    or the one there is stale; one process builds while others wait."""
    from erudite_edge.backends.tensorrt.cache import CacheKey, cache_dir, engine_lock
    from erudite_edge.backends.tensorrt.sidecar import compatibility_problems, read_sidecar

    say = log or (lambda _msg: None)
    precision = check_precision(precision)
    check_dla_core(dla_core, precision)
    batch_range = resolve_batch(batch, dla_core)
    version = tensorrt_version()
    import tensorrt as trt

    caps = TrtCapabilities.from_module(trt)
    plan = with_sparse_weights(plan_build(precision, caps), bundle, caps, say)
    entry = select_sources(bundle, plan.source_precision, role)[role]
    device = this_device(trt)
    key = CacheKey.make(entry.sha256, version, device, plan.precision, str(batch_range), dla_core,
                        polygraphy_version=polygraphy_version())
    stem = "model" if role == "main" else role.replace(":", ".")  # as bundle.default_filename names models
    engine_path = cache_dir(bundle.root, env) / key.filename(stem)

    def usable() -> bool:
        if not engine_path.is_file():
            return False
        try:
            sidecar = read_sidecar(engine_path)
        except EruditeError as e:
            say(f"warning: {engine_path.name}: {e}; rebuilding it")
            return False
        problems = key.matches(sidecar) + compatibility_problems(
            sidecar, version, device, erudite_edge_version=__version__, polygraphy_version=key.polygraphy_version)
        if problems:
            say(f"warning: {engine_path} is stale ({', '.join(dict.fromkeys(problems))} differ); rebuilding it")
            return False
        return True

    if usable():
        return engine_path
    with engine_lock(engine_path, on_wait=say):
        if usable():  # another process built it while this one waited
            return engine_path
        started = time.monotonic()
        build_checked(bundle, role, entry, plan, batch_range, workspace_bytes(DEFAULT_WORKSPACE_GIB), engine_path,
                      version=version, device=device, accept_drop=accept_accuracy_drop, cache_key=key.to_dict(),
                      dla_core=dla_core, say=say)
        say(f"engine cached at {engine_path} ({time.monotonic() - started:.1f} s)")
    return engine_path
