"""`--datasets`: the restriction is a softmax over the kept data sets' logits, done in log space, so it holds
where float32 probabilities underflow (issue 25 item 7); naming no data set is a usage error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from erudite_edge.core.scores import log_softmax, softmax
from erudite_edge.errors import UsageError
from erudite_edge.inference.answers import Answerer, AnswerOptions
from onnx_fixtures import COLORS, label_space, make_erudite_bundle, solid_image, write_image
from trained_model import cli, one_error_line


def test_log_softmax_is_finite_where_softmax_underflows() -> None:
    logits = np.array([[0.0, -200.0, -300.0], [-np.inf, -np.inf, -np.inf]], np.float32)
    assert softmax(logits[:1])[0, 1] == 0.0  # what the old renormalisation started from
    lp = log_softmax(logits)
    assert np.allclose(lp[0], [0.0, -200.0, -300.0]) and np.all(lp[1] == -np.inf)


def test_answerer_restricts_in_log_space() -> None:
    labels = label_space()  # warm: red, yellow; cool: blue, cyan
    logits = np.array([[0.0, -1.0, -500.0, -200.0]], np.float32)  # cool's probabilities underflow to 0
    a = Answerer.from_options(labels, AnswerOptions(topk=2, datasets=("cool",)))
    answer = a(log_softmax(logits))[0]
    assert answer.label == "cyan" and answer.score == pytest.approx(1.0)
    assert answer.dataset_mass == {"cool": pytest.approx(1.0)}
    assert a.datasets == ["cool"]
    whole = Answerer.from_options(labels, AnswerOptions(topk=4))(log_softmax(logits))[0]
    assert whole.label == "red" and sum(whole.dataset_mass.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("spec", ["", " , ,"])
def test_datasets_naming_none_is_a_usage_error(spec: str) -> None:
    with pytest.raises(UsageError, match="names no data set; give some of warm, cool"):
        Answerer.from_options(label_space(), AnswerOptions(datasets=tuple(s for s in spec.split(","))))


@pytest.fixture(scope="module")
def sharp(tmp_path_factory: pytest.TempPathFactory):
    # logits spread by hundreds: a yellow image's probabilities of the cool classes underflow to 0
    return make_erudite_bundle(tmp_path_factory.mktemp("sharp"), temperature=20.0)


def test_run_datasets_answers_where_probabilities_underflow(sharp, zoo, tmp_path: Path, capsys) -> None:
    image = write_image(tmp_path / "yellow.png", solid_image(COLORS["yellow"]))
    for flag in ("--bundle", "--zoo"):
        bundle = sharp if flag == "--bundle" else zoo
        out = tmp_path / f"{flag[2:]}.jsonl"
        rc, _, err = cli(capsys, "run", flag, bundle.root, image, "--datasets", "cool", "-o", out)
        assert rc == 0, err
        r = json.loads(out.read_text())
        # yellow (255, 255, 0) is nearer cyan (0, 255, 255) than blue (0, 0, 255)
        assert (r["dataset"], r["label"]) == ("cool", "cyan"), (flag, r)
        assert r["datasets"] == {"cool": pytest.approx(1.0)}  # the zoo's router picks among cool only
        # the sharp erudite model is sure; the zoo's fine model (temperature 0.1) less so
        assert r["score"] == (pytest.approx(1.0, abs=1e-3) if flag == "--bundle" else pytest.approx(0.88, abs=0.01))


@pytest.mark.parametrize("spec", ["", ",,"])
def test_run_datasets_empty_is_one_line_exit_2(sharp, tmp_path: Path, spec: str, capsys) -> None:
    image = write_image(tmp_path / "yellow.png", solid_image(COLORS["yellow"]))
    rc, out, err = cli(capsys, "run", "--bundle", sharp.root, image, "--datasets", spec)
    assert rc == 2 and out == ""
    assert "names no data set" in one_error_line(err)
