"""From a trained run to a deployable bundle: ONNX export with parity checks, FP16 and INT8 (Q/DQ)
models, the Single zoo, and TensorRT engines (erudite_edge/backends/tensorrt/build.py, built on the device).

Nothing is imported here: erudite_edge/backends/tensorrt/build.py runs on a Jetson without torch, while the ONNX modules
need torch; import the module you use (export.onnx_export, export.fp16, export.int8, export.zoo).
"""
