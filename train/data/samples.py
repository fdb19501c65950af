"""The records every reader produces: one labelled image, one data set's splits, one parsed spec.

Kept free of torch so the readers can be used (and tested) without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erudite_edge.errors import UsageError
from erudite_edge.sources.base import IMAGE_EXTENSIONS  # one list for training and `run` (compared case-insensitively)


class DatasetFormatError(UsageError):
    """An annotation file that is missing or malformed: the message names the file and what was expected."""


@dataclass(frozen=True)
class Sample:
    """One image and its label, local to its data set (0-based)."""

    path: str
    label: int


@dataclass
class DatasetSplits:
    """One data set as read from disk: its classes in label order, and its train and test samples.

    crop_bottom: rows to remove from the bottom of every image of this data set when it is loaded
    (FGVC-Aircraft's copyright banner). It belongs to the data set, not to the model, so a
    deployed model never crops camera frames.
    """

    name: str
    format: str
    root: Path
    classes: list[str]
    train: list[Sample]
    test: list[Sample]
    crop_bottom: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class DataSpec:
    """A parsed `NAME=PATH` / `NAME=FORMAT:PATH`: the data set's name, its format and its resolved root."""

    name: str
    format: str
    root: Path
    forced: bool = False  # the format was named on the command line rather than detected


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
