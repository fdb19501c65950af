"""`--roi` boxes that cannot be classified (issue 25 item 3): a box of zero size is refused before anything
opens; a box outside the frames is warned about once per cause and counted, not once per frame; a run whose
first frames never hold a box says so once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from erudite_edge.errors import UsageError
from erudite_edge.sources.crops import NEVER_FIT_AFTER, parse_roi
from onnx_fixtures import COLORS, write_video
from trained_model import cli, one_error_line

FRAMES = NEVER_FIT_AFTER + 10


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    colors = [COLORS["red"], COLORS["blue"]] * (FRAMES // 2)
    return write_video(tmp_path_factory.mktemp("roi") / "clip.mp4", colors, size=(32, 24))


@pytest.mark.parametrize("roi", ["0,0,0,0", "5,5,0,10", "5,5,10,0"])
def test_zero_size_roi_is_refused_before_anything_opens(erudite, video: Path, tmp_path: Path, roi: str, capsys) -> None:
    with pytest.raises(UsageError, match="zero width or height"):
        parse_roi(roi)
    out = tmp_path / "r.jsonl"
    rc, stdout, err = cli(capsys, "run", "--bundle", erudite.root, video, "--roi", roi, "-o", out)
    assert rc == 2 and stdout == "" and not out.exists()
    assert f"--roi {roi}: a box of zero width or height" in one_error_line(err)


def test_roi_outside_every_frame_is_warned_once_and_counted(erudite, video: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.jsonl"
    rc, _, err = cli(capsys, "run", "--bundle", erudite.root, video, "--roi", "100,100,10,10", "-o", out)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    outside = [w for w in warnings if "lies outside the 32x24 image" in w]
    assert len(outside) == 1, err  # not one per frame
    never = [w for w in warnings if f"no box has fit any of the first {NEVER_FIT_AFTER}" in w]
    assert len(never) == 1 and "32x24" in never[0], err
    assert re.search(rf"empty boxes \(not classified\)\s*│\s*{FRAMES}\b", err), err
    assert out.read_text() == ""
    assert rc == 1, err  # nothing was classified: one line says so, after the summary
    assert err.strip().splitlines()[-1] == f"error: nothing was classified: {FRAMES} box(es) held nothing of their image"


def test_roi_partly_outside_warns_once_and_classifies_the_rest(erudite, video: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.jsonl"
    rc, _, err = cli(capsys, "run", "--bundle", erudite.root, video, "--roi", "0,0,16,12", "--roi", "40,0,8,8",
                     "-o", out)
    assert rc == 0, err
    assert err.count("lies outside the 32x24 image") == 1 and "no box has fit" not in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == FRAMES and {r["label"] for r in rows} == {"red", "blue"}
