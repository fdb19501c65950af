"""ONNX Runtime's TensorRT execution provider, set up as erudite-edge's own TensorRT builds are: the
precision asked for, the same optimisation profile (batch 1:8:32 over the bundle's input size) and an
engine + timing cache outside the bundle, so the bundle stays what `export` wrote. ONNX Runtime falls
back to the CUDA provider for what TensorRT does not take; the provider actually used is what the
session reports (load_runner prints it).

Engine cache: one directory per model file, `$XDG_CACHE_HOME/erudite-edge/ort-tensorrt/<sha256 of the
ONNX file>`. ONNX Runtime names a cached engine by a hash of the model's file name, its input and
initializer names, its node output names and the ORT/CUDA/TensorRT versions (TRTGenerateId in the
provider's sources), never by the weights (microsoft/onnxruntime#6455, where the maintainers' answer is
a cache path per model): a re-calibrated `model.int8.onnx` or a retrained model of the same architecture
in one shared directory would load the old engine and return the old model's logits. The timing cache
(kernel timings per layer configuration, GPU and TensorRT version; weights play no part) is shared, in
the parent directory.

The runner chunks every batch to the profile's largest batch (`profile_max_batch`), so the provider is
never fed a batch above the profile it was given (which would rebuild the engine at run time).
Option names: onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from erudite_edge.backends.tensorrt.cache import user_cache_dir
from erudite_edge.core.preprocess import PreprocessSpec
from erudite_edge.errors import BundleError

DEFAULT_PROFILE = (1, 8, 32)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sample_shape(spec: PreprocessSpec) -> list[int]:
    h, w = spec.input_size
    return [3, h, w] if spec.layout == "NCHW" else [h, w, 3]


def shape_text(input_name: str, batch: int, sample: list[int]) -> str:
    return f"{input_name}:{'x'.join(str(d) for d in [batch, *sample])}"


def ort_cache_dir(env: dict[str, str] | None = None) -> Path:
    """The parent of every model's engine cache (and the shared timing cache)."""
    return user_cache_dir(env).parent / "ort-tensorrt"


def engine_cache_dir(model_sha256: str, env: dict[str, str] | None = None) -> Path:
    """The engine cache of one ONNX model file, named by its sha256 (bundle.json's model entry)."""
    sha = str(model_sha256).strip().lower()
    if not _SHA256.fullmatch(sha):
        raise BundleError(f"model sha256 {model_sha256!r} is not 64 hex digits: bundle.json is damaged; re-export the bundle")
    return ort_cache_dir(env) / sha


def tensorrt_ep_options(
    precision: str,
    spec: PreprocessSpec,
    input_name: str = "images",
    profile: tuple[int, int, int] = DEFAULT_PROFILE,
    env: dict[str, str] | None = None,
    *,
    model_sha256: str,
) -> dict[str, Any]:
    """The TensorrtExecutionProvider options for a bundle model at `precision` (fp32, fp16 or int8);
    `model_sha256`: the sha256 of the ONNX file the session loads (its engine cache directory)."""
    environ = dict(os.environ) if env is None else env
    engines = engine_cache_dir(model_sha256, environ)
    sample = sample_shape(spec)
    lo, opt, hi = profile
    return {
        "trt_fp16_enable": precision in ("fp16", "int8"),  # int8: layers outside the Q/DQ pairs in FP16
        "trt_int8_enable": precision == "int8",  # the Q/DQ model: explicit quantization, no calibration table
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(engines),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(engines.parent),
        "trt_profile_min_shapes": shape_text(input_name, lo, sample),
        "trt_profile_opt_shapes": shape_text(input_name, opt, sample),
        "trt_profile_max_shapes": shape_text(input_name, hi, sample),
    }


def profile_max_batch(options: Mapping[str, Any] | None, input_name: str) -> int | None:
    """The largest batch of `input_name` in the options' `trt_profile_max_shapes` ("name:32x3x224x224", several
    inputs separated by commas, as ONNX Runtime reads it); None where the options give no profile for it."""
    text = str((options or {}).get("trt_profile_max_shapes") or "")
    for part in text.split(","):
        name, sep, dims = part.strip().rpartition(":")
        if sep and name == input_name:
            first = dims.split("x", 1)[0]
            if first.isdigit() and int(first) > 0:
                return int(first)
    return None
