"""Readers for CUB-200-2011, Stanford Cars, FGVC-Aircraft, Flowers-102 and image folders, each on a tiny
tree written in that data set's own format; spec parsing; the validation split; the training Dataset."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.io import loadmat, savemat
from torch.utils.data import DataLoader

from erudite_edge.core.preprocess import PreprocessSpec, load_image, normalize, preprocess, resize_image
from erudite_edge.errors import BadImageError, UsageError
from train.data import (
    DatasetFormatError,
    ImageListDataset,
    Sample,
    build_label_space,
    collate_skip_bad,
    default_pad,
    load_dataset,
    load_datasets,
    load_sample_image,
    make_joint_dataset,
    parse_data_spec,
    random_crop_with_padding,
    split_validation,
)
from train.sampler import BalancedBatchSampler

SPEC = PreprocessSpec.square(16)


def write_image(path: Path, seed: int, h: int = 24, w: int = 32) -> Path:
    """A tiny real JPEG/PNG with random content (so preprocessing comparisons are not trivial)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- CUB-200-2011

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]


def make_cub(base: Path) -> Path:
    root = base / "CUB_200_2011"
    images, labels, split = [], [], []
    image_id = 0
    for cid, folder in enumerate(CUB_CLASSES, start=1):
        for k in range(3):
            image_id += 1
            rel = f"{folder}/{folder.split('.', 1)[1]}_{k:04d}.jpg"
            write_image(root / "images" / rel, image_id)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {cid}")
            split.append(f"{image_id} {1 if k < 2 else 0}")
    write_lines(root / "images.txt", images)
    write_lines(root / "image_class_labels.txt", labels)
    write_lines(root / "train_test_split.txt", split)
    write_lines(root / "classes.txt", [f"{i} {c}" for i, c in enumerate(CUB_CLASSES, start=1)])
    return root


def test_cub_reads_from_parent_folder(tmp_path: Path) -> None:
    make_cub(tmp_path)
    spec = parse_data_spec(f"birds={tmp_path}")
    assert spec.format == "cub200" and spec.root.name == "CUB_200_2011"
    ds = load_dataset(spec)
    assert ds.classes == ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"]
    assert (len(ds.train), len(ds.test)) == (6, 3)
    assert [s.label for s in ds.train] == [0, 0, 1, 1, 2, 2]
    assert all(Path(s.path).is_file() for s in ds.train + ds.test)
    assert Path(ds.test[1].path).name == "Laysan_Albatross_0002.jpg"
    assert ds.crop_bottom == 0


def test_cub_missing_annotation_file(tmp_path: Path) -> None:
    root = make_cub(tmp_path)
    (root / "image_class_labels.txt").unlink()
    with pytest.raises(DatasetFormatError, match=r"image_class_labels\.txt: missing; expected lines '<image id> <class id>'"):
        load_dataset(f"birds={root}")


def test_cub_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    root = make_cub(tmp_path)
    lines = (root / "train_test_split.txt").read_text().splitlines()
    lines[3] = "4 train"
    write_lines(root / "train_test_split.txt", lines)
    with pytest.raises(DatasetFormatError, match=r"train_test_split\.txt:4: expected"):
        load_dataset(f"birds={root}")


def test_cub_unknown_class_id(tmp_path: Path) -> None:
    root = make_cub(tmp_path)
    write_lines(root / "image_class_labels.txt", [f"{i} {9 if i == 2 else 1}" for i in range(1, 10)])
    with pytest.raises(DatasetFormatError, match="class id 9"):
        load_dataset(f"birds={root}")


# ---------------------------------------------------------------- Stanford Cars

CAR_CLASSES = ["AM General Hummer SUV 2000", "Ram C/V Cargo Van Minivan 2012", "smart fortwo Convertible 2012"]


def write_cars_annos(path: Path, rows: list[tuple[int, str]]) -> None:
    """The devkit's struct array `annotations` with its field names, uint8 1-based classes and string fnames."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    arr = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, (cls, fname) in enumerate(rows):
        arr[0, i] = (np.uint16([[1]]), np.uint16([[2]]), np.uint16([[30]]), np.uint16([[20]]), np.uint8([[cls]]), fname)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"annotations": arr})


def make_cars_devkit(root: Path, test_labels_in_devkit: bool = False) -> Path:
    (root / "devkit").mkdir(parents=True)
    savemat(str(root / "devkit" / "cars_meta.mat"), {"class_names": np.array(CAR_CLASSES, dtype=object).reshape(1, -1)})
    train_rows = [(c, f"{i:05d}.jpg") for i, c in enumerate([1, 2, 3, 3, 2], start=1)]
    test_rows = [(c, f"{i:05d}.jpg") for i, c in enumerate([3, 1, 2], start=1)]
    for _, f in train_rows:
        write_image(root / "cars_train" / f, int(f[:5]))
    for _, f in test_rows:
        write_image(root / "cars_test" / f, 100 + int(f[:5]))
    write_cars_annos(root / "devkit" / "cars_train_annos.mat", train_rows)
    test_dir = root / "devkit" if test_labels_in_devkit else root
    write_cars_annos(test_dir / "cars_test_annos_withlabels.mat", test_rows)
    return root


def test_cars_devkit_layout(tmp_path: Path) -> None:
    root = make_cars_devkit(tmp_path / "stanford_cars")
    raw = loadmat(str(root / "devkit" / "cars_train_annos.mat"))["annotations"]  # the original's structure
    assert raw.shape == (1, 5) and set(raw.dtype.names) >= {"class", "fname", "bbox_x1"}
    ds = load_dataset(f"cars={root}")
    assert ds.format == "cars" and ds.classes == CAR_CLASSES
    assert [s.label for s in ds.train] == [0, 1, 2, 2, 1]
    assert [s.label for s in ds.test] == [2, 0, 1]
    assert ds.train[0].path == str(root / "cars_train" / "00001.jpg")
    assert ds.test[2].path == str(root / "cars_test" / "00003.jpg")


def test_cars_test_labels_in_devkit_folder(tmp_path: Path) -> None:
    root = make_cars_devkit(tmp_path / "sc", test_labels_in_devkit=True)
    assert [s.label for s in load_dataset(f"cars=cars:{root}").test] == [2, 0, 1]


def test_cars_missing_test_labels(tmp_path: Path) -> None:
    root = make_cars_devkit(tmp_path / "sc")
    (root / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DatasetFormatError, match="cars_test_annos_withlabels.mat: missing"):
        load_dataset(f"cars={root}")


def test_cars_class_out_of_range_and_bad_struct(tmp_path: Path) -> None:
    root = make_cars_devkit(tmp_path / "sc")
    write_cars_annos(root / "devkit" / "cars_train_annos.mat", [(4, "00001.jpg")])
    with pytest.raises(DatasetFormatError, match=r"class 4; expected 1\.\.3"):
        load_dataset(f"cars={root}")
    savemat(str(root / "devkit" / "cars_train_annos.mat"), {"annos": np.zeros((1, 2))})
    with pytest.raises(DatasetFormatError, match="cars_train_annos.mat: no variable 'annotations'"):
        load_dataset(f"cars={root}")


def make_class_folders(root: Path, classes: list[str], per_class: int = 2, ext: str = ".jpg") -> None:
    for split, n in (("train", per_class), ("test", 1)):
        for ci, c in enumerate(classes):
            for k in range(n):
                write_image(root / split / c / f"{k}{ext}", 1000 * ci + k)


def test_cars_class_folder_layouts(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    make_class_folders(mirror / "car_data", ["Acura TL Sedan 2012", "BMW M3 Coupe 2012"])
    ds = load_dataset(f"cars={mirror}")
    assert ds.format == "cars" and ds.classes == ["Acura TL Sedan 2012", "BMW M3 Coupe 2012"]
    assert (len(ds.train), len(ds.test)) == (4, 2)
    # train/ and test/ directly in the root: cars only when named, a plain image folder otherwise
    direct = mirror / "car_data"
    assert parse_data_spec(f"cars=cars:{direct}").format == "cars"
    assert parse_data_spec(f"cars={direct}").format == "imagefolder"


# ---------------------------------------------------------------- FGVC-Aircraft

VARIANTS = ["Boeing 707-320", "A300B4", "F-16A/B"]


def make_aircraft(root: Path) -> Path:
    data = root / "data"
    write_lines(data / "variants.txt", VARIANTS)
    trainval, test = [], []
    for vi, v in enumerate(VARIANTS):
        for k in range(3):
            image_id = f"{1025794 + 10 * vi + k:07d}"
            write_image(data / "images" / f"{image_id}.jpg", 10 * vi + k, h=48, w=40)
            (trainval if k < 2 else test).append(f"{image_id} {v}")
    write_lines(data / "images_variant_trainval.txt", trainval)
    write_lines(data / "images_variant_test.txt", test)
    write_lines(data / "images_variant_train.txt", trainval[::2])  # present in the release, not used
    return root


def test_aircraft_variants_and_banner(tmp_path: Path) -> None:
    root = make_aircraft(tmp_path / "fgvc-aircraft-2013b")
    ds = load_dataset(f"air={root}")
    assert ds.format == "aircraft" and ds.classes == VARIANTS and ds.crop_bottom == 20
    assert (len(ds.train), len(ds.test)) == (6, 3)
    assert [s.label for s in ds.train] == [0, 0, 1, 1, 2, 2]
    assert Path(ds.test[0].path).name == "1025796.jpg"
    full = load_image(ds.train[0].path)
    cropped = load_sample_image(ds.train[0].path, crop_bottom=ds.crop_bottom)
    assert full.shape[0] == 48 and cropped.shape == (28, 40, 3)
    assert np.array_equal(cropped, full[:28])
    # the data set's images are cropped on load in both splits, through make_joint_dataset
    space = build_label_space([ds])
    for train in (False, True):
        joint, _ = make_joint_dataset([ds], space, SPEC, train=train, which="test")
        assert joint.datasets[0].crop_bottom == 20
    joint, _ = make_joint_dataset([ds], space, SPEC, train=False, which="test")
    assert np.array_equal(joint[0]["image"].numpy(), preprocess(load_image(ds.test[0].path)[:28], SPEC))


def test_aircraft_malformed_and_unknown_variant(tmp_path: Path) -> None:
    root = make_aircraft(tmp_path / "air")
    write_lines(root / "data" / "images_variant_test.txt", ["1025796"])
    with pytest.raises(DatasetFormatError, match=r"images_variant_test\.txt:1: expected lines '<image id> <variant name>'"):
        load_dataset(f"air={root}")
    write_lines(root / "data" / "images_variant_test.txt", ["1025796 Boeing 747-400"])
    with pytest.raises(DatasetFormatError, match="'Boeing 747-400' is not listed in variants.txt"):
        load_dataset(f"air={root}")
    (root / "data" / "images_variant_test.txt").unlink()
    with pytest.raises(DatasetFormatError, match=r"images_variant_test\.txt: missing"):
        load_dataset(f"air={root}")


def test_banner_crop_on_too_small_image(tmp_path: Path) -> None:
    path = write_image(tmp_path / "tiny.jpg", 0, h=20, w=20)
    with pytest.raises(BadImageError, match="too small"):
        load_sample_image(path, crop_bottom=20)


# ---------------------------------------------------------------- Flowers-102


def make_flowers(root: Path) -> Path:
    labels = [1, 2, 3, 1, 2, 3, 1, 2, 3]  # 1-based, one per image_00001 .. image_00009
    for i in range(1, len(labels) + 1):
        write_image(root / "jpg" / f"image_{i:05d}.jpg", i)
    savemat(str(root / "imagelabels.mat"), {"labels": np.array([labels], dtype=np.float64)})
    savemat(
        str(root / "setid.mat"),
        {"trnid": np.array([[1, 2, 3]], dtype=np.float64), "valid": np.array([[4, 5, 6]], dtype=np.float64),
         "tstid": np.array([[7, 8, 9]], dtype=np.float64)},
    )
    return root


def test_flowers_splits_and_default_names(tmp_path: Path) -> None:
    root = make_flowers(tmp_path / "flowers")
    ds = load_dataset(f"flowers={root}")
    assert ds.format == "flowers102" and ds.classes == ["class_001", "class_002", "class_003"]
    assert [Path(s.path).name for s in ds.train] == [f"image_{i:05d}.jpg" for i in range(1, 7)]
    assert [s.label for s in ds.train] == [0, 1, 2, 0, 1, 2]
    assert [s.label for s in ds.test] == [0, 1, 2]


def test_flowers_names_files(tmp_path: Path) -> None:
    root = make_flowers(tmp_path / "flowers")
    (root / "classnames.txt").write_text("pink primrose\nhard-leaved pocket orchid\ncanterbury bells\n")
    assert load_dataset(f"f={root}").classes[1] == "hard-leaved pocket orchid"
    (root / "cat_to_name.json").write_text(json.dumps({"3": "sweet pea", "1": "pink primrose", "2": "globe thistle"}))
    assert load_dataset(f"f={root}").classes == ["pink primrose", "globe thistle", "sweet pea"]
    (root / "cat_to_name.json").unlink()
    (root / "classnames.txt").write_text("pink primrose\n")
    with pytest.raises(DatasetFormatError, match=r"classnames\.txt: 1 names; expected 3"):
        load_dataset(f"f={root}")


def test_flowers_missing_setid_and_bad_mat(tmp_path: Path) -> None:
    root = make_flowers(tmp_path / "flowers")
    (root / "setid.mat").unlink()
    with pytest.raises(DatasetFormatError, match=r"setid\.mat: missing; expected vectors 'trnid', 'valid', 'tstid'"):
        load_dataset(f"f={root}")
    (root / "setid.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetFormatError, match=r"setid\.mat: not a readable \.mat file"):
        load_dataset(f"f={root}")


# ---------------------------------------------------------------- image folders and specs


def test_imagefolder_extensions_val_and_classes(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    make_class_folders(root, ["cat", "dog"])
    write_image(root / "train" / "cat" / "UPPER.PNG", 7)
    write_image(root / "train" / "dog" / "nested" / "x.bmp", 8)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    make_class_folders(root / "val", ["cat"])  # ignored: test/ exists
    ds = load_dataset(f"pets={root}")
    assert ds.format == "imagefolder" and ds.classes == ["cat", "dog"]
    assert sorted(Path(s.path).name for s in ds.train if s.label == 0) == ["0.jpg", "1.jpg", "UPPER.PNG"]
    assert sorted(Path(s.path).name for s in ds.train if s.label == 1) == ["0.jpg", "1.jpg", "x.bmp"]
    assert len(ds.test) == 2 and all("/test/" in s.path for s in ds.test)


def test_imagefolder_val_stands_in_for_missing_test(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    make_class_folders(root, ["cat", "dog"])
    (root / "test").rename(root / "val")
    ds = load_dataset(f"pets={root}")
    assert len(ds.test) == 2 and all("/val/" in s.path for s in ds.test)


def test_imagefolder_test_class_unknown_to_train(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    make_class_folders(root, ["cat", "dog"])
    write_image(root / "test" / "bird" / "0.jpg", 3)
    with pytest.raises(DatasetFormatError, match="class 'bird' has no images under"):
        load_dataset(f"pets={root}")


def test_spec_parsing_and_errors(tmp_path: Path) -> None:
    root = make_flowers(tmp_path / "flowers")
    spec = parse_data_spec(f"fl=FLOWERS102:{root}")
    assert (spec.name, spec.format, spec.forced, spec.root) == ("fl", "flowers102", True, root)
    for bad in (str(root), f"={root}", f"a/b={root}"):
        with pytest.raises(UsageError, match="expected NAME=PATH or NAME=FORMAT:PATH"):
            parse_data_spec(bad)
    with pytest.raises(UsageError, match="does not exist"):
        parse_data_spec(f"x={tmp_path / 'nowhere'}")
    with pytest.raises(UsageError, match="'cub' is not a format"):
        parse_data_spec(f"x=cub:{root}")
    # forced format mismatch: a Flowers tree named as CUB
    with pytest.raises(UsageError, match=r"does not look like a cub200 data set; looked for images\.txt"):
        parse_data_spec(f"x=cub200:{root}")


def test_path_matching_no_format_says_what_was_looked_for(tmp_path: Path) -> None:
    write_image(tmp_path / "loose" / "a.jpg", 0)
    with pytest.raises(UsageError) as err:
        parse_data_spec(f"x={tmp_path / 'loose'}")
    msg = str(err.value)
    assert "no known data set layout" in msg and "\n" not in msg
    for fmt, marker in (("cub200", "images.txt"), ("cars", "cars_meta.mat"), ("aircraft", "variants.txt"),
                        ("flowers102", "setid.mat"), ("imagefolder", "train/<class>")):
        assert f"{fmt}: " in msg and marker in msg


def test_load_datasets_unique_names_and_label_space(tmp_path: Path) -> None:
    make_cub(tmp_path / "cub")
    flowers = make_flowers(tmp_path / "flowers")
    with pytest.raises(UsageError, match="'a' is given twice"):
        load_datasets([f"a={tmp_path / 'cub'}", f"a={flowers}"])
    splits = load_datasets([f"fl={flowers}", f"birds={tmp_path / 'cub'}"])
    space = build_label_space(splits)
    assert space.datasets == ("fl", "birds") and space.offsets == [0, 3]
    assert space.joint_names[3] == "birds/Black_footed_Albatross"


# ---------------------------------------------------------------- validation split


def test_split_validation_is_stratified_and_deterministic() -> None:
    counts = {0: 1, 1: 2, 2: 10, 3: 20}
    samples = [Sample(f"{label}_{k}.jpg", label) for label, n in counts.items() for k in range(n)]
    train, val = split_validation(samples, 0.2, seed=3)
    assert sorted(train + val, key=lambda s: s.path) == sorted(samples, key=lambda s: s.path)
    assert not set(train) & set(val)
    for label, n in counts.items():
        n_val = sum(s.label == label for s in val)
        assert n_val == min(round(0.2 * n), n - 1)
        assert sum(s.label == label for s in train) >= 1
    assert train == [s for s in samples if s in set(train)]  # input order kept
    assert split_validation(samples, 0.2, seed=3) == (train, val)
    assert split_validation(samples, 0.2, seed=4)[1] != val
    assert split_validation(samples, 0.0, seed=3) == (samples, [])
    train, val = split_validation(samples, 0.9, seed=3)  # a large fraction still leaves one per class
    assert {s.label for s in train} == set(counts) and sum(s.label == 1 for s in val) == 1
    with pytest.raises(ValueError):
        split_validation(samples, 1.0, seed=0)


# ---------------------------------------------------------------- Dataset, augmentation, collate


def test_eval_item_is_exactly_the_deployed_preprocess(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    make_class_folders(root, ["cat", "dog"])
    ds = load_dataset(f"pets={root}")
    spec = PreprocessSpec.square(20)
    item = ImageListDataset(ds.test, dataset_index=1, joint_offset=5, spec=spec, train=False)[1]
    assert item["ok"] and item["image"].dtype == torch.float32
    assert np.array_equal(item["image"].numpy(), preprocess(load_image(ds.test[1].path), spec))
    assert (item["joint"], item["dataset"], item["local"]) == (6, 1, 1)


def test_train_item_is_padded_crop_and_flip_of_the_resized_image(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", 5, h=30, w=50)
    rgb = load_image(path)
    sized = resize_image(rgb, SPEC)
    torch.manual_seed(0)
    ds = ImageListDataset([Sample(str(path), 0)] * 40, dataset_index=0, joint_offset=0, spec=SPEC, train=True, pad=3)
    padded = np.zeros((16 + 6, 16 + 6, 3), np.uint8)
    padded[3:19, 3:19] = sized
    windows = {(t, left, f): normalize(np.ascontiguousarray(padded[t:t + 16, left:left + 16][:, ::-1] if f else padded[t:t + 16, left:left + 16]), SPEC)
               for t in range(7) for left in range(7) for f in (0, 1)}
    seen = set()
    for i in range(len(ds)):
        x = ds[i]["image"].numpy()
        match = [k for k, w in windows.items() if np.array_equal(w, x)]
        assert match, "a training item must be a padded crop (maybe flipped) of the resized image"
        seen.add(match[0])
    assert {k[2] for k in seen} == {0, 1} and len({k[:2] for k in seen}) > 5
    # reproducible under torch.manual_seed, as the trainer seeds it
    torch.manual_seed(0)
    again = ImageListDataset([Sample(str(path), 0)] * 3, dataset_index=0, joint_offset=0, spec=SPEC, train=True, pad=3)
    torch.manual_seed(0)
    first = ImageListDataset([Sample(str(path), 0)] * 3, dataset_index=0, joint_offset=0, spec=SPEC, train=True, pad=3)
    assert all(torch.equal(again[i]["image"], first[i]["image"]) for i in range(3))


def test_random_crop_pads_with_black_and_default_pad() -> None:
    img = np.full((4, 4, 3), 200, np.uint8)
    rng = np.random.default_rng(0)
    crops = [random_crop_with_padding(img, 2, rng) for _ in range(50)]
    assert all(c.shape == img.shape for c in crops)
    assert any((c == 0).any() for c in crops) and any((c == 200).all() for c in crops)
    assert default_pad(PreprocessSpec.square(224)) == 8 and default_pad(PreprocessSpec.square(448)) == 16


def test_corrupt_image_is_skipped_counted_and_warned_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = write_image(tmp_path / "good.jpg", 1)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    samples = [Sample(str(good), 0), Sample(str(bad), 1), Sample(str(good), 2)]
    ds = ImageListDataset(samples, dataset_index=0, joint_offset=10, spec=SPEC, train=False)
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(3)] + [ds[1]]
    assert [it["ok"] for it in items] == [True, False, True, False]
    assert items[1]["image"].shape == (3, 16, 16) and not items[1]["image"].any()
    assert sum("bad.jpg" in r.getMessage() for r in caplog.records) == 1
    batch = collate_skip_bad(items[:3])
    assert batch["skipped"] == 1 and batch["image"].shape == (2, 3, 16, 16)
    assert batch["joint"].tolist() == [10, 12] and batch["local"].tolist() == [0, 2] and batch["dataset"].tolist() == [0, 0]
    empty = collate_skip_bad([items[1]])
    assert empty["skipped"] == 1 and empty["image"].shape == (0, 3, 16, 16) and empty["joint"].numel() == 0


def test_joint_loader_with_balanced_sampler(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "a", ["x", "y"], per_class=4)
    flowers = make_flowers(tmp_path / "fl")
    splits = load_datasets([f"a={tmp_path / 'a'}", f"fl={flowers}"])
    space = build_label_space(splits)
    with pytest.raises(ValueError, match="does not match"):
        make_joint_dataset(splits[::-1], space, SPEC, train=True)
    train_parts = [split_validation(s.train, 0.25, seed=0)[0] for s in splits]
    joint, sizes = make_joint_dataset(splits, space, SPEC, train=True, samples=train_parts)
    assert sizes == [6, 6] and len(joint) == 12
    loader = DataLoader(joint, batch_sampler=BalancedBatchSampler(sizes, 2), collate_fn=collate_skip_bad)
    batches = list(loader)
    assert len(batches) == 3
    for b in batches:
        assert b["dataset"].tolist() == [0, 0, 1, 1] and b["skipped"] == 0
        assert torch.equal(b["joint"], b["local"] + torch.tensor([0, 0, 2, 2]))
        assert b["image"].shape == (4, 3, 16, 16)


def test_augmentation_differs_between_workers_and_repeats_under_seed(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", 9, h=30, w=50)
    ds = ImageListDataset([Sample(str(path), 0)] * 8, dataset_index=0, joint_offset=0, spec=SPEC, train=True, pad=3)

    def epoch() -> torch.Tensor:
        torch.manual_seed(0)
        loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_skip_bad)
        return torch.cat([b["image"] for b in loader])

    x = epoch()
    assert torch.equal(x, epoch())
    # worker 0 loads batches 0 and 2, worker 1 batches 1 and 3: their first draws must not coincide
    assert not torch.equal(x[0:2], x[2:4])


def test_training_collate_keeps_every_row_and_counts_the_unreadable():
    import torch

    from train.data import collate_fill_bad, collate_skip_bad

    def item(ds, ok, v, stand_in=False):
        return {"image": torch.full((3, 2, 2), float(v)), "joint": v, "dataset": ds, "local": v, "ok": ok, "stand_in": stand_in}

    batch = [item(0, True, 1), item(0, False, 2, stand_in=True), item(1, True, 3), item(1, True, 4), item(2, False, 5, True)]
    out = collate_fill_bad(batch)
    assert out["skipped"] == 2
    assert out["dataset"].tolist() == [0, 0, 1, 1, 2]  # every data set keeps its rows (stand-ins fill them)
    # evaluation scores every image at most once: no stand-ins
    scored = collate_skip_bad([item(0, True, 1), item(0, False, 2), item(1, True, 3)])
    assert scored["skipped"] == 1 and scored["joint"].tolist() == [1, 3]
    with pytest.raises(ValueError, match="no stand-in"):
        collate_fill_bad([item(0, True, 1), item(0, False, 2)])


def test_unreadable_training_item_gets_a_seeded_stand_in_of_its_own_data_set(tmp_path: Path) -> None:
    good = [write_image(tmp_path / f"g{i}.png", 10 * i + 1) for i in range(3)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    samples = [Sample(str(bad), 0), Sample(str(good[0]), 1), Sample(str(bad), 0), Sample(str(good[1]), 2), Sample(str(good[2]), 0)]
    picks = set()
    for epoch in range(6):
        ds = ImageListDataset(samples, dataset_index=2, joint_offset=10, spec=SPEC, train=True, seed=0)
        ds.set_epoch(epoch)
        item = ds[0]
        assert not item["ok"] and item["stand_in"] and item["dataset"] == 2
        assert item["image"].abs().sum() > 0 and item["local"] in (1, 2, 0)
        picks.add(int(item["local"]))
        again = ImageListDataset(samples, dataset_index=2, joint_offset=10, spec=SPEC, train=True, seed=0)
        again.set_epoch(epoch)
        assert torch.equal(again[0]["image"], item["image"])  # seeded: the same stand-in, the same crop
    assert len(picks) >= 2  # drawn, not always the first readable image
    all_bad = ImageListDataset([Sample(str(bad), 0)] * 3, dataset_index=0, joint_offset=0, spec=SPEC, train=True)
    with pytest.raises(UsageError, match="none of its 3 training images is readable"):
        all_bad[1]
    # evaluation: no stand-in, the item is dropped by collate_skip_bad
    assert not ImageListDataset(samples, dataset_index=2, joint_offset=10, spec=SPEC, train=False)[0]["stand_in"]


def test_augmentation_differs_between_ranks(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", 9, h=30, w=50)
    crops = []
    for rank in (0, 1):
        ds = ImageListDataset([Sample(str(path), 0)] * 8, dataset_index=0, joint_offset=0, spec=SPEC, train=True, pad=3,
                              seed=0, rank=rank)
        crops.append(torch.stack([ds[i]["image"] for i in range(8)]))
    assert not torch.equal(crops[0], crops[1])
