"""ONNX Runtime's TensorRT execution provider, set up as erudite-edge's own TensorRT builds are: the
precision asked for, the same optimisation profile (batch 1:8:32 over the bundle's input size) and an
engine + timing cache outside the bundle (`$XDG_CACHE_HOME/erudite-edge/ort-tensorrt`), so the bundle
stays what `export` wrote. ONNX Runtime falls back to the CUDA provider for what TensorRT does not
take; the provider actually used is what the session reports (load_runner prints it).
Option names: onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from erudite_edge.backends.tensorrt.cache import user_cache_dir
from erudite_edge.core.preprocess import PreprocessSpec

DEFAULT_PROFILE = (1, 8, 32)


def sample_shape(spec: PreprocessSpec) -> list[int]:
    h, w = spec.input_size
    return [3, h, w] if spec.layout == "NCHW" else [h, w, 3]


def shape_text(input_name: str, batch: int, sample: list[int]) -> str:
    return f"{input_name}:{'x'.join(str(d) for d in [batch, *sample])}"


def ort_cache_dir(env: dict[str, str] | None = None) -> Path:
    return user_cache_dir(env).parent / "ort-tensorrt"


def tensorrt_ep_options(
    precision: str,
    spec: PreprocessSpec,
    input_name: str = "images",
    profile: tuple[int, int, int] = DEFAULT_PROFILE,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The TensorrtExecutionProvider options for a bundle model at `precision` (fp32, fp16 or int8)."""
    cache = ort_cache_dir(dict(os.environ) if env is None else env)
    sample = sample_shape(spec)
    lo, opt, hi = profile
    return {
        "trt_fp16_enable": precision in ("fp16", "int8"),  # int8: layers outside the Q/DQ pairs in FP16
        "trt_int8_enable": precision == "int8",  # the Q/DQ model: explicit quantization, no calibration table
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        "trt_profile_min_shapes": shape_text(input_name, lo, sample),
        "trt_profile_opt_shapes": shape_text(input_name, opt, sample),
        "trt_profile_max_shapes": shape_text(input_name, hi, sample),
    }
