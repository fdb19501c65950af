"""TensorRT on the device: the runner (runner.py), engine building from a bundle's ONNX models (build.py,
used by `export engine` and by engines on first use), the engine cache (cache.py), each engine's sidecar
(sidecar.py) and device memory through Polygraphy (device_memory.py). Imports no torch."""
