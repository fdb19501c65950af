"""erudite-edge: one erudite fine-grained classifier, from GPU training to an NVIDIA Jetson.

This package is what runs on the device. It imports without torch: numpy, OpenCV, and
onnxruntime or TensorRT where present.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
