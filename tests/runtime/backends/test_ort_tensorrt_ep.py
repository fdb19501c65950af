"""The options erudite-edge gives ONNX Runtime's TensorRT execution provider (which cannot run here: no
GPU). Pure functions: precision flags, the profile over the bundle's input, a cache outside the bundle."""

from __future__ import annotations

from pathlib import Path

from erudite_edge.backends.onnxruntime_runner import provider_options
from erudite_edge.backends.ort_tensorrt_ep import tensorrt_ep_options
from erudite_edge.core.preprocess import PreprocessSpec


def test_options_follow_precision_profile_and_cache(tmp_path):
    spec = PreprocessSpec.square(224)
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    fp16 = tensorrt_ep_options("fp16", spec, "images", env=env)
    assert fp16["trt_fp16_enable"] and not fp16["trt_int8_enable"]
    assert fp16["trt_profile_min_shapes"] == "images:1x3x224x224"
    assert fp16["trt_profile_opt_shapes"] == "images:8x3x224x224"
    assert fp16["trt_profile_max_shapes"] == "images:32x3x224x224"
    assert fp16["trt_engine_cache_path"] == str(tmp_path / "xdg" / "erudite-edge" / "ort-tensorrt")
    int8 = tensorrt_ep_options("int8", spec, env=env)
    assert int8["trt_int8_enable"] and int8["trt_fp16_enable"]
    fp32 = tensorrt_ep_options("fp32", spec, env=env)
    assert not fp32["trt_fp16_enable"] and not fp32["trt_int8_enable"]


def test_provider_options_put_them_on_the_tensorrt_provider_only(tmp_path):
    opts = tensorrt_ep_options("fp16", PreprocessSpec.square(32), env={"XDG_CACHE_HOME": str(tmp_path)})
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    out = provider_options(providers, tmp_path / "bundle" / "model.onnx", opts)
    assert out[0] == ("TensorrtExecutionProvider", opts) and out[1:] == providers[1:]
    assert Path(opts["trt_engine_cache_path"]).is_dir() and not (tmp_path / "bundle").exists()  # nothing in the bundle
    assert provider_options(["CPUExecutionProvider"], tmp_path / "model.onnx", opts) == ["CPUExecutionProvider"]
