"""Stanford Cars, in either layout it is found in.

Devkit layout (the original release): devkit/cars_meta.mat (class_names), devkit/cars_train_annos.mat
and cars_test_annos_withlabels.mat (in the root or devkit/), each with a struct array `annotations`
(bbox_x1, bbox_y1, bbox_x2, bbox_y2, class (1-based), fname), and the images in cars_train/, cars_test/.

Class-folder layout (most mirrors): car_data/train/<class>/<image>, car_data/test/<class>/<image>, or
train/ and test/ directly in the root (recognised only when the format is named, since it is then
indistinguishable from a plain image folder).
"""

from __future__ import annotations

from pathlib import Path

from train.data.annotations import as_int, load_mat, mat_struct_field, mat_variable, require_dir
from train.data.readers.imagefolder import read_class_folders
from train.data.samples import DatasetFormatError, DatasetSplits, Sample

FORMAT = "cars"
LOOKS_FOR = "devkit/cars_meta.mat with cars_train/ and cars_test/, or car_data/train/<class>/ and car_data/test/<class>/"
_ANNOS_WHAT = "a struct array 'annotations' with fields bbox_x1, bbox_y1, bbox_x2, bbox_y2, class (1-based), fname"
_TEST_ANNOS = "cars_test_annos_withlabels.mat"


def _class_folder_root(path: Path, forced: bool) -> Path | None:
    candidates = [path / "car_data" / "car_data", path / "car_data"] + ([path] if forced else [])
    for root in candidates:
        if (root / "train").is_dir() and (root / "test").is_dir():
            return root
    return None


def detect(path: Path, forced: bool = False) -> Path | None:
    if (path / "devkit" / "cars_meta.mat").is_file() or ((path / "devkit").is_dir() and (path / "cars_train").is_dir()):
        return path
    return _class_folder_root(path, forced)


def _image_dir(root: Path, split: str) -> Path:
    """cars_train/ or, as some archives extract, cars_train/cars_train/."""
    outer = require_dir(root / split, f"the {split}/ image folder of the Stanford Cars devkit release")
    inner = outer / split
    return inner if inner.is_dir() else outer


def _annotations(path: Path, num_classes: int, image_dir: Path) -> list[Sample]:
    mat = load_mat(path, _ANNOS_WHAT)
    records = mat_variable(mat, "annotations", path, _ANNOS_WHAT)
    classes = mat_struct_field(records, "class", path, _ANNOS_WHAT)
    fnames = mat_struct_field(records, "fname", path, _ANNOS_WHAT)
    samples = []
    for cls, fname in zip(classes, fnames):
        c = as_int(cls, path, "class numbers 1.." + str(num_classes))
        if not 1 <= c <= num_classes:
            raise DatasetFormatError(f"{path}: image {fname} has class {c}; expected 1..{num_classes} (cars_meta.mat's class_names)")
        samples.append(Sample(str(image_dir / Path(str(fname)).name), c - 1))
    return samples


def _read_devkit(name: str, root: Path) -> DatasetSplits:
    meta_path = root / "devkit" / "cars_meta.mat"
    meta = load_mat(meta_path, "a cell array 'class_names' (196 car models)")
    classes = [str(c).strip() for c in mat_variable(meta, "class_names", meta_path, "a cell array 'class_names'")]
    if not classes:
        raise DatasetFormatError(f"{meta_path}: 'class_names' is empty; expected the car model names")

    test_annos = next((p for p in (root / _TEST_ANNOS, root / "devkit" / _TEST_ANNOS) if p.is_file()), None)
    if test_annos is None:
        raise DatasetFormatError(
            f"{root / _TEST_ANNOS}: missing (also not in devkit/); expected the test labels released separately "
            f"as {_TEST_ANNOS} ({_ANNOS_WHAT}); devkit/cars_test_annos.mat has no labels"
        )
    train = _annotations(root / "devkit" / "cars_train_annos.mat", len(classes), _image_dir(root, "cars_train"))
    test = _annotations(test_annos, len(classes), _image_dir(root, "cars_test"))
    return DatasetSplits(name=name, format=FORMAT, root=root, classes=classes, train=train, test=test)


def read(name: str, root: Path) -> DatasetSplits:
    if (root / "devkit").is_dir():
        return _read_devkit(name, root)
    folder_root = _class_folder_root(root, forced=True)
    if folder_root is None:
        raise DatasetFormatError(f"{root}: neither devkit/ nor car_data/train,test found; expected {LOOKS_FOR}")
    return read_class_folders(name, folder_root, FORMAT)
