"""The one small interface every inference backend implements (Polygraphy's loader/runner split:
a loader makes the session or engine once; a runner feeds it batches)."""

from __future__ import annotations

import abc
from typing import Any, Callable

import numpy as np


class Runner(abc.ABC):
    """Runs one model: an input batch as the bundle's preprocessing says (float32 NCHW, or uint8 NHWC
    bytes for a model that normalises in its graph) -> float32 logits (B, K).

    `last_compute_ms` is the device compute time of the last call where the backend can separate it
    from host-side copies (TensorRT with CUDA events); otherwise None. `last_stage_ms` is the last call's
    {"h2d", "compute", "d2h"} device times where the backend measures them (TensorRT), else None.
    """

    backend: str = "?"

    def __init__(self, precision: str = "fp32"):
        self.precision = precision
        self.last_compute_ms: float | None = None
        self.last_stage_ms: dict[str, float] | None = None

    @property
    @abc.abstractmethod
    def max_batch(self) -> int | None:
        """The largest batch the model accepts (None: unbounded)."""

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; returns logits as a float32 array of shape (batch, num_outputs)."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision}

    def host_allocator(self) -> Callable[[int], np.ndarray] | None:
        """Where a caller should put the batches it feeds this runner: a function that returns a host buffer of
        n bytes (uint8) from which the runner copies to its device without staging (page-locked memory of a
        CUDA backend, valid until the runner closes); None where plain numpy memory is as good (a CPU backend)."""
        return None

    def close(self) -> None:
        """Release sessions, engines and device buffers."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def infer_chunked(self, batch: np.ndarray) -> np.ndarray:
        """Like infer, but splits a batch larger than max_batch into pieces."""
        mb = self.max_batch
        if mb is None or len(batch) <= mb:
            return self.infer(batch)
        parts: list[np.ndarray] = []
        compute: float | None = 0.0
        stages: dict[str, float] | None = {}
        for i in range(0, len(batch), mb):
            parts.append(self.infer(batch[i : i + mb]))
            compute = compute + self.last_compute_ms if (self.last_compute_ms is not None and compute is not None) else None
            if stages is not None and self.last_stage_ms is not None:
                for k, v in self.last_stage_ms.items():
                    stages[k] = stages.get(k, 0.0) + v
            else:
                stages = None
        self.last_compute_ms = compute  # the device time of every chunk, not just the last
        self.last_stage_ms = stages
        return np.concatenate(parts, axis=0)
