"""Fuzzing what a user types or a detector writes (issue 25 item 9): the source URI grammar, `--roi`, the
crops JSON lines file. Any input either works or is refused with the project's own error, whose message is
one line; never another exception (a traceback). Real here: the real parsers and openers, real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from erudite_edge.errors import EruditeError
from erudite_edge.sources.crops import parse_roi, read_detections
from erudite_edge.sources.open import open_source

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line(e: EruditeError) -> str:
    msg = str(e)
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
    return msg


# -- the source URI grammar ----------------------------------------------------------------------------
# No '/' or '~' in the fuzzed part: paths stay inside an empty folder (never a glob over the whole disk);
# rtsp:// and csi:// open a network stream or a Jetson camera and are left to test_secrets / test_streams.
SCHEMES = ["", "file://", "v4l2://", "testsrc://", "TestSrc://", "foo://", "/dev/video", "v4l2:///dev/video", "://"]
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="/~"), max_size=30)


@FUZZ
@given(scheme=st.sampled_from(SCHEMES), rest=TEXT)
@example(scheme="testsrc://", rest="30?size=0x0")
@example(scheme="testsrc://", rest="nan")
@example(scheme="testsrc://", rest="30?colors=zz&hold=-1&frames=x")
@example(scheme="", rest="*.png")
@example(scheme="", rest="99999999999999999999")
@example(scheme="", rest="a\nb")
def test_source_uri_grammar(scheme: str, rest: str, tmp_path: Path, monkeypatch) -> None:
    spec = scheme + rest
    if scheme == "" and rest.strip().isdigit() and int(rest) < 64 and os.path.exists(f"/dev/video{int(rest)}"):
        return  # a real camera on this machine: not the parser's business
    monkeypatch.chdir(tmp_path)
    try:
        src = open_source(spec, reconnect=0, backoff=0.0)
    except EruditeError as e:
        one_line(e)
        return
    src.close()


# -- --roi x,y,w,h ---------------------------------------------------------------------------------------
NUMBER = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["", " ", "1e999", "-0", "0x10", "1_000", "１２", "nan", "inf", "1" * 400]))


@FUZZ
@given(st.one_of(st.lists(NUMBER, min_size=0, max_size=6).map(",".join), st.text(max_size=40)))
@example("1,2,3,4\n5")
@example("0,0,-1,4")
def test_roi(text: str) -> None:
    try:
        x, y, w, h = parse_roi(text)
    except EruditeError as e:
        one_line(e)
        return
    assert w >= 0 and h >= 0


# -- the crops JSON lines file ------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(["image", "frame", "boxes", "bbox", "x"])
                                                                | st.text(max_size=5), inner, max_size=4),
    max_leaves=12)
BOX = st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=3)), min_size=3, max_size=5)
LINE = st.one_of(
    JSON.map(json.dumps),
    st.fixed_dictionaries({"image": st.one_of(st.text(max_size=8), st.integers()),
                           "boxes": st.lists(st.one_of(BOX, st.fixed_dictionaries({"bbox": BOX})), max_size=3)}).map(json.dumps),
    st.fixed_dictionaries({"frame": st.one_of(st.integers(), st.floats(), st.booleans()),
                           "boxes": st.lists(BOX, max_size=3)}).map(json.dumps),
    st.text(max_size=30),
)


@pytest.mark.slow  # hypothesis examples, over 1 s
@FUZZ
@given(lines=st.lists(LINE, max_size=5), raw=st.binary(max_size=20))
@example(lines=['{"frame": 0, "boxes": [[1, 2, 3, %s]]}' % ("9" * 400)], raw=b"")
@example(lines=['{"frame": 0, "boxes": [[1, 2, 3, %s]]}' % ("9" * 5000)], raw=b"")
@example(lines=["[" * 100_000], raw=b"")
@example(lines=[], raw=b"\xff\xfe")
def test_crops_file(lines: list[str], raw: bytes, tmp_path: Path) -> None:
    path = tmp_path / "detections.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + raw)
    try:
        detections = read_detections(path)
    except EruditeError as e:
        one_line(e)
        return
    for boxes in [*detections.by_image.values(), *detections.by_frame.values()]:
        assert all(len(b) == 4 and b[2] >= 0 and b[3] >= 0 for b in boxes)


@pytest.mark.parametrize("what", ["folder", "missing"])
def test_crops_file_that_is_not_a_file(tmp_path: Path, what: str) -> None:
    path = tmp_path if what == "folder" else tmp_path / "none.jsonl"
    with pytest.raises(EruditeError) as e:
        read_detections(path)
    one_line(e.value)
