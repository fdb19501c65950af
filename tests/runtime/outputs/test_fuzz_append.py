"""Fuzzing `-o FILE --append` (issue 25 item 9): whatever bytes an existing JSONL or CSV file holds, opening it to
append either works (a repair told in one line; the file then ends at whole lines with this run's record last,
nothing before the repair point changed) or is refused with the project's own one-line error, the file as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from erudite_edge.core.scores import ClassScore
from erudite_edge.errors import EruditeError
from erudite_edge.outputs.records import CsvSink, JsonlSink, csv_header
from erudite_edge.outputs.results import Result
from erudite_edge.sources.base import Item

DATASETS = ["warm", "cool"]
HEADER = ",".join(csv_header(2, DATASETS)).encode() + b"\r\n"
PIECES = st.sampled_from([b"\n", b"\r\n", b"\0", b"{}", b'{"a": 1}\n', HEADER, b"name,label\r\n", b"\xff", b",", b'"'])
CONTENT = st.one_of(st.binary(max_size=60), st.lists(PIECES, max_size=8).map(b"".join))


@pytest.mark.slow  # hypothesis examples, over 1 s
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=CONTENT, kind=st.sampled_from(["jsonl", "csv"]))
@example(content=HEADER + b"2,x,0,a.png", kind="csv")
@example(content=b"\0" * 50, kind="jsonl")
@example(content=HEADER[:10], kind="csv")
def test_append_to_any_bytes(tmp_path: Path, content: bytes, kind: str) -> None:
    path = tmp_path / f"out.{kind}"
    path.write_bytes(content)
    warned: list[str] = []
    try:
        sink = (JsonlSink(path, mode="append", warn=warned.append) if kind == "jsonl"
                else CsvSink(path, 2, DATASETS, mode="append", warn=warned.append))
    except EruditeError as e:
        assert "\n" not in str(e) and path.read_bytes() == content, str(e)
        return
    result = Result(0, "a.png", [ClassScore(1, 0, "red", "warm", 0.75), ClassScore(2, 3, "blue", "cool", 0.25)],
                    dataset_mass={"warm": 0.75, "cool": 0.25})
    sink.write(result, Item(0, "a.png", None))
    sink.commit()
    data = path.read_bytes()
    term = b"\n" if kind == "jsonl" else b"\r\n"
    assert data.endswith(term) and b"a.png" in data.rsplit(term, 2)[-2]
    assert all("\n" not in w for w in warned) and len(warned) <= 1
    kept = data[: len(data) - len(data.rsplit(term, 2)[-2]) - len(term)]
    # what the run kept of the file is its beginning, unchanged (a CSV cut back to nothing gets a new header)
    assert content.startswith(kept) or (kind == "csv" and kept == HEADER)
