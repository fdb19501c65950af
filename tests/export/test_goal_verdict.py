"""export.goal_verdict and derive's `goal`: INT8's goal judged by 95 % intervals on the test images: met, failed
(nothing written, exit 1) or too few images to tell (written, with a warning saying how many would)."""

from pathlib import Path

import numpy as np
import pytest
from test_derive import _labelled, _loaded, _swapping_build

from erudite_edge.core.bundle import Bundle
from erudite_edge.core.compare import ParityError
from export.derive import derive
from export.goal_verdict import agreement_check, paired_difference, ratio_check, wilson
from onnx_fixtures import make_erudite_bundle


def _same(src, path: Path) -> None:  # noqa: ANN001
    path.write_bytes(src.path.read_bytes())


def test_wilson_matches_the_published_values():
    # Newcombe 1998 (Stat Med 17:857), Table I: 81/263 -> 0.2553 to 0.3662; 15/148 -> 0.0624 to 0.1605; 0/10 -> 0 to 0.2775
    for (k, n), (lo, hi) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 10): (0.0, 0.2775)}.items():
        assert wilson(k, n) == pytest.approx((lo, hi), abs=1e-4)


def test_paired_interval_keeps_its_width_when_no_image_flips_and_narrows_with_more_images():
    d, lo, hi = paired_difference(180, 0, 0, 20)  # both right 180, neither 20: no image flips
    assert d == 0 and lo < -0.01 and hi > 0.01  # a bootstrap would say [0, 0]
    _, lo4, hi4 = paired_difference(720, 0, 0, 80)
    assert lo < lo4 < 0 < hi4 < hi
    d2, lo2, hi2 = paired_difference(170, 10, 2, 18)  # 10 lost, 2 gained: the new model is worse
    assert d2 == pytest.approx(-0.04) and lo2 < d2 < hi2 < 0  # wholly below 0: a real loss
    assert paired_difference(170, 2, 10, 18) == pytest.approx((-d2, -hi2, -lo2))  # swapping the models mirrors it
    # half right, no flips, 8 images: the uncorrected phi (1) gave a zero-width interval, "met" from 8 images
    _, lo8, hi8 = paired_difference(4, 0, 0, 4)
    assert lo8 < -0.1 and hi8 > 0.1
    assert ratio_check("b", np.array([True] * 4 + [False] * 4), np.array([True] * 4 + [False] * 4), 0.99).verdict == "undecided"


def test_verdicts_and_how_many_images_would_decide():
    assert agreement_check("main", 450, 450, 0.98).verdict == "met"  # lower bound 0.9915
    assert agreement_check("main", 430, 450, 0.98).verdict == "failed"  # 95.6 %: upper bound 0.971
    c = agreement_check("main", 439, 450, 0.98)  # 97.6 %: interval 0.957 to 0.986 straddles 98 %
    assert c.verdict == "undecided" and c.images_needed and c.images_needed > 450
    assert f"too few test images to judge (about {c.images_needed} images" in c.line()
    right = np.array([True] * 160 + [False] * 40)
    assert ratio_check("d", right, right, 0.99).verdict == "undecided"  # no flip, but 200 images cannot show >= 0.99
    lost = right.copy()
    lost[:16] = False  # 16 of 160 lost: ratio 0.90
    assert ratio_check("d", right, lost, 0.99).verdict == "failed"


def test_goal_failed_writes_nothing(tmp_path):
    make_erudite_bundle(tmp_path / "b")
    before = sorted(p.name for p in (tmp_path / "b").iterdir())
    with pytest.raises(ParityError, match=r"^int8 misses the goal: warm: int8/fp32 accuracy 0\.0000 on 4 test images .*"
                                          r"wholly below it; nothing was written$"):
        derive(_loaded(tmp_path / "b"), "int8", _swapping_build, inputs=_labelled(), info={}, goal=(None, 0.99))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == before


def test_too_few_images_to_judge_writes_the_model_with_a_warning(tmp_path):
    make_erudite_bundle(tmp_path / "b")
    lines: list[str] = []
    report = derive(_loaded(tmp_path / "b"), "int8", _same, inputs=_labelled(), info={}, goal=(0.98, 0.99), log=lines.append)
    assert report["goal"]["status"] == "undecided"  # 8 of 8 agree: the interval reaches down to 0.68
    warnings = [ln for ln in lines if ln.startswith("warning: goal undecided: ")]
    assert len(warnings) == 3 and all("too few test images to judge" in w for w in warnings)  # agreement, warm, cool
    b = Bundle.load(tmp_path / "b")
    assert (tmp_path / "b" / b.entry("main", "int8", "onnx").file).is_file()
    assert b.entry("main", "int8", "onnx").info["goal"]["status"] == "undecided"


def test_goal_met_where_the_interval_clears_it(tmp_path):
    make_erudite_bundle(tmp_path / "b")
    report = derive(_loaded(tmp_path / "b"), "int8", _same, inputs=_labelled(per_class=60), info={}, goal=(0.98, None))
    assert report["goal"]["status"] == "met" and report["goal"]["checks"][0]["lower"] >= 0.98  # 240 of 240 agree
