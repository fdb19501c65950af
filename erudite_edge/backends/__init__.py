"""Inference backends: one small Runner interface (base.py), one runner per library, and the registry
that picks and loads one for a bundle's model (registry.py). TensorRT's runner, engine builder, engine
cache, sidecar and device memory live together in tensorrt/. May import: erudite_edge.core and
erudite_edge.errors; only torch_runner may import train/ (lazily: it runs a training checkpoint)."""
