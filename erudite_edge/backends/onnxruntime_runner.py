"""ONNX Runtime backend: TensorRT or CUDA execution provider where this onnxruntime build has them,
else the CPU.

Thread spinning is off by default. ONNX Runtime's intra-op workers spin on a core after each call,
waiting for the next one; in a process that runs anything else beside the session (the zoo's coarse and
fine sessions taking turns, the bench's interleaved contenders, `run`'s decode threads) an idle
session's spinning workers take the cores the busy one needs. Measured on 2 cores (ResNet-50, 224 px,
batch 1, N = 2): the zoo's coarse + fine call took 161 ms with spinning and 92 ms without, a lone erudite
session 41 vs 44 ms; `run`'s folder pipeline on the demo model reached 0.48 of pure inference with
spinning and 0.83 without (benchmarks/results/ort_spinning.md). `spinning=True` restores ONNX
Runtime's default for a session that truly runs alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from erudite_edge.backends.base import Runner
from erudite_edge.backends.ort_tensorrt_ep import profile_max_batch
from erudite_edge.core.bundle import ATTENTION_OUTPUT
from erudite_edge.core.fileio import sha256_file
from erudite_edge.errors import BackendUnavailable, BundleError

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def import_onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailable(
            "onnxruntime is not installed: `pip install onnxruntime` (x86) or the onnxruntime-gpu wheel "
            "for your JetPack (Jetson)"
        ) from e
    return ort


def available() -> bool:
    try:
        import_onnxruntime()
    except BackendUnavailable:
        return False
    return True


def pick_providers(available_providers: Sequence[str], want: Sequence[str] | None = None) -> list[str]:
    """Providers in preference order, restricted to those this onnxruntime build has."""
    order = list(want) if want else list(PREFERRED_PROVIDERS)
    picked = [p for p in order if p in available_providers]
    if "CPUExecutionProvider" not in picked and "CPUExecutionProvider" in available_providers:
        picked.append("CPUExecutionProvider")
    return picked


def provider_options(providers: Sequence[str], model_path: Path, trt_options: dict[str, Any] | None = None) -> list[Any]:
    """ONNX Runtime's TensorRT provider builds engines at session start: cache them, so only the first run
    on a device pays for the build. `trt_options` (backends/ort_tensorrt_ep.py: precision, profile, a cache
    per model outside the bundle) are used as given; without them the engines go beside the model, in
    `.ort_trt_cache/<sha256 of the model file>` (ONNX Runtime's engine names ignore the weights: see
    ort_tensorrt_ep), the timing cache in `.ort_trt_cache`."""
    out: list[Any] = []
    for p in providers:
        if p == "TensorrtExecutionProvider" and trt_options is not None:
            if trt_options.get("trt_engine_cache_path"):
                Path(trt_options["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
            out.append((p, dict(trt_options)))
        elif p == "TensorrtExecutionProvider":
            timing = model_path.parent / ".ort_trt_cache"
            cache = timing / sha256_file(model_path)
            cache.mkdir(parents=True, exist_ok=True)
            out.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(timing)}))
        else:
            out.append(p)
    return out


# ONNX Runtime's type names of the inputs a bundle model has: float32 (normalised on the host), float16
# (a strongly typed FP16 model), uint8 (NHWC bytes normalised in the graph, bundle preprocess dtype "uint8").
_INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


_TYPE_NAMES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8"}


def input_mismatch(spec: Any, graph_input: Any) -> str | None:
    """How a graph's input (ONNX Runtime's NodeArg: name, type, shape) disagrees with what the bundle's
    preprocessing (core.preprocess.PreprocessSpec) feeds it: element type, rank, or a fixed dimension other
    than the batch; None when they agree (a symbolic dimension agrees with any size)."""
    dtype = _TYPE_NAMES.get(graph_input.type, graph_input.type)
    takes = ("uint8",) if spec.dtype == "uint8" else ("float32", "float16")  # an FP16 model's input is cast to
    shape = list(graph_input.shape or [])
    want = list(spec.sample_shape)
    fixed_differ = len(shape) != 1 + len(want) or any(
        isinstance(g, int) and g > 0 and g != w for g, w in zip(shape[1:], want))
    if dtype in takes and not fixed_differ:
        return None
    dims = "x".join(str(d) if isinstance(d, int) and d > 0 else "N" if i == 0 else "?" for i, d in enumerate(shape))
    return (f"bundle.json's preprocess feeds {spec.dtype} {spec.layout} Nx{'x'.join(map(str, want))} but the graph's "
            f"input {graph_input.name!r} takes {dtype} {dims}")


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        precision: str = "fp32",
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        spinning: bool = False,
        trt_options: dict[str, Any] | None = None,
    ):
        super().__init__(precision)
        ort = import_onnxruntime()
        path = Path(model_path)
        if not path.is_file():
            raise BundleError(f"{path}: ONNX model not found")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.spinning = bool(spinning)
        for pool in ("intra_op", "inter_op"):
            opts.add_session_config_entry(f"session.{pool}.allow_spinning", "1" if self.spinning else "0")
        self.providers = pick_providers(ort.get_available_providers(), providers)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=provider_options(self.providers, path, trt_options))
        except Exception as e:  # onnxruntime raises its own exception types
            raise BundleError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from e
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        names = [o.name for o in self.session.get_outputs()]
        self.output_name = names[0]
        # `export onnx --with-attention`: the masks are a second output, read only by infer_attention
        self.has_attention = ATTENTION_OUTPUT in names[1:]
        self.input_dtype = _INPUT_TYPES.get(inp.type, np.float32)
        b = inp.shape[0]
        static = b if isinstance(b, int) and b > 0 else None
        # A session set up for the TensorRT EP holds batches to the profile the EP was given (its largest
        # batch), on whatever provider it ended on: a larger batch would rebuild the engine at run time
        # (minutes on a Jetson) or fail. infer_chunked splits to this.
        profile = profile_max_batch(trt_options, self.input_name)
        self._max_batch = min(n for n in (static, profile) if n) if (static or profile) else None

    @property
    def max_batch(self) -> int | None:
        """The input's static batch, or the TensorRT EP profile's largest batch (the smaller of the two); None:
        a dynamic batch axis and no profile."""
        return self._max_batch

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.input_dtype is np.uint8 and batch.dtype != np.uint8:
            raise ValueError(f"this model takes uint8 images (NHWC bytes), not {batch.dtype}: the bundle's "
                             "preprocess dtype says what to feed")
        x = np.ascontiguousarray(batch, dtype=self.input_dtype)
        (out,) = self.session.run([self.output_name], {self.input_name: x})
        return np.asarray(out, dtype=np.float32)

    def infer_attention(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, attention masks (B, groups, h, w)) of a model exported `--with-attention`."""
        if not self.has_attention:
            raise BundleError(f"this ONNX model has no {ATTENTION_OUTPUT!r} output; export it with `export onnx --with-attention`")
        x = np.ascontiguousarray(batch, dtype=self.input_dtype)
        logits, masks = self.session.run([self.output_name, ATTENTION_OUTPUT], {self.input_name: x})
        return np.asarray(logits, dtype=np.float32), np.asarray(masks, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["providers"] = self.session.get_providers()
        d["spinning"] = self.spinning
        return d

    def close(self) -> None:
        self.session = None
