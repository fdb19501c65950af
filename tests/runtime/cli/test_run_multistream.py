"""`erudite-edge run SRC SRC ...` (issue 29): several sources in one process, each result naming its stream,
per-stream --save, --sources-file, the usage errors (one line, exit 2, before the model loads), and a real
RTSP server dropped mid-run while a testsrc stream goes on."""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest

from erudite_edge.outputs.schema import RECORD_VERSION
from onnx_fixtures import COLORS, solid_image, write_image, write_video
from real_processes import CliRun, free_port, kill_left, needs_rtsp_server, start_rtsp_server
from trained_model import cli, one_error_line


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_several_sources_one_output(erudite, tmp_path: Path, capsys) -> None:
    """Positional sources, --source and --sources-file in that order; one JSON lines file with every stream's
    results, `seq` per stream; --save with {stream}: one folder per stream; the summary has a line per stream."""
    video = write_video(tmp_path / "red.mp4", [COLORS["red"]] * 10)
    folder = tmp_path / "imgs"
    for i in range(4):
        write_image(folder / f"c{i}.png", solid_image(COLORS["cyan"]))
    listing = tmp_path / "sources.txt"
    listing.write_text(f"# cameras\n\n  {folder}  \n")
    out = tmp_path / "out.jsonl"
    rc, _, err = cli(capsys, "run", "--bundle", erudite.root, "testsrc://30?frames=12&colors=0000ff", "--reconnect", "0",
                     "--source", video, "--sources-file", listing, "-o", out, "--save", tmp_path / "saved{stream}")
    assert rc == 0, err
    records = _records(out)
    by = defaultdict(list)
    for r in records:
        assert r["record_version"] == RECORD_VERSION == 3
        by[r["stream"]["index"]].append(r)
    assert {i: len(v) for i, v in by.items() if i} == {1: 10, 2: 4}  # files keep every frame
    assert 1 <= len(by[0]) <= 12  # the camera's frames not taken in time are dropped (a loaded machine)
    assert [r["stream"]["uri"] for r in (by[0][0], by[1][0], by[2][0])] == [
        "testsrc://30?frames=12&colors=0000ff", str(video), str(folder)]
    assert all([r["seq"] for r in by[i]] == list(range(len(by[i]))) for i in by)
    assert {r["label"] for r in by[0]} == {"blue"} and {r["label"] for r in by[1]} == {"red"}
    assert {r["label"] for r in by[2]} == {"cyan"}
    assert [len(list((tmp_path / f"saved{i}").iterdir())) for i in range(3)] == [len(by[0]), 10, 4]
    assert "3 streams" in err and f"stream 0 testsrc://30?frames=12&colors=0000ff: {len(by[0])} frames" in err
    assert "stream 1 " in err and "stream 2 " in err and "batch timeout" in err


def test_several_sources_usage_errors(erudite, tmp_path: Path, capsys) -> None:
    """What several sources cannot take, and a bad --sources-file: one line, exit 2, nothing written."""
    out = tmp_path / "o.jsonl"
    two = ("testsrc://30", "testsrc://15")
    cases = [
        (["--save", tmp_path / "all.mp4"], "put {stream} in the name"),
        (["--roi", "0,0,8,8"], "--roi / --crops-from classify regions of one source"),
        (["--save-attention", tmp_path / "att"], "--save-attention takes one source"),
        (["--sources-file", tmp_path / "missing.txt"], "--sources-file"),
        (["--batch-timeout-ms", "-1"], "--batch-timeout-ms"),
    ]
    for extra, words in cases:
        rc, _, err = cli(capsys, "run", "--bundle", erudite.root, *two, "-o", out, *extra)
        assert rc == 2, (extra, err)
        assert words in one_error_line(err), err
        assert not out.exists() and not (tmp_path / "all.mp4").exists()
    rc, _, err = cli(capsys, "run", "--bundle", erudite.root, "testsrc://30?frames=2", "--reconnect", "0",
                     "--batch-timeout-ms", "5", "-o", tmp_path / "one.jsonl")
    assert rc == 0 and sum("--batch-timeout-ms batches several sources" in line for line in err.splitlines()) == 1
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    rc, _, err = cli(capsys, "run", "--bundle", erudite.root, "--sources-file", empty)
    assert rc == 2 and "lists no source" in one_error_line(err)


def test_display_without_a_screen_is_one_warning_with_several_sources(erudite, tmp_path: Path, capsys,
                                                                       monkeypatch) -> None:
    """--display with several sources is one tiled window; where none can open (no DISPLAY here), one warning
    and the run goes on."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    rc, _, err = cli(capsys, "run", "--bundle", erudite.root, "testsrc://30?frames=3", "testsrc://30?frames=3",
                     "--reconnect", "0", "--display", "-o", tmp_path / "o.jsonl")
    assert rc == 0, err
    assert sum("--display: no display" in line for line in err.splitlines()) == 1
    assert {r["stream"]["index"] for r in _records(tmp_path / "o.jsonl")} == {0, 1}


@pytest.mark.slow  # the real RTSP server
@needs_rtsp_server
def test_rtsp_stream_dropped_mid_run_while_testsrc_goes_on(erudite, tmp_path: Path) -> None:
    """A real RTSP stream (with a password) beside a testsrc camera: the server is killed, the testsrc stream
    goes on being classified meanwhile, the server comes back and the RTSP stream with it; the password
    shows nowhere (records, stderr)."""
    port = free_port()
    uri = f"rtsp://viewer:s3cr3tpw@127.0.0.1:{port}/live"
    out = tmp_path / "s.jsonl"
    server = start_rtsp_server(port, "--auth", "viewer:s3cr3tpw")
    run = CliRun("run", "--bundle", str(erudite.root), uri, "testsrc://20?size=32x24&colors=0000ff", "-o", str(out),
                 "--reconnect", "forever")

    def count(stream: int) -> int:
        if not out.exists():
            return 0
        return sum(f'"stream": {{"index": {stream},'.encode() in line for line in out.read_bytes().splitlines())

    try:
        run.wait_for(lambda: count(0) >= 5 and count(1) >= 5, "no results from both streams")
        server.kill()
        server.wait(timeout=10)
        run.wait_for(lambda: any("reconnecting" in s for s in run.lines), "the loss was not noticed")
        rtsp_down, testsrc_down = count(0), count(1)
        time.sleep(2.0)
        assert count(1) >= testsrc_down + 10, "the testsrc stream stalled while the RTSP stream was down"
        assert count(0) <= rtsp_down + 2  # at most the frames already read before the loss was noticed
        server = start_rtsp_server(port, "--auth", "viewer:s3cr3tpw")
        run.wait_for(lambda: count(0) >= rtsp_down + 5, "no RTSP results after the server came back", timeout=90)
        run.stop()
    finally:
        kill_left(run.proc, server)
    err = run.stderr
    assert run.proc.returncode == 128 + signal.SIGTERM, err
    text = out.read_text()
    assert "s3cr3tpw" not in err and "s3cr3tpw" not in text and "Traceback" not in err
    records = _records(out)
    assert {r["stream"]["uri"] for r in records if r["stream"]["index"] == 0} == {
        f"rtsp://viewer:***@127.0.0.1:{port}/live"}
    assert {(r["stream"]["index"], r["label"]) for r in records} == {(0, "red"), (1, "blue")}
    assert "stream 0 rtsp://viewer:***@" in err and "1 loss(es)" in err
