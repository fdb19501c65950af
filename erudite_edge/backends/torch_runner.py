"""PyTorch backend, for debugging: runs a training checkpoint directly (needs torch and the `train`
package: `pip install 'erudite-edge[train]'`). Same inputs and outputs as every other Runner."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from erudite_edge.backends.base import Runner
from erudite_edge.errors import BackendUnavailable, BundleError


def available() -> bool:
    try:
        import torch  # noqa: F401

        import train.checkpoint  # noqa: F401
    except ImportError:
        return False
    return True


class TorchRunner(Runner):
    """Role "main" runs the erudite inference graph; "coarse" and "fine:<dataset>" run the zoo's models."""

    backend = "torch"

    def __init__(self, checkpoint: str | os.PathLike[str], role: str = "main", device: str = "auto", precision: str = "fp32"):
        super().__init__(precision)
        if not available():
            raise BackendUnavailable("the torch backend needs torch and the trainer: `pip install 'erudite-edge[train]'`")
        import torch

        from train.checkpoint import load_checkpoint

        self.checkpoint = load_checkpoint(checkpoint)
        model: Any = self.checkpoint.build_model()  # a train.model network (torch is not typed here)
        if role == "main":
            if self.checkpoint.is_zoo:
                raise BundleError(f"{checkpoint} is a zoo run; use --zoo with a zoo bundle, or role coarse / fine:<dataset>")
            module = model.inference_graph()
        elif not self.checkpoint.is_zoo:
            raise BundleError(f"{checkpoint} is an erudite run; it has only the role 'main', not {role!r}")
        elif role == "coarse":
            module = model.coarse
        elif role.startswith("fine:") and role[5:] in self.checkpoint.labels.datasets:
            module = model.fine[self.checkpoint.labels.datasets.index(role[5:])]
        else:
            raise BundleError(f"unknown role {role!r} for this zoo run")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" and self.device.type == "cuda" else torch.float32
        self.module = module.to(self.device, self.dtype).eval()
        self._torch = torch

    @property
    def labels(self) -> Any:
        return self.checkpoint.labels

    @property
    def preprocess(self) -> Any:
        return self.checkpoint.preprocess

    @property
    def max_batch(self) -> int | None:
        return None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        if batch.dtype == np.uint8:  # NHWC bytes (a uint8 bundle's input): the graph's normalisation, on the host
            from erudite_edge.core.preprocess import normalize

            spec = self.checkpoint.preprocess.host_float()
            batch = np.stack([normalize(im, spec) for im in batch]) if len(batch) else batch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, self.dtype)
            return self.module(x).float().cpu().numpy()

    @property
    def has_attention(self) -> bool:
        return getattr(self.module, "attention", None) is not None and hasattr(self.module, "with_attention")

    def infer_attention(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, the attention's group masks (B, groups, h, w)) for a variant with the attention layer."""
        if not self.has_attention:
            raise BundleError("this model has no spatial attention layer")
        torch = self._torch
        self.module.with_attention = True
        try:
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, self.dtype)
                logits, masks = self.module(x)
        finally:
            self.module.with_attention = False
        return logits.float().cpu().numpy(), masks.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": str(self.device), "checkpoint": str(self.checkpoint.path)}


def bundle_from_checkpoint(checkpoint: str | os.PathLike[str]) -> Any:
    """An in-memory bundle (never saved) holding a checkpoint's labels and preprocessing, so that the
    same pipeline, outputs and zoo routing run on the torch backend."""
    if not available():
        raise BackendUnavailable("the torch backend needs torch and the trainer: `pip install 'erudite-edge[train]'`")
    from erudite_edge.core.bundle import Bundle
    from train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    bundle = Bundle.create(
        ckpt.path.parent, labels=ckpt.labels, preprocess=ckpt.preprocess, kind="zoo" if ckpt.is_zoo else "erudite",
        variant=ckpt.variant, backbone=ckpt.model_config.backbone, opset=0,
    )
    bundle.meta["checkpoint"] = str(ckpt.path)
    return bundle
