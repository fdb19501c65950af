"""`--crops-from`: how a detections file's `image` finds its file (README, "Crops"): as given, relative to the
source folder, or by its base name; an image without a line is not classified, and counted in one warning.
`--save` with crops saves the annotated crops, not the whole frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from onnx_fixtures import COLORS, solid_image, write_image
from trained_model import cli


def test_image_matched_as_given_relative_or_by_base_name(erudite, tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    paths = {name: write_image(src / sub / f"{name}.png", solid_image(COLORS[name], h=24, w=24))
             for name, sub in [("red", "a"), ("cyan", "b"), ("blue", "."), ("yellow", ".")]}
    box = [[2, 2, 20, 20]]
    det = tmp_path / "det.jsonl"
    det.write_text("\n".join(json.dumps(d) for d in [
        {"image": str(paths["blue"]), "boxes": box},  # the file as given (the source's own path for it)
        {"image": "a/red.png", "boxes": box},         # relative to the source folder
        {"image": "cyan.png", "boxes": box},          # its base name
    ]) + "\n")  # yellow.png: no line
    out = tmp_path / "r.jsonl"
    rc, _, err = cli(capsys, "run", "--bundle", erudite.root, src, "--recursive", "--crops-from", det, "-o", out)
    assert rc == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((Path(r["name"]).name, r["label"], r["box"]) for r in rows) == [
        ("blue.png", "blue", [2, 2, 20, 20]), ("cyan.png", "cyan", [2, 2, 20, 20]), ("red.png", "red", [2, 2, 20, 20])]
    uncovered = [line for line in err.splitlines() if "no line in" in line]
    assert uncovered == [f"warning: 1 image(s)/frame(s) have no line in {det}; not classified"], err


def test_save_with_crops_saves_the_crops(erudite, tmp_path: Path, capsys) -> None:
    image = np.zeros((80, 120, 3), np.uint8)
    image[:, :60], image[:, 60:] = COLORS["red"], COLORS["blue"]
    write_image(tmp_path / "src" / "a.png", image)
    saved = tmp_path / "saved"
    rc, _, err = cli(capsys, "run", "--bundle", erudite.root, tmp_path / "src", "--roi", "0,0,50,50",
                     "--roi", "60,10,60,60", "--save", saved, "-o", tmp_path / "r.jsonl")
    assert rc == 0, err
    crops = {f.name: cv2.imread(str(f)) for f in sorted(saved.iterdir())}
    assert {name: c.shape for name, c in crops.items()} == {"a.png": (50, 50, 3), "a-1.png": (60, 60, 3)}
    for name, colour in [("a.png", "red"), ("a-1.png", "blue")]:  # each holds its own region (and a label drawn on it)
        values, counts = np.unique(crops[name].reshape(-1, 3), axis=0, return_counts=True)
        assert values[counts.argmax()][::-1].tolist() == list(COLORS[colour]), name  # BGR on disk
