"""export.derive: a reduced-precision model is built per role, compared with FP32 and scored on labelled
images with ITS OWN logits. The "reduced" model here is a real ONNX model that deliberately swaps two
classes (red <-> yellow), so its accuracy and agreement differ from FP32 by a known amount."""

from pathlib import Path

import numpy as np
import pytest

from erudite_edge.bundle import Bundle
from export.derive import derive
from export.images import InputSet
from export.parity import ParityError
from onnx_fixtures import COLORS, DATASETS, fixture_spec, make_erudite_bundle, make_zoo_bundle, nearest_color_model, solid_image
from erudite_edge.preprocess import preprocess

ORDER = ["red", "yellow", "blue", "cyan"]  # joint classes: warm/red, warm/yellow, cool/blue, cool/cyan


def _labelled(per_class: int = 2) -> InputSet:
    spec = fixture_spec()
    names = [c for c in ORDER for _ in range(per_class)]
    batch = np.stack([preprocess(solid_image(COLORS[c], noise=10, seed=i), spec) for i, c in enumerate(names)])
    ds = np.array([0 if c in DATASETS["warm"] else 1 for c in names])
    local = np.array([DATASETS["warm" if c in DATASETS["warm"] else "cool"].index(c) for c in names])
    return InputSet(batch=batch, source="test images", real=True, dataset_ids=ds, local_ids=local)


def _swapping_build(src, path: Path) -> None:  # noqa: ANN001
    """A stand-in "reduced" model for role main: red and yellow prototypes swapped; others build as FP32."""
    swapped = {"red": "yellow", "yellow": "red"}
    if src.role == "main":
        nearest_color_model(path, [COLORS[swapped.get(c, c)] for c in ORDER], fixture_spec())
    else:
        path.write_bytes(src.path.read_bytes())


def test_reduced_accuracy_is_scored_on_the_reduced_models_own_logits(tmp_path):
    make_erudite_bundle(tmp_path / "b")
    lines: list[str] = []
    report = derive(tmp_path / "b", "int8", _swapping_build, inputs=_labelled(), info={"method": "test"}, log=lines.append)
    assert "accuracy warm: fp32 100.00% -> int8 0.00% (-100.00 points, 4 test images)" in lines
    assert "accuracy cool: fp32 100.00% -> int8 100.00% (+0.00 points, 4 test images)" in lines
    assert any(ln.startswith("agreement main: onnx int8 vs onnx fp32 on 8 inputs") for ln in lines)
    assert report["method"] == "test" and report["images"] == "test images"
    acc = report["accuracy"]
    assert acc["warm"] == {"fp32": 1.0, "int8": 0.0, "change": -1.0, "count": 4}
    assert acc["cool"] == {"fp32": 1.0, "int8": 1.0, "change": 0.0, "count": 4}
    main = report["roles"]["main"]
    assert main["top1_agreement"] == 0.5 and main["disagreements"] == 4 and main["count"] == 8
    b = Bundle.load(tmp_path / "b")
    assert b.meta["accuracy"]["int8"] == acc and b.meta["parity"]["main"]["int8"]["top1_agreement"] == 0.5
    assert (tmp_path / "b" / b.entry("main", "int8", "onnx").file).is_file()


def test_low_agreement_writes_nothing(tmp_path):
    make_erudite_bundle(tmp_path / "b")
    before = sorted(p.name for p in (tmp_path / "b").iterdir())
    with pytest.raises(ParityError, match=r"int8 top-1 agreement with fp32 is 50.0% for role main \(minimum 90.0%\); nothing was written"):
        derive(tmp_path / "b", "int8", _swapping_build, inputs=_labelled(), info={}, min_agreement=0.9)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == before
    assert derive(tmp_path / "b", "int8", _swapping_build, inputs=_labelled(), info={}, min_agreement=0.5)


def test_zoo_every_role_is_derived_and_the_pipeline_scored(tmp_path):
    make_zoo_bundle(tmp_path / "z")
    report = derive(tmp_path / "z", "fp16", _swapping_build, inputs=_labelled(), info={})
    assert set(report["roles"]) == {"coarse", "fine:warm", "fine:cool"}
    assert all(r["top1_agreement"] == 1.0 for r in report["roles"].values())
    assert report["accuracy"]["warm"]["fp16"] == 1.0 and report["accuracy"]["cool"]["change"] == 0.0
    assert report["count"] == 8 and report["precision"] == "fp16"
