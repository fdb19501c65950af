"""From `NAME=PATH` / `NAME=FORMAT:PATH` on the command line to loaded data sets and their joint label space."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from erudite_edge.core.labels import LabelSpace
from erudite_edge.errors import UsageError
from train.data.readers import FORMATS, READERS
from train.data.samples import DatasetFormatError, DatasetSplits, DataSpec

log = logging.getLogger(__name__)
_SPEC_FORM = f"NAME=PATH or NAME=FORMAT:PATH (FORMAT one of {', '.join(FORMATS)})"


def check_dataset_name(name: str, spec: str) -> str:
    """A data set name namespaces its classes (`<name>/<class>`): non-empty, no '/', no surrounding blanks."""
    if not name or name != name.strip() or "/" in name:
        raise UsageError(f"data set {spec!r}: name {name!r} must be non-empty, hold no '/' and no surrounding spaces; expected {_SPEC_FORM}")
    return name


def detect_format(path: Path) -> tuple[str, Path] | None:
    """The first format whose layout PATH holds, with the data set root inside PATH it found."""
    for fmt, reader in READERS.items():
        root = reader.detect(path)
        if root is not None:
            return fmt, root
    return None


def parse_data_spec(spec: str) -> DataSpec:
    """Parse one data set argument and find its format (named, or detected from PATH's contents)."""
    if "=" not in spec:
        raise UsageError(f"data set {spec!r}: expected {_SPEC_FORM}")
    name, rest = spec.split("=", 1)
    check_dataset_name(name, spec)
    fmt: str | None = None
    head, sep, tail = rest.partition(":")
    if sep and head.lower() in FORMATS:
        fmt, rest = head.lower(), tail
    if not rest:
        raise UsageError(f"data set {spec!r}: no PATH given; expected {_SPEC_FORM}")
    path = Path(rest).expanduser()
    if not path.exists():
        hint = f" ({head!r} is not a format: use one of {', '.join(FORMATS)})" if sep and fmt is None and head.isidentifier() else ""
        raise UsageError(f"data set {name}: {path} does not exist{hint}")
    if not path.is_dir():
        raise UsageError(f"data set {name}: {path} is not a folder; expected the data set's root folder")

    if fmt is not None:
        root = READERS[fmt].detect(path, forced=True)
        if root is None:
            raise UsageError(f"data set {name}: {path} does not look like a {fmt} data set; looked for {READERS[fmt].LOOKS_FOR}")
        return DataSpec(name=name, format=fmt, root=Path(os.path.abspath(root)), forced=True)

    found = detect_format(path)
    if found is None:
        looked = "; ".join(f"{f}: {r.LOOKS_FOR}" for f, r in READERS.items())
        raise UsageError(f"data set {name}: no known data set layout in {path}; looked for {looked}")
    return DataSpec(name=name, format=found[0], root=Path(os.path.abspath(found[1])), forced=False)


def load_dataset(spec: DataSpec | str) -> DatasetSplits:
    """Read one data set's classes and train/test samples from its own annotation files."""
    if isinstance(spec, str):
        spec = parse_data_spec(spec)
    splits = READERS[spec.format].read(spec.name, spec.root)
    for split, samples in (("train", splits.train), ("test", splits.test)):
        if not samples:
            raise DatasetFormatError(f"data set {spec.name} ({spec.format} at {spec.root}): the {split} split is empty")
        bad = next((s for s in samples if not 0 <= s.label < len(splits.classes)), None)
        if bad is not None:
            raise DatasetFormatError(f"data set {spec.name}: {bad.path} has label {bad.label}; expected 0..{len(splits.classes) - 1}")
    log.info(
        "data set %s (%s at %s): %d classes, %d train, %d test images",
        spec.name, spec.format, spec.root, len(splits.classes), len(splits.train), len(splits.test),
    )
    return splits


def load_datasets(specs: Sequence[str | DataSpec]) -> list[DatasetSplits]:
    """Parse every spec first (names must be unique), then read each data set, in the order given."""
    parsed = [s if isinstance(s, DataSpec) else parse_data_spec(s) for s in specs]
    if not parsed:
        raise UsageError(f"no data set given; expected one or more {_SPEC_FORM}")
    seen: set[str] = set()
    for p in parsed:
        if p.name in seen:
            raise UsageError(f"data set name {p.name!r} is given twice; each data set needs its own name")
        seen.add(p.name)
    return [load_dataset(p) for p in parsed]


def build_label_space(splits: Sequence[DatasetSplits]) -> LabelSpace:
    """The joint label space: the data sets in the order given, each with its classes in label order."""
    return LabelSpace.build([s.name for s in splits], [s.classes for s in splits])


def check_matches_labels(splits: DatasetSplits, labels: LabelSpace) -> int:
    """The index of `splits` in a trained model's label table; a data set the model was not trained on,
    or whose classes differ (in count, names or order), is a one-line UsageError."""
    if splits.name not in labels.datasets:
        raise UsageError(
            f"data set {splits.name!r} is not in the model's label table ({', '.join(labels.datasets)}); "
            "name it as it was named in training"
        )
    index = labels.datasets.index(splits.name)
    trained = labels.classes[index]
    if tuple(splits.classes) != tuple(trained):
        if len(splits.classes) != len(trained):
            what = f"has {len(splits.classes)} classes, the model was trained on {len(trained)}"
        else:
            a, b = next((x, y) for x, y in zip(splits.classes, trained) if x != y)
            what = f"has class {a!r} where the model has {b!r}"
        raise UsageError(f"data set {splits.name!r} at {splits.root} {what}; point to the data set the model was trained on")
    return index
