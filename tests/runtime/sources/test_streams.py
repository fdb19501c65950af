"""Streams that come back: back-off, reconnect forever, losses with their durations, redacted
credentials, truncated videos, and a real RTSP server on 127.0.0.1 that is killed and restarted."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from erudite_edge.cli.app import main
from erudite_edge.core.redact import redact
from erudite_edge.sources.capture import CaptureSource
from erudite_edge.sources.live import Backoff
from erudite_edge.sources.open import open_source
from live_openers import opener_sequence
from onnx_fixtures import COLORS, make_erudite_bundle, write_video
from real_processes import CliRun, child_env, free_port, kill_left, needs_rtsp_server, start_rtsp_server


def test_backoff_doubles_from_1_to_30_seconds() -> None:
    assert [Backoff().delay(a) for a in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert Backoff(0.0).delay(5) == 0


def test_redact_hides_passwords_anywhere() -> None:
    assert redact("rtsp://admin:hunter2@10.0.0.5:554/h264") == "rtsp://admin:***@10.0.0.5:554/h264"
    assert redact("cannot open rtsp://u:p%40ss@cam/x (401)") == "cannot open rtsp://u:***@cam/x (401)"
    assert redact("rtsp://cam/x and /dev/video0") == "rtsp://cam/x and /dev/video0"


def test_reconnect_forever_with_backoff_and_timed_losses(tmp_path: Path) -> None:
    """A stream that drops, is gone for three tries, comes back, drops again: the waits double (injected
    sleep and clock, no real waiting), each loss is counted with its duration, nothing gives up."""
    clip = str(write_video(tmp_path / "cam.mp4", [COLORS["red"]] * 3))
    gone = str(tmp_path / "gone.mp4")
    opened: list[str] = []
    warnings: list[str] = []
    now = [0.0]
    slept: list[float] = []
    src: CaptureSource

    def sleep(seconds: float) -> bool:
        slept.append(seconds)
        now[0] += seconds
        if len(slept) == 8:
            src.stop()
            return True
        return False

    src = CaptureSource("rtsp://user:pw@cam/live", opener_sequence([clip, gone, gone, gone, clip, gone], opened),
                        kind="stream", live=True, open_error="x", reconnect=None, warn=warnings.append,
                        sleep=sleep, clock=lambda: now[0])
    items = list(src)
    assert len(items) == 6 and [it.index for it in items] == list(range(6))
    assert slept == [1, 2, 4, 8, 1, 2, 4, 8]
    assert src.losses == [15.0, 15.0] and src.reconnects == 8
    assert any("frames again after 15.0 s" in w for w in warnings)
    assert any("reconnecting (attempt 4/forever) in 8.0 s" in w for w in warnings)
    assert all("pw" not in w for w in warnings) and "user:***@" in src.describe()


def test_truncated_video_warns_it_ended_early(tmp_path: Path) -> None:
    path = tmp_path / "t.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (32, 24))
    rng = np.random.default_rng(0)
    for _ in range(60):
        writer.write(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    writer.release()
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    warnings: list[str] = []
    src = open_source(str(cut))
    src._warn = warnings.append  # type: ignore[attr-defined]
    n = len(list(src))
    assert 0 < n < 60 and src.ended_early
    assert warnings == [f"{cut}: ended early after {n} of the 60 frames its container announces; the file is "
                        "truncated or corrupt"]
    whole = open_source(str(path))
    assert len(list(whole)) == 60 and not whole.ended_early and whole.end_reason == "end of video"


def test_unreachable_stream_one_line_no_password(tmp_path: Path, capsys) -> None:
    bundle = make_erudite_bundle(tmp_path / "b")
    port = free_port()
    rc = main(["run", "--bundle", str(bundle.root), f"rtsp://admin:topsecret@127.0.0.1:{port}/live"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "topsecret" not in err
    assert "admin:***@" in err and "connection refused" in err


# ------------------------------------------------------------------------------------------------
# A real RTSP server (GStreamer's gst-rtsp-server) on 127.0.0.1
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow  # the real RTSP server
@needs_rtsp_server
def test_rtsp_stream_survives_a_server_restart(tmp_path: Path) -> None:
    """Classify a real RTSP stream, kill the server, start it again: the run reconnects and goes on
    classifying; the password never shows on stderr."""
    bundle = make_erudite_bundle(tmp_path / "b")
    port = free_port()
    uri = f"rtsp://viewer:s3cr3tpw@127.0.0.1:{port}/live"
    out = tmp_path / "s.jsonl"
    server = start_rtsp_server(port, "--auth", "viewer:s3cr3tpw")
    run = CliRun("run", "--bundle", str(bundle.root), uri, "-o", str(out), "--reconnect", "forever")

    def lines() -> int:
        return out.read_bytes().count(b"\n") if out.exists() else 0

    try:
        run.wait_for(lambda: lines() >= 5, "no results from the stream")
        server.kill()
        server.wait(timeout=10)
        run.wait_for(lambda: any("reconnecting" in s for s in run.lines), "the loss was not noticed")
        before = lines()
        server = start_rtsp_server(port, "--auth", "viewer:s3cr3tpw")
        run.wait_for(lambda: lines() >= before + 5, "no results after the server came back", timeout=90)
        run.wait_for(lambda: any("frames again after" in s for s in run.lines), "the loss was not logged")
        run.stop()
    finally:
        kill_left(run.proc, server)
    err = run.stderr
    assert run.proc.returncode == 128 + signal.SIGTERM, err
    assert "s3cr3tpw" not in err and "viewer:***@" in err
    assert "stream losses" in err and "Traceback" not in err
    import json

    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) >= before + 5 and all(r["label"] == "red" for r in records)


@pytest.mark.slow  # the real RTSP server
@needs_rtsp_server
def test_rtsp_401_is_one_line(tmp_path: Path, capsys) -> None:
    bundle = make_erudite_bundle(tmp_path / "b")
    port = free_port()
    server = start_rtsp_server(port, "--auth", "viewer:rightpw")
    try:
        rc = main(["run", "--bundle", str(bundle.root), f"rtsp://viewer:wrongpw@127.0.0.1:{port}/live"])
        err = capsys.readouterr().err
        rc_anonymous = main(["run", "--bundle", str(bundle.root), f"rtsp://127.0.0.1:{port}/live"])
        err_anonymous = capsys.readouterr().err
    finally:
        server.kill()
        server.wait(timeout=10)
    assert rc == 2 and err.count("\n") == 1, err
    assert "401" in err and "wrongpw" not in err and "viewer:***@" in err and "refused the credentials" in err
    assert rc_anonymous == 2 and err_anonymous.count("\n") == 1, err_anonymous
    assert "wants credentials (401" in err_anonymous and "USER:PASSWORD@" in err_anonymous


@pytest.mark.slow  # child processes
def test_sigterm_while_opening_a_silent_stream(tmp_path: Path) -> None:
    """A server that accepts and never answers: SIGTERM during the open ends the run (exit 143), no output
    file is left behind."""
    bundle = make_erudite_bundle(tmp_path / "b")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    port = silent.getsockname()[1]
    out = tmp_path / "never.jsonl"
    try:
        run = subprocess.Popen([sys.executable, "-m", "erudite_edge.cli.app", "run", "--bundle", str(bundle.root),
                                f"rtsp://u:pw@127.0.0.1:{port}/x", "-o", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        conn, _ = silent.accept()  # the run is opening the stream
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
        conn.close()
    finally:
        silent.close()
    assert run.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" in err and "Traceback" not in err and not out.exists()
