"""A bound on the disk a result file takes over weeks: `run -o FILE --rotate-mb N --keep K`.

When the next record would take FILE past N MiB, FILE becomes FILE.1 (FILE.1 becomes FILE.2 ... FILE.K-1
becomes FILE.K; the old FILE.K is dropped) and a new FILE takes the record: at most (K + 1) x N MiB in all.
result_log.AppendLog does it between two records, holding the file's lock; this module holds the options
and the renames.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from erudite_edge.errors import UsageError

MIB = 1 << 20
DEFAULT_KEEP = 5


@dataclass(frozen=True)
class Rotation:
    """Rotate a result file past `max_mb` MiB, keeping `keep` rotated files (FILE.1 newest ... FILE.K)."""

    max_mb: float
    keep: int = DEFAULT_KEEP

    def __post_init__(self) -> None:
        if not (isinstance(self.max_mb, (int, float)) and math.isfinite(self.max_mb) and self.max_mb > 0):
            raise UsageError(f"--rotate-mb {self.max_mb}: give a size in MiB above 0 (e.g. 100)")
        if not (isinstance(self.keep, int) and self.keep >= 1):
            raise UsageError(f"--keep {self.keep}: keep 1 or more rotated files")

    @property
    def max_bytes(self) -> int:
        return max(1, int(self.max_mb * MIB))


def rotated(path: Path, i: int) -> Path:
    """FILE.i, the i-th newest rotated file of FILE."""
    return path.with_name(f"{path.name}.{i}")


def shift_out(path: Path, keep: int) -> None:
    """FILE.K-1 -> FILE.K ... FILE.1 -> FILE.2, then FILE -> FILE.1 (renames: each file is whole at every
    moment; FILE.K before is replaced, so the oldest is dropped). A missing FILE.i is passed over."""
    for i in range(keep - 1, 0, -1):
        try:
            os.replace(rotated(path, i), rotated(path, i + 1))
        except FileNotFoundError:
            pass
    os.replace(path, rotated(path, 1))
