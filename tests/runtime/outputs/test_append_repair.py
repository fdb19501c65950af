"""`--append` after a crash or power cut (issue 25 item 2): a result file torn at any byte, or padded with NUL
bytes as ext4 leaves it, is cut back to its last whole line on open, told in one line, and appended to
without a glued or short line; every record carries `run_id` (one per process) and `seq` (per source),
as erudite_edge.outputs.schema and README define them."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erudite_edge.cli.app import main
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.scores import ClassScore
from erudite_edge.errors import UsageError
from erudite_edge.outputs.records import CsvSink, JsonlSink, csv_header
from erudite_edge.outputs.result_log import AppendLog
from erudite_edge.outputs.results import Result
from erudite_edge.outputs.schema import JSONL_FIELDS, OPTIONAL_FIELDS, RECORD_VERSION, csv_columns, run_id
from erudite_edge.sources.base import Item
from onnx_fixtures import write_bad_files
from paths import REPO, doc_section
from real_processes import child_env

# names a file system can hold: commas, quotes, a bare LF (CSV quotes it), non-ASCII, bytes that are not UTF-8
NAMES = ["a.png", "b,c.png", 'quote"d.png', "line\nfeed.png", "été.png", os.fsdecode(b"raw\xff.png"), "x" * 300]
TOPK = 2
DATASETS = ["warm", "cool"]


def _result(i: int) -> Result:
    preds = [ClassScore(1, 0, "red", "warm", 0.75), ClassScore(2, 3, "blue", "cool", 0.25)]
    return Result(i, NAMES[i % len(NAMES)], preds, dataset_mass={"warm": 0.75, "cool": 0.25}, captured_at=1.5e9 + i,
                  frame_age_ms=3.25, seq=i)


def _write(path: Path, kind: str, n: int, mode: str = "new", warn=None) -> None:
    sink = JsonlSink(path, mode=mode, warn=warn) if kind == "jsonl" else CsvSink(path, TOPK, DATASETS, mode=mode, warn=warn)
    for i in range(n):
        sink.write(_result(i), Item(i, NAMES[i % len(NAMES)], None))
    sink.commit()


def _whole(data: bytes, kind: str) -> bytes:
    """What a correct repair keeps of `data`: up to its last whole line, NUL padding gone."""
    term = b"\n" if kind == "jsonl" else b"\r\n"
    data = data.rstrip(b"\0")
    i = data.rfind(term)
    return data[: i + len(term)] if i >= 0 else b""


def _check_file(path: Path, kind: str, kept: bytes, added: int) -> None:
    """Every line whole; the kept part first, unchanged; then `added` new records."""
    data = path.read_bytes()
    assert data.startswith(kept)
    assert b"\0" not in data
    if kind == "jsonl":
        lines = data.decode("utf-8").split("\n")
        assert lines[-1] == ""
        records = [json.loads(line) for line in lines[:-1]]  # each line a whole JSON object
        assert len(records) == kept.count(b"\n") + added
        new = records[len(records) - added:]
    else:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
        header = csv_header(TOPK, DATASETS)
        assert rows[0] == header and rows.count(header) == 1
        assert all(len(r) == len(header) for r in rows), [r for r in rows if len(r) != len(header)]
        new = [dict(zip(header, r)) for r in rows[len(rows) - added:]]
    assert [int(r["seq"]) for r in new] == list(range(added))
    assert all(r["run_id"] == run_id() and int(r["record_version"]) == RECORD_VERSION for r in new)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A whole file of each kind, written by its sink."""
    folder = tmp_path_factory.mktemp("whole")
    out = {}
    for kind in ("jsonl", "csv"):
        _write(folder / f"r.{kind}", kind, 12)
        out[kind] = (folder / f"r.{kind}").read_bytes()
    return out


@pytest.mark.slow  # runs the CLI on real images per torn file
@pytest.mark.parametrize("kind", ["jsonl", "csv"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0, 1), nul=st.sampled_from([0, 0, 1, 7, 512, 4096, 70_000]))
def test_torn_file_repaired_on_append(written: dict[str, bytes], kind: str, cut: float, nul: int) -> None:
    """Torn at a random byte, NUL-padded or not: the append keeps every whole line before the tear, adds
    whole lines after it, and says so in one line exactly when it cut something."""
    whole = written[kind]
    torn = whole[: int(cut * len(whole))] + b"\0" * nul
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"t.{kind}"
        path.write_bytes(torn)
        said: list[str] = []
        _write(path, kind, 3, mode="append", warn=said.append)
        _check_file(path, kind, _whole(torn, kind), 3)
    if _whole(torn, kind) == torn:
        assert said == []
    else:
        assert len(said) == 1 and "\n" not in said[0] and "last whole line" in said[0]
        assert ("NUL" in said[0]) == (nul > 0)


def test_repair_waits_for_the_lock(tmp_path: Path) -> None:
    """A file another run holds (its line half-written as we look) is refused, never cut."""
    path = tmp_path / "held.jsonl"
    holder = AppendLog(path, "new")
    try:
        holder.write(b'{"a": 1}\n')
        with open(path, "ab") as f:
            f.write(b'{"half": ')
        with pytest.raises(UsageError, match="another run"):
            AppendLog(path, "append", warn=lambda m: pytest.fail(m))
        assert path.read_bytes() == b'{"a": 1}\n{"half": '
    finally:
        holder.close()


def test_repair_without_warn_prints_one_line(tmp_path: Path, capfd) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b"' + b"\0" * 100)
    AppendLog(path, "append").close()
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ") and "100 NUL byte(s)" in err
    assert "cut-off last line (4 bytes)" in err
    assert path.read_bytes() == b'{"a": 1}\n'


def test_csv_with_a_torn_header_gets_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    _write(path, "csv", 0)
    path.write_bytes(path.read_bytes()[:25] + b"\0" * 10)
    said: list[str] = []
    _write(path, "csv", 2, mode="append", warn=said.append)
    _check_file(path, "csv", b"", 2)
    assert len(said) == 1


def test_a_refused_append_leaves_the_torn_file_as_it_is(tmp_path: Path) -> None:
    """Other columns (another --topk), or a CSV of the version before run_id and seq: refused in one line,
    nothing cut."""
    path = tmp_path / "t.csv"
    _write(path, "csv", 3)
    torn = path.read_bytes()[:-9] + b"\0" * 30
    path.write_bytes(torn)
    with pytest.raises(UsageError, match="columns differ"):
        CsvSink(path, TOPK + 1, DATASETS, mode="append", warn=pytest.fail)
    assert path.read_bytes() == torn
    old = tmp_path / "v1.csv"
    old.write_bytes(b"name,label,dataset,score,top1_label,top1_dataset,top1_score,captured_at,frame_age_ms,name_b64\r\n"
                    b"a.png,red,warm,0.9,red,warm,0.9,,0.00,\r\n")
    with pytest.raises(UsageError, match="earlier erudite-edge") as e:
        CsvSink(old, 1, (), mode="append", warn=pytest.fail)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------
# through the real CLI
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_cli_append_repairs_a_torn_file(erudite: Bundle, folder: Path, tmp_path: Path, capsys, suffix: str) -> None:
    """`run -o FILE --append` (the README's systemd unit) after a tear at seeded random offsets, NUL-padded
    or not: one warning line, every line whole, the records before the tear kept."""
    rng = random.Random(25)
    base = tmp_path / f"base.{suffix}"
    assert main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(base), "--topk", "2"]) == 0
    whole = base.read_bytes()
    capsys.readouterr()
    for trial in range(4):
        out = tmp_path / f"t{trial}.{suffix}"
        cut = rng.randrange(1, len(whole))
        if whole[cut - 1:cut] == b"\n":
            cut -= 1  # torn inside a line
        torn = whole[:cut] + b"\0" * rng.choice([0, 3, 4096])
        out.write_bytes(torn)
        assert main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(out), "--topk", "2", "--append"]) == 0
        err = capsys.readouterr().err
        warnings = [line for line in err.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "last whole line" in warnings[0] and "Traceback" not in err, err
        data = out.read_bytes()
        kept = _whole(torn, "jsonl" if suffix == "jsonl" else "csv")
        assert data.startswith(kept) and b"\0" not in data
        if suffix == "jsonl":
            records = [json.loads(line) for line in data.decode().splitlines()]
            assert len(records) == kept.count(b"\n") + 4
        else:
            rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
            assert rows.count(rows[0]) == 1 and all(len(r) == len(rows[0]) for r in rows)
            records = [dict(zip(rows[0], r)) for r in rows[1:]]
        assert [int(r["seq"]) for r in records[-4:]] == [0, 1, 2, 3]


@pytest.mark.slow  # a child process
def test_a_restarted_service_gets_a_new_run_id(erudite: Bundle, folder: Path, tmp_path: Path) -> None:
    """Two processes appending to one torn file (the service restarted after a power cut): each record's
    (run_id, seq) is unique, the runs are told apart, and the restart said what it repaired."""
    out = tmp_path / "svc.jsonl"
    args = ["--bundle", str(erudite.root), str(folder), "-o", str(out), "--append"]
    cli = [sys.executable, "-m", "erudite_edge.cli.app", "run", *args]
    first = subprocess.run(cli, capture_output=True, text=True, env=child_env(headless=True), cwd=REPO, timeout=120)
    assert first.returncode == 0, first.stderr
    with open(out, "ab") as f:
        f.write(b'{"record_version": 2, "run_id": "' + b"\0" * 64)
    second = subprocess.run(cli, capture_output=True, text=True, env=child_env(headless=True), cwd=REPO, timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("warning:") == 1 and "64 NUL byte(s)" in second.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 8
    runs = [r["run_id"] for r in records]
    assert runs[0] == runs[3] != runs[4] == runs[7]
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", r) for r in runs)
    assert len({(r["run_id"], r["seq"]) for r in records}) == 8


# ------------------------------------------------------------------------------------------------
# the schema: one definition, README in step
# ------------------------------------------------------------------------------------------------
def test_seq_counts_results_without_gaps(erudite: Bundle, folder: Path, tmp_path: Path) -> None:
    """`index` is the item's place in its source (gaps for bad files, repeats for boxes); `seq` counts results;
    the CSV carries the same run_id and seq."""
    src = tmp_path / "mixed"
    src.mkdir()
    for p in sorted(folder.iterdir()):
        (src / p.name).write_bytes(p.read_bytes())
    write_bad_files(src)
    for suffix in ("jsonl", "csv"):
        out = tmp_path / f"roi.{suffix}"
        assert main(["run", "--bundle", str(erudite.root), str(src), "-o", str(out), "--roi", "0,0,8,8",
                     "--roi", "8,8,8,8"]) == 0
        if suffix == "jsonl":
            records = [json.loads(line) for line in out.read_text().splitlines()]
        else:
            records = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
        n = len(records)
        assert n >= 8 and n % 2 == 0
        assert [int(r["seq"]) for r in records] == list(range(n))
        indices = [int(r["index"]) for r in records] if suffix == "jsonl" else None
        if indices is not None:
            assert indices[0::2] == indices[1::2]  # two boxes per image share its index
            assert max(indices) + 1 > n // 2  # the bad files left gaps
        assert {r["run_id"] for r in records} == {run_id()}
        assert {str(r["record_version"]) for r in records} == {str(RECORD_VERSION)}


def test_records_follow_the_schema() -> None:
    r = _result(5)
    d = r.to_dict()
    assert list(d) == [k for k in JSONL_FIELDS if k in d]
    assert set(JSONL_FIELDS) - set(d) <= OPTIONAL_FIELDS
    assert csv_columns(1, ["warm"], boxes=True)[:10] == ["record_version", "run_id", "seq", "stream", "stream_uri",
                                                        "name", "box_x", "box_y", "box_w", "box_h"]
    assert d["stream"] == {"index": 0, "uri": ""}
    assert csv_header(TOPK, DATASETS) == csv_columns(TOPK, DATASETS)


def test_readme_lists_the_schema() -> None:
    """The docs' Result records table (docs/service.md): the JSONL keys in the schema's order, the version, the
    CSV columns."""
    section = doc_section("### Result records")
    keys = re.findall(r"^\| `([a-z_0-9]+)` \|", section, flags=re.M)
    assert tuple(keys) == JSONL_FIELDS
    assert f"version {RECORD_VERSION}" in section
    assert re.search(rf"^\| `record_version` \| {RECORD_VERSION} \|", section, flags=re.M)
    for col in csv_columns(1, ["DATASET"], boxes=True):
        assert f"`{col.replace('top1_', 'topR_')}`" in section, col
