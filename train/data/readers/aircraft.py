"""FGVC-Aircraft at the variant level (100 classes).

data/variants.txt lists the variants (class order); data/images_variant_{trainval,test}.txt hold lines
'<image id> <variant name>' (the name may hold spaces); images are data/images/<image id>.jpg.
Training uses trainval (or train + val where trainval is absent), testing uses test.
Every image carries a 20-pixel copyright banner at the bottom, which the data set's authors say to
remove: it is recorded as crop_bottom and removed whenever this data set's images are loaded.
"""

from __future__ import annotations

from pathlib import Path

from train.data.annotations import read_lines, require_dir
from train.data.samples import DatasetFormatError, DatasetSplits, Sample

FORMAT = "aircraft"
LOOKS_FOR = "data/images/ and data/variants.txt (PATH may also be the data/ folder itself)"
BANNER_ROWS = 20
_LIST_WHAT = "lines '<image id> <variant name>'"


def detect(path: Path, forced: bool = False) -> Path | None:
    for data in (path / "data", path):
        if (data / "images").is_dir() and (data / "variants.txt").is_file():
            return path
    return None


def _data_dir(root: Path) -> Path:
    return root / "data" if (root / "data").is_dir() else root


def _read_list(path: Path, local: dict[str, int], images: Path) -> list[Sample]:
    samples = []
    for lineno, line in read_lines(path, _LIST_WHAT):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DatasetFormatError(f"{path}:{lineno}: expected {_LIST_WHAT}, got {line[:80]!r}")
        image_id, variant = parts[0], parts[1].strip()
        if variant not in local:
            raise DatasetFormatError(f"{path}:{lineno}: variant {variant!r} is not listed in variants.txt")
        samples.append(Sample(str(images / f"{image_id}.jpg"), local[variant]))
    return samples


def read(name: str, root: Path) -> DatasetSplits:
    data = _data_dir(root)
    images = require_dir(data / "images", "the FGVC-Aircraft images/<image id>.jpg folder")
    classes = [line for _, line in read_lines(data / "variants.txt", "one variant name a line (100 variants)")]
    if len(set(classes)) != len(classes):
        raise DatasetFormatError(f"{data / 'variants.txt'}: a variant is listed twice; expected each once")
    local = {c: i for i, c in enumerate(classes)}

    trainval = data / "images_variant_trainval.txt"
    if trainval.is_file() or not (data / "images_variant_train.txt").is_file():
        train = _read_list(trainval, local, images)
    else:
        train = _read_list(data / "images_variant_train.txt", local, images)
        train += _read_list(data / "images_variant_val.txt", local, images)
    test = _read_list(data / "images_variant_test.txt", local, images)
    return DatasetSplits(name=name, format=FORMAT, root=root, classes=classes, train=train, test=test, crop_bottom=BANNER_ROWS)
