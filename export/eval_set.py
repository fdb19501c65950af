"""The labelled test images a deployed bundle is scored on (`--data NAME=PATH`): EvalSet, read_eval_set (one
data set's test split, its classes mapped by name onto the bundle's joint label table) and load_eval_image (an
image decoded and preprocessed exactly as deployed: erudite_edge.core.preprocess with the bundle's spec).

Reading the test split: where torch is importable the training readers (train.data: CUB-200, Cars,
Aircraft, Flowers-102 and class folders, each from its own annotation files) are used, imported inside
read_eval_set; otherwise, keeping its callers free of torch, only the class-folder layout
PATH/test/<class>/<image> (or val/). Both the bench (benchmarks.accuracy, benchmarks.bench) and the bundle
report (train.analysis.bundle_report) read their images here; nothing here imports torch at module level.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from erudite_edge.core.labels import LabelSpace
from erudite_edge.core.preprocess import PreprocessSpec, load_image, preprocess
from erudite_edge.errors import BadImageError, UsageError
from erudite_edge.sources.base import IMAGE_EXTENSIONS as FOLDER_IMAGE_EXTENSIONS


@dataclass
class EvalSet:
    """The test images of one data set, labelled in the bundle's joint label space."""

    dataset: str
    dataset_index: int
    paths: list[str]
    joint: np.ndarray  # joint class index of each path
    crop_bottom: int = 0  # rows removed from the bottom of each image when loaded (FGVC-Aircraft's banner)
    reader: str = ""

    def __len__(self) -> int:
        return len(self.paths)


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _split_spec(spec: str) -> tuple[str, str | None, str]:
    if "=" not in spec:
        raise UsageError(f"--data {spec!r}: expected NAME=PATH or NAME=FORMAT:PATH")
    name, rest = spec.split("=", 1)
    head, sep, tail = rest.partition(":")
    if sep and head.isidentifier() and len(head) > 1:  # a format prefix (a Windows drive letter is one letter)
        return name, head.lower(), tail
    return name, None, rest


def _class_folder_test_split(name: str, root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """PATH/test/<class>/<image> (or val/): class names (sorted) and (path, local label) pairs."""
    split = root / "test"
    if not split.is_dir():
        split = root / "val"
    if not split.is_dir():
        raise UsageError(f"--data {name}: {root} has no test/ (or val/) folder; expected {root}/test/<class>/<image>")
    classes = sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples: list[tuple[str, int]] = []
    for i, c in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(split / c):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if not fn.startswith(".") and Path(fn).suffix.lower() in FOLDER_IMAGE_EXTENSIONS:
                    samples.append((os.path.join(dirpath, fn), i))
    if not samples:
        raise UsageError(f"--data {name}: no images under {split}/<class>/")
    return classes, samples


def read_eval_set(spec: str, labels: LabelSpace, limit: int | None = None, seed: int = 0) -> EvalSet:
    """Read one `NAME=PATH` test split and map its classes, by name, onto the bundle's label table.
    `limit`: at most this many images, a seeded random subset (kept in file order)."""
    name, fmt, path = _split_spec(spec)
    if name not in labels.datasets:
        raise UsageError(f"--data {name}: the bundle has no data set {name!r} (it has {', '.join(labels.datasets)}); "
                         "name each --data after the bundle's data sets")
    d = labels.datasets.index(name)
    crop_bottom = 0
    root = Path(path).expanduser()
    test_only = fmt in (None, "imagefolder") and ((root / "test").is_dir() or (root / "val").is_dir())
    splits = None
    if torch_available():
        from train.data import load_dataset  # the training readers (this imports torch)

        try:
            splits = load_dataset(spec)
        except UsageError:
            if not test_only:  # a test split alone (no train/) is read as class folders below
                raise
    if splits is not None:
        classes, samples = list(splits.classes), [(s.path, s.label) for s in splits.test]
        crop_bottom, reader = splits.crop_bottom, f"train.data ({splits.format})"
    else:
        if fmt not in (None, "imagefolder"):
            raise UsageError(f"--data {spec}: reading the {fmt} format needs the training extras (torch); without "
                             f"them lay the test images out as PATH/test/<class>/<image>")
        if not root.is_dir():
            raise UsageError(f"--data {name}: {root} is not a folder")
        classes, samples = _class_folder_test_split(name, root)
        reader = "class folders"
    own = {c: i for i, c in enumerate(labels.classes[d])}
    missing = [c for c in classes if c not in own]
    if missing:
        raise UsageError(f"--data {name}: {len(missing)} class(es) of the test set are not in the bundle's label table "
                         f"for {name}, e.g. {missing[0]!r}; is this the data set the model was trained on?")
    if limit is not None and len(samples) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=limit, replace=False))
        samples = [samples[i] for i in keep]
    offset = labels.offsets[d]
    joint = np.asarray([offset + own[classes[label]] for _, label in samples], dtype=np.int64)
    return EvalSet(name, d, [p for p, _ in samples], joint, crop_bottom, reader)


def load_eval_image(path: str, spec: PreprocessSpec, crop_bottom: int = 0) -> np.ndarray:
    rgb = load_image(path)
    if crop_bottom > 0:
        if rgb.shape[0] <= crop_bottom:
            raise BadImageError(f"{path}: {rgb.shape[0]} px high, too small to remove the {crop_bottom}-px bottom banner")
        rgb = rgb[: rgb.shape[0] - crop_bottom]
    return preprocess(rgb, spec)
