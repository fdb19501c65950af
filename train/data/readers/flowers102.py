"""Oxford Flowers-102: jpg/image_%05d.jpg, imagelabels.mat ('labels', 1..102 per image) and setid.mat
('trnid', 'valid', 'tstid': 1-based image numbers). Training uses trnid + valid, testing tstid.

The official release has no class names file. Where the root holds cat_to_name.json ({"1": "pink
primrose", ...}) or classnames.txt (one name a line, in label order), those names are used;
otherwise the classes are called class_001 .. class_102.
"""

from __future__ import annotations

import json
from pathlib import Path

from train.data.annotations import as_int, load_mat, mat_variable, read_lines, require_dir
from train.data.samples import DatasetFormatError, DatasetSplits, Sample

FORMAT = "flowers102"
LOOKS_FOR = "jpg/ with imagelabels.mat and setid.mat"
_LABELS_WHAT = "a vector 'labels' with one class number (1..102) per image"
_SETID_WHAT = "vectors 'trnid', 'valid', 'tstid' of 1-based image numbers"


def detect(path: Path, forced: bool = False) -> Path | None:
    if (path / "jpg").is_dir() and ((path / "imagelabels.mat").is_file() or (path / "setid.mat").is_file()):
        return path
    return None


def _ints(values, path: Path, what: str) -> list[int]:
    return [as_int(v, path, what) for v in values]


def _class_names(root: Path, num_classes: int) -> list[str]:
    json_path, txt_path = root / "cat_to_name.json", root / "classnames.txt"
    if json_path.is_file():
        what = f'a JSON object mapping "1".."{num_classes}" to class names'
        try:
            table = json.loads(json_path.read_text(encoding="utf-8"))
            names = [str(table[str(i)]).strip() for i in range(1, num_classes + 1)]
        except (OSError, ValueError, TypeError) as e:
            raise DatasetFormatError(f"{json_path}: cannot read ({e}); expected {what}") from e
        except KeyError as e:
            raise DatasetFormatError(f"{json_path}: no name for class {e}; expected {what}") from e
        return names
    if txt_path.is_file():
        names = [line for _, line in read_lines(txt_path, "one class name a line, in label order")]
        if len(names) != num_classes:
            raise DatasetFormatError(f"{txt_path}: {len(names)} names; expected {num_classes}, one a line in label order")
        return names
    return [f"class_{i:03d}" for i in range(1, num_classes + 1)]


def read(name: str, root: Path) -> DatasetSplits:
    images = require_dir(root / "jpg", "the Flowers-102 jpg/image_NNNNN.jpg folder")
    labels_path, setid_path = root / "imagelabels.mat", root / "setid.mat"
    labels = _ints(mat_variable(load_mat(labels_path, _LABELS_WHAT), "labels", labels_path, _LABELS_WHAT), labels_path, _LABELS_WHAT)
    if not labels or min(labels) < 1:
        raise DatasetFormatError(f"{labels_path}: no labels or a class below 1; expected {_LABELS_WHAT}")
    num_classes = max(labels)
    setid = load_mat(setid_path, _SETID_WHAT)
    split_ids = {k: _ints(mat_variable(setid, k, setid_path, _SETID_WHAT), setid_path, _SETID_WHAT) for k in ("trnid", "valid", "tstid")}

    def samples(ids: list[int]) -> list[Sample]:
        out = []
        for i in ids:
            if not 1 <= i <= len(labels):
                raise DatasetFormatError(f"{setid_path}: image number {i}; expected 1..{len(labels)} (imagelabels.mat has {len(labels)} images)")
            out.append(Sample(str(images / f"image_{i:05d}.jpg"), labels[i - 1] - 1))
        return out

    train = samples(split_ids["trnid"] + split_ids["valid"])
    test = samples(split_ids["tstid"])
    return DatasetSplits(name=name, format=FORMAT, root=root, classes=_class_names(root, num_classes), train=train, test=test)
