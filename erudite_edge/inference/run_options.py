"""How a run goes through its source: RunOptions, shared by `erudite-edge run` and the API's Classifier.

Its own module (not pipeline.py) so that inference.resources, which checks these options against the memory
budget and the model, reads them without importing the pipeline that imports resources.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from erudite_edge.core.image_header import DEFAULT_MAX_PIXELS
from erudite_edge.errors import UsageError


@dataclass(frozen=True)
class RunOptions:
    """How a run goes through its source (`run`'s and the API's): `batch` images per model call, `workers`
    decode/preprocess threads (None: up to 4), `strict` (stop at the first image that does not decode),
    `limit` (stop after this many classified frames; None: the whole source). Resources
    (erudite_edge.inference.resources): `max_memory` the bytes the pipeline's input buffers may take (a larger
    `batch` is refused; None: a quarter of the memory available when the classifier loads), `max_pixels` the
    largest image file decoded (a larger one is skipped from its header, undecoded, like a bad file; None: no
    limit)."""

    batch: int = 8
    workers: int | None = None
    strict: bool = False
    limit: int | None = None
    max_memory: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise UsageError(f"batch {self.batch}: at least 1")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"workers {self.workers}: at least 1")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"limit {self.limit}: at least 1")
        if self.max_memory is not None and self.max_memory < 1:
            raise UsageError(f"max-memory {self.max_memory}: at least 1 byte")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise UsageError(f"max-pixels {self.max_pixels}: at least 1")

    def replace(self, **changes: Any) -> "RunOptions":
        return replace(self, **changes)


__all__ = ["RunOptions"]
