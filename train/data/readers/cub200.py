"""CUB-200-2011: images.txt, image_class_labels.txt, train_test_split.txt, classes.txt and images/.

The root is the folder holding these files or its parent (the archive extracts to CUB_200_2011/).
Class names drop the numeric prefix ("001.Black_footed_Albatross" -> "Black_footed_Albatross").
"""

from __future__ import annotations

import re
from pathlib import Path

from train.data.annotations import read_id_table, require_dir
from train.data.samples import DatasetFormatError, DatasetSplits, Sample

FORMAT = "cub200"
LOOKS_FOR = "images.txt and images/ (with classes.txt, image_class_labels.txt, train_test_split.txt) in PATH or PATH/CUB_200_2011"
_PREFIX = re.compile(r"^\d+\.")


def detect(path: Path, forced: bool = False) -> Path | None:
    for root in (path, path / "CUB_200_2011"):
        if (root / "images.txt").is_file() and (root / "images").is_dir():
            return root
    return None


def read(name: str, root: Path) -> DatasetSplits:
    images_dir = require_dir(root / "images", "the CUB images/<class folder>/<image>.jpg tree")
    class_table = read_id_table(root / "classes.txt", "lines '<class id> <class folder name>'", int_value=False)
    images = read_id_table(root / "images.txt", "lines '<image id> <relative image path>'", int_value=False)
    labels = read_id_table(root / "image_class_labels.txt", "lines '<image id> <class id>'", int_value=True)
    is_train = read_id_table(root / "train_test_split.txt", "lines '<image id> <1 train | 0 test>'", int_value=True)

    class_ids = sorted(class_table)
    local = {cid: i for i, cid in enumerate(class_ids)}
    classes = [_PREFIX.sub("", class_table[cid]) for cid in class_ids]

    train: list[Sample] = []
    test: list[Sample] = []
    for image_id in sorted(images):
        if image_id not in labels:
            raise DatasetFormatError(f"{root / 'image_class_labels.txt'}: no line for image id {image_id} of images.txt")
        if image_id not in is_train:
            raise DatasetFormatError(f"{root / 'train_test_split.txt'}: no line for image id {image_id} of images.txt")
        cid, flag = labels[image_id], is_train[image_id]
        if cid not in local:
            raise DatasetFormatError(
                f"{root / 'image_class_labels.txt'}: image {image_id} has class id {cid}, which classes.txt does not list"
            )
        if flag not in (0, 1):
            raise DatasetFormatError(f"{root / 'train_test_split.txt'}: image {image_id} has flag {flag}; expected 1 (train) or 0 (test)")
        sample = Sample(str(images_dir / images[image_id]), local[cid])
        (train if flag == 1 else test).append(sample)
    return DatasetSplits(name=name, format=FORMAT, root=root, classes=classes, train=train, test=test)
