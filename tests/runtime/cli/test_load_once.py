"""Objects, not paths (issue 23): `erudite-edge export int8` and `erudite-edge check` read the bundle
from its folder once (Bundle.load) and hand the loaded Bundle down (make_int8, derive, the report's
calibration sweep; check_bundle), instead of each step loading it again from the path.

Real here: a tiny nearest-colour ONNX bundle (tests/onnx_fixtures.py, no torch), real calibration
images, real onnxruntime quantization, the real CLI run in-process; only Bundle.load is wrapped, to
count its calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from erudite_edge.cli.app import main
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.check_set import write_check_set
from erudite_edge.core.preprocess import preprocess
from onnx_fixtures import COLORS, make_erudite_bundle, solid_image, write_image


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every Bundle.load call from now on (its root argument), the real load still done."""
    calls: list[object] = []
    original = Bundle.load.__func__  # type: ignore[attr-defined]  # the function under the classmethod

    def counting(cls: type[Bundle], *args: object, **kwargs: object) -> Bundle:
        calls.append(args[0] if args else kwargs.get("root"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Bundle, "load", classmethod(counting))
    return calls


@pytest.fixture
def bundle_and_images(tmp_path: Path) -> tuple[Path, Path]:
    """A nearest-colour erudite bundle with a check set (FP32 logits by onnxruntime), and a folder of
    noisy solid-colour images of its four classes."""
    import onnxruntime as ort

    root = tmp_path / "bundle"
    bundle = make_erudite_bundle(root)
    images = tmp_path / "images"
    pictures = [solid_image(rgb, noise=20, seed=k) for k in range(3) for rgb in COLORS.values()]
    for i, rgb in enumerate(pictures):
        write_image(images / f"{i:02d}.png", rgb)
    batch = np.stack([preprocess(p, bundle.preprocess) for p in pictures])
    session = ort.InferenceSession(str(root / "model.onnx"), providers=["CPUExecutionProvider"])
    write_check_set(bundle, batch, "solid colours", True, lambda role, x: session.run(None, {"images": x})[0])
    bundle.save()
    return root, images


@pytest.mark.slow  # exports INT8 and checks the bundle
def test_export_int8_and_check_load_the_bundle_once(bundle_and_images, loads, capsys):
    root, images = bundle_and_images
    report_dir = root.parent / "report"
    rc = main(["export", "int8", "--bundle", str(root), "--calib", str(images), "--calib-count", "8",
               "--calib-batch", "4", "--images", str(images), "--eval-count", "12",
               "--report-dir", str(report_dir), "--sweep", "4,8"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert len(loads) == 1, loads  # the command's own load; make_int8, derive and the sweep reuse it
    written = Bundle.load(root, verify=True)
    assert written.find("main", "int8") is not None
    saved = json.loads((report_dir / "int8_report.json").read_text())
    assert [row["count"] for row in saved["calibration_sweep"]] == [4, 8]  # the sweep ran on the loaded bundle

    loads.clear()
    rc = main(["check", str(root), "--backend", "onnxruntime", "--precision", "int8", "--accept-accuracy-drop"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.startswith(("PASS main onnxruntime int8", "FAIL main onnxruntime int8")), out
    assert len(loads) == 1, loads  # the command's load; check_bundle takes the loaded Bundle
