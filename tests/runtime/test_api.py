"""The Python API (erudite_edge.Classifier) and crops (`predict(boxes=)`, `run --roi`, `run --crops-from`),
on the tiny real nearest-colour ONNX bundles of onnx_fixtures (onnxruntime, no torch)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from erudite_edge.cli.app import main
from onnx_fixtures import COLORS, solid_image, write_image, write_video
from paths import REPO, doc_section

ROOT = REPO


def four_quadrants() -> np.ndarray:
    """A 40x40 RGB image: red top-left, yellow top-right, blue bottom-left, cyan bottom-right."""
    img = np.zeros((40, 40, 3), np.uint8)
    img[:20, :20] = COLORS["red"]
    img[:20, 20:] = COLORS["yellow"]
    img[20:, :20] = COLORS["blue"]
    img[20:, 20:] = COLORS["cyan"]
    return img


def test_predict_paths_arrays_and_colour_order(clf, tmp_path: Path) -> None:
    from erudite_edge import Prediction

    path = write_image(tmp_path / "cyan.png", solid_image(COLORS["cyan"]))
    rgb_red = solid_image(COLORS["red"])
    preds = clf.predict([str(path), rgb_red, rgb_red[..., ::-1].copy(), path], color="RGB")
    assert [type(p) for p in preds] == [Prediction] * 4
    assert [p.label for p in preds] == ["cyan", "red", "blue", "cyan"]  # a BGR array read as RGB is blue
    assert [p.index for p in preds] == [0, 1, 2, 3]
    p = preds[0]
    assert (p.dataset, p.source, p.box, p.empty) == ("cool", str(path), None, False)
    assert p.class_index == 3 and p.confidence == p.topk[0].confidence > 0.5
    assert [t.rank for t in p.topk] == [1, 2, 3]
    assert set(p.dataset_mass) == {"warm", "cool"} and abs(sum(p.dataset_mass.values()) - 1) < 1e-5
    assert p.timings.batch in (1, 2) and p.timings.inference_ms > 0
    # the same array in BGR order, said so: the same answer
    assert clf.predict(rgb_red[..., ::-1].copy(), color="BGR")[0].label == "red"


def test_predict_boxes_clip_and_empty(clf) -> None:
    img = four_quadrants()
    boxes = [(0, 0, 20, 20), (20, 0, 20, 20), (-10, 25, 25, 100), (30, 30, 50, 50), (45, 0, 5, 5), (5, 5, 0, 4)]
    preds = clf.predict(img, boxes=boxes, color="RGB")
    assert len(preds) == len(boxes)
    assert [p.label for p in preds] == ["red", "yellow", "blue", "cyan", "", ""]
    assert [p.box.as_list() if p.box else None for p in preds] == [
        [0, 0, 20, 20], [20, 0, 20, 20], [0, 25, 15, 15], [30, 30, 10, 10], [40, 0, 0, 5], [5, 5, 0, 4]]
    assert [p.box.clipped for p in preds[:4]] == [False, False, True, True]
    assert preds[4].empty and preds[5].empty and preds[4].class_index == -1 and preds[4].topk == ()
    # per image: a list of boxes, or None for the whole image
    per = clf.predict([img, solid_image(COLORS["blue"])], boxes=[[(20, 20, 20, 20)], None], color="RGB")
    assert [(p.index, p.label, p.box is None) for p in per] == [(0, "cyan", False), (1, "blue", True)]


def test_typed_errors(clf, bundle_dir: Path, tmp_path: Path) -> None:
    from erudite_edge import BadImageError, BundleError, Classifier, UsageError

    with pytest.raises(UsageError, match="colour order"):
        clf.predict(solid_image(COLORS["red"]))
    with pytest.raises(UsageError, match="negative width or height"):
        clf.predict(four_quadrants(), boxes=[(0, 0, -5, 5)], color="RGB")
    with pytest.raises(UsageError, match="float32 array"):
        clf.predict(np.zeros((4, 4, 3), np.float32), color="RGB")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(BadImageError, match="bad.jpg") as raised:  # the whole call, when asked for
        clf.predict([bad], on_error="raise")
    assert "--strict" not in str(raised.value)  # the API's message names no CLI flag
    with pytest.raises(UsageError, match="backend"):
        Classifier(bundle_dir, backend="cuda")
    with pytest.raises(UsageError, match="CUDA_VISIBLE_DEVICES=1"):
        Classifier(bundle_dir, device=1)
    # a bundle whose bundle.json has no labels
    broken = tmp_path / "nolabels"
    broken.mkdir()
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    del meta["labels"]
    (broken / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="labels"):
        Classifier(broken)


def test_predict_stream_folder_and_early_stop(clf, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    names = ["red", "yellow", "blue", "cyan"] * 3
    for i, c in enumerate(names):
        write_image(folder / f"{i:02d}.png", solid_image(COLORS[c]))
    got = [(Path(p.source).name, p.label) for p in clf.predict_stream(folder)]
    assert got == [(f"{i:02d}.png", c) for i, c in enumerate(names)]
    stream = clf.predict_stream(str(folder))
    first = next(stream)
    stream.close()  # leaving the loop stops the pipeline thread
    assert first.label == "red"
    assert clf.predict([folder / "03.png"])[0].label == "cyan"  # still usable afterwards


def test_cli_roi_and_crops_from(bundle_dir: Path, tmp_path: Path, capsys) -> None:
    img = write_image(tmp_path / "frames" / "quad.png", four_quadrants())
    out = tmp_path / "roi.jsonl"
    rc = main(["run", "--bundle", str(bundle_dir), str(img), "--roi", "20,20,20,20", "--roi", "-5,-5,20,20",
               "--roi", "50,50,4,4", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["label"], r["box"], r.get("box_clipped", False)) for r in rows] == [
        ("cyan", [20, 20, 20, 20], False), ("red", [0, 0, 15, 15], True)]
    assert "lies outside the 40x40 image" in err

    det = tmp_path / "det.jsonl"
    det.write_text(json.dumps({"image": "quad.png", "boxes": [[20, 0, 20, 20], {"bbox": [0, 20, 20, 20], "score": 0.9}]})
                   + "\n\n" + json.dumps({"image": "other.png", "boxes": []}) + "\n")
    csv_out = tmp_path / "det.csv"
    assert main(["run", "--bundle", str(bundle_dir), str(img), "--crops-from", str(det), "-o", str(csv_out)]) == 0
    lines = csv_out.read_text().splitlines()
    assert lines[0].startswith("record_version,run_id,seq,stream,stream_uri,name,box_x,box_y,box_w,box_h,label,dataset,score")
    assert [line.split(",")[6:11] for line in lines[1:]] == [["20", "0", "20", "20", "yellow"], ["0", "20", "20", "20", "blue"]]


@pytest.mark.parametrize("line, what", [
    ('{"file": "quad.png", "boxes": [[0, 0, 1, 1]]}', "unknown schema"),
    ('{"image": "quad.png", "boxes": [[0, 0, 1]]}', "not a box"),
    ('{"image": "quad.png", "boxes": [[0, 0, -1, 3]]}', "negative width"),
    ("[1, 2, 3]", "unknown schema"),
    ("{nope", "not JSON"),
])
def test_crops_from_bad_schema_names_the_line(bundle_dir: Path, tmp_path: Path, capsys, line: str, what: str) -> None:
    img = write_image(tmp_path / "quad.png", four_quadrants())
    det = tmp_path / "det.jsonl"
    det.write_text(json.dumps({"image": "quad.png", "boxes": [[0, 0, 5, 5]]}) + "\n" + line + "\n")
    rc = main(["run", "--bundle", str(bundle_dir), str(img), "--crops-from", str(det)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and f"{det}:2:" in err[0] and what in err[0], err


@pytest.mark.slow  # the README example in a child Python
def test_readme_api_example_runs(bundle_dir: Path, tmp_path: Path) -> None:
    """The docs' API section (docs/api.md): its Python example, run as written against a real bundle and image."""
    section = doc_section("## Python API")
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    write_image(tmp_path / "bird.jpg", solid_image(COLORS["yellow"], 64, 48))
    (tmp_path / "BUNDLE").symlink_to(bundle_dir)
    script = tmp_path / "example.py"
    script.write_text(code + '\nimport sys\nassert "torch" not in sys.modules, "the API imported torch"\n')
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "yellow" in done.stdout and "warm" in done.stdout
    assert "bytes[0] yellow" in done.stdout and "missing.jpg unreadable" in done.stdout  # one bad image, not the call


@pytest.mark.slow  # mypy in a child process
def test_readme_api_example_type_checks(tmp_path: Path) -> None:
    """The same example passes mypy against the package's own types (py.typed), with the project's mypy
    settings: a renamed keyword or a wrong return type in the API breaks the example a user copies."""
    section = doc_section("## Python API")
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(ROOT / ".mypy_cache"), "--follow-imports=silent", str(script)],
                          cwd=ROOT, env={**os.environ, "MYPYPATH": str(ROOT / ".venv" / "trt-stubs")},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_live_source_crops_stream(clf) -> None:
    """A synthetic live camera (testsrc://): each frame taken is cut into its boxes, all of one frame in order."""
    got = list(clf.predict_stream("testsrc://50?size=32x24&colors=ff0000&hold=1000", boxes=[(0, 0, 8, 8), (16, 8, 100, 100)],
                                  limit=6, reconnect=0))
    assert len(got) == 6
    assert [p.box.as_list() for p in got] == [[0, 0, 8, 8], [16, 8, 16, 16]] * 3
    assert all(p.label == "red" and p.source.startswith("frame:") for p in got)
    assert [p.box.clipped for p in got[:2]] == [False, True]


def test_cli_crops_from_video_frames(bundle_dir: Path, tmp_path: Path, capsys) -> None:
    video = write_video(tmp_path / "v.mp4", [COLORS["blue"], COLORS["yellow"], COLORS["red"]], size=(32, 24))
    det = tmp_path / "det.jsonl"
    det.write_text("\n".join(json.dumps({"frame": f, "boxes": [[4, 4, 16, 12]]}) for f in (0, 2)) + "\n")
    out = tmp_path / "v.jsonl"
    assert main(["run", "--bundle", str(bundle_dir), str(video), "--crops-from", str(det), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["name"], r["label"], r["box"]) for r in rows] == [("frame:0", "blue", [4, 4, 16, 12]),
                                                                  ("frame:2", "red", [4, 4, 16, 12])]
    assert "1 image(s)/frame(s) have no line in" in capsys.readouterr().err


def test_typed_package_and_closed_classifier(bundle_dir: Path) -> None:
    import tomllib

    from erudite_edge import Classifier, UsageError

    assert (ROOT / "erudite_edge" / "py.typed").is_file()
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["erudite_edge"]
    clf = Classifier(bundle_dir)
    clf.close()
    with pytest.raises(UsageError, match="closed"):
        clf.predict(solid_image(COLORS["red"]), color="RGB")
