"""The Single zoo (checkpoint variant "single") as one bundle of kind "zoo": coarse.onnx (role "coarse",
logits over data sets) and fine.<dataset>.onnx (role "fine:<dataset>", logits over that data set's
own classes), each exported and parity-checked like an erudite model."""

from __future__ import annotations

import os
from typing import Any

from erudite_edge.core.bundle import Bundle
from export.onnx_export import export_checkpoint


def export_zoo(checkpoint_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], **options: Any) -> Bundle:
    """`export_checkpoint(..., zoo=True)`: same options (opset, images, data, parity_count, overwrite, log)."""
    return export_checkpoint(checkpoint_path, out_dir, zoo=True, **options)
