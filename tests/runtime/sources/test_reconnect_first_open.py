"""`--reconnect forever` when the first open fails (issue 25 item 5): an NVR not up yet at boot is retried
with the same back-off as a lost stream (one line per attempt, 1 s .. 30 s apart), classified once it comes
up, and SIGTERM still stops the wait promptly with the summary. Real processes, a real RTSP server."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from onnx_fixtures import make_erudite_bundle
from real_processes import CliRun, free_port, kill_left, needs_rtsp_server, start_rtsp_server
from trained_model import cli, one_error_line


def test_without_forever_a_first_open_that_fails_is_still_one_line_exit_2(tmp_path: Path, capsys) -> None:
    bundle = make_erudite_bundle(tmp_path / "b")
    rc, _, err = cli(capsys, "run", "--bundle", bundle.root, f"rtsp://127.0.0.1:{free_port()}/live", "--reconnect", "3")
    assert rc == 2 and "connection refused" in one_error_line(err)


@pytest.mark.slow  # the CLI in a child process
def test_forever_waits_for_a_stream_that_is_not_up_and_sigterm_stops_the_wait(tmp_path: Path) -> None:
    bundle = make_erudite_bundle(tmp_path / "b")
    out = tmp_path / "s.jsonl"
    run = CliRun("run", "--bundle", str(bundle.root), f"rtsp://admin:pw0rd@127.0.0.1:{free_port()}/live",
                 "-o", str(out), "--reconnect", "forever")
    try:
        run.wait_for(lambda: any("attempt 2/forever" in s for s in run.lines), "no second attempt", timeout=30)
        t0 = time.monotonic()
        rc = run.stop(timeout=20)
        stopped_in = time.monotonic() - t0
    finally:
        kill_left(run.proc)
    err = run.stderr
    assert rc == 128 + signal.SIGTERM, err
    assert stopped_in < 5, err  # not after the back-off's next wait (up to 30 s)
    first = [line for line in run.lines if "trying again" in line]
    assert len(first) == 1 and "connection refused" in first[0] and "pw0rd" not in err, err
    assert "frames classified" in err and "Traceback" not in err  # the summary
    attempts = [line for line in run.lines if "reconnecting (attempt" in line]
    assert 2 <= len(attempts) <= 3, err  # 1 s, then 2 s apart: not a flood


@pytest.mark.slow  # the real RTSP server
@needs_rtsp_server
def test_forever_classifies_a_stream_that_comes_up_later(tmp_path: Path) -> None:
    bundle = make_erudite_bundle(tmp_path / "b")
    port = free_port()
    out = tmp_path / "s.jsonl"
    run = CliRun("run", "--bundle", str(bundle.root), f"rtsp://127.0.0.1:{port}/live", "-o", str(out),
                 "--reconnect", "forever")
    server = None

    def lines() -> int:
        return out.read_bytes().count(b"\n") if out.exists() else 0

    try:
        run.wait_for(lambda: any("attempt 1/forever" in s for s in run.lines), "no retry", timeout=30)
        server = start_rtsp_server(port)  # the NVR comes up
        run.wait_for(lambda: lines() >= 5, "no results once the stream came up", timeout=90)
        rc = run.stop()
    finally:
        kill_left(run.proc, *([server] if server else []))
    err = run.stderr
    assert rc == 128 + signal.SIGTERM, err
    assert all(json.loads(r)["label"] == "red" for r in out.read_text().splitlines())
    assert "frames again after" in err and "Traceback" not in err
