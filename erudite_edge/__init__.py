"""erudite-edge: one erudite fine-grained classifier, from GPU training to an NVIDIA Jetson.

This package is what runs on the device. It imports without torch: numpy, OpenCV, and
onnxruntime or TensorRT where present.

The Python API (erudite_edge.api), imported on first use so that `import erudite_edge` stays light:

    from erudite_edge import Classifier
    with Classifier("BUNDLE") as clf:
        predictions = clf.predict(["a.jpg", "b.jpg"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from erudite_edge.api import Box, Classifier, ErrorInfo, Prediction, Timings, TopK
    from erudite_edge.errors import (
        BackendUnavailable,
        BadImageError,
        BundleError,
        EruditeError,
        SourceError,
        UnreadableImageError,
        UsageError,
    )

_API = {"Box", "Classifier", "ErrorInfo", "Prediction", "Timings", "TopK"}
_ERRORS = {"BackendUnavailable", "BadImageError", "BundleError", "EruditeError", "SourceError", "UnreadableImageError",
           "UsageError"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from erudite_edge import api

        return getattr(api, name)
    if name in _ERRORS:
        from erudite_edge import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'erudite_edge' has no attribute {name!r}")


__all__ = ["__version__", *sorted(_API), *sorted(_ERRORS)]
