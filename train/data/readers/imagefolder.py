"""A plain class-folder tree: root/train/<class>/<image>, root/test/<class>/<image>.

root/val/ stands in for test/ only when test/ is absent. Classes are the train/ sub-folders that
hold images, in sorted order; images are found recursively under each class folder.
Also used for the class-folder re-layout of Stanford Cars that most mirrors ship.
"""

from __future__ import annotations

import logging
from pathlib import Path

from train.data.samples import DatasetFormatError, DatasetSplits, Sample, is_image_file

FORMAT = "imagefolder"
LOOKS_FOR = "train/<class>/<image> with test/<class>/<image> (or val/<class>/<image>)"
log = logging.getLogger(__name__)


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted((p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _images(class_dir: Path) -> list[Path]:
    return sorted((p for p in class_dir.rglob("*") if is_image_file(p)), key=lambda p: str(p))


def detect(path: Path, forced: bool = False) -> Path | None:
    train = path / "train"
    if train.is_dir() and ((path / "test").is_dir() or (path / "val").is_dir()) and _class_dirs(train):
        return path
    return None


def read_class_folders(name: str, root: Path, fmt: str = FORMAT) -> DatasetSplits:
    """Read root/train and root/test (or root/val) class folders into DatasetSplits of format fmt."""
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DatasetFormatError(f"{train_dir}: missing folder; expected train/<class>/<image>")
    test_dir = root / "test"
    if not test_dir.is_dir():
        test_dir = root / "val"
        if not test_dir.is_dir():
            raise DatasetFormatError(f"{root / 'test'}: missing folder (no val/ either); expected test/<class>/<image>")
        log.info("%s: no test/ folder, evaluating on %s", name, test_dir)

    classes: list[str] = []
    train: list[Sample] = []
    for class_dir in _class_dirs(train_dir):
        files = _images(class_dir)
        if not files:
            log.warning("%s: class folder %s holds no images; left out", name, class_dir)
            continue
        label = len(classes)
        classes.append(class_dir.name)
        train.extend(Sample(str(f), label) for f in files)
    if not classes:
        raise DatasetFormatError(f"{train_dir}: no class folder holds an image; expected train/<class>/<image>")

    local = {c: i for i, c in enumerate(classes)}
    test: list[Sample] = []
    for class_dir in _class_dirs(test_dir):
        files = _images(class_dir)
        if not files:
            continue
        if class_dir.name not in local:
            raise DatasetFormatError(f"{class_dir}: class {class_dir.name!r} has no images under {train_dir}; expected the same classes in both")
        test.extend(Sample(str(f), local[class_dir.name]) for f in files)
    if not test:
        raise DatasetFormatError(f"{test_dir}: no images; expected {test_dir.name}/<class>/<image>")
    return DatasetSplits(name=name, format=fmt, root=root, classes=classes, train=train, test=test)


def read(name: str, root: Path) -> DatasetSplits:
    return read_class_folders(name, root, FORMAT)
