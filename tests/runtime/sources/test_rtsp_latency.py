"""`--rtsp-latency-ms` (issue 29): rtspsrc's jitter buffer is an option, 0 by default. The pipeline string
carries it, the real GStreamer plays that very string from the real RTSP server (tests/rtsp_server.py) with
latency 200, a run with --rtsp-latency-ms 200 classifies the stream, and a bad value is one line, exit 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from erudite_edge.cli.app import main
from erudite_edge.errors import UsageError
from erudite_edge.sources.capture import check_rtsp_latency
from erudite_edge.sources.gst_pipelines import rtsp_candidates, rtsp_capture
from erudite_edge.sources.open import open_source
from onnx_fixtures import make_erudite_bundle
from real_processes import RTSP_SERVER_PY, CliRun, free_port, kill_left, needs_rtsp_server, start_rtsp_server

# Plays a capture pipeline string as OpenCV's GStreamer backend would (appsink pulled), with the Python that has
# PyGObject: prints rtspsrc's latency property and how many frames came.
PLAY = """
import sys
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
text = sys.argv[1].replace("rtspsrc ", "rtspsrc name=src ", 1).replace("appsink ", "appsink name=sink ", 1)
pipe = Gst.parse_launch(text)
src = pipe.get_by_name("src")
print("latency", src.get_property("latency"), flush=True)
pipe.set_state(Gst.State.PLAYING)
sink = pipe.get_by_name("sink")
n = 0
for _ in range(5):
    sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
    if sample is None:
        break
    caps = sample.get_caps().get_structure(0)
    n += 1
print("frames", n, caps.get_string("format") if n else "-", flush=True)
pipe.set_state(Gst.State.NULL)
"""


def test_the_pipeline_carries_the_latency_default_0() -> None:
    uri = "rtsp://127.0.0.1:8554/live"
    assert all("latency=0 " in p for p in rtsp_candidates(uri))
    assert all(f'rtspsrc location="{uri}" latency=200 ' in p for p in rtsp_candidates(uri, latency_ms=200))
    assert "latency=2000 " in rtsp_capture(uri, jetson=False, latency_ms=2000)
    import numpy as np

    assert check_rtsp_latency(np.int64(300)) == 300  # an API caller's numpy integer is a whole number too


@pytest.mark.parametrize("bad", [-1, 60_001, 1.5, "200", True])
def test_a_bad_latency_is_refused_before_anything_opens(bad: object) -> None:
    with pytest.raises(UsageError, match="--rtsp-latency-ms"):
        open_source("rtsp://127.0.0.1:1/live", rtsp_latency_ms=bad)  # type: ignore[arg-type]


def test_a_bad_latency_on_the_command_line_is_one_line_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bundle = make_erudite_bundle(tmp_path / "b")
    rc = main(["run", "--bundle", str(bundle.root), "rtsp://127.0.0.1:1/live", "--rtsp-latency-ms", "-5"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--rtsp-latency-ms -5" in err and "Traceback" not in err, err


@pytest.mark.slow  # a real RTSP server and GStreamer
@needs_rtsp_server
def test_real_gstreamer_plays_the_pipeline_with_latency_200() -> None:
    port = free_port()
    server = start_rtsp_server(port)
    try:
        pipeline = rtsp_capture(f"rtsp://127.0.0.1:{port}/live", jetson=False, latency_ms=200)
        done = subprocess.run([str(RTSP_SERVER_PY), "-c", PLAY, pipeline], capture_output=True, text=True, timeout=60)
    finally:
        server.kill()
        server.wait(timeout=10)
    assert done.returncode == 0, done.stderr
    assert "latency 200" in done.stdout and "frames 5 BGR" in done.stdout, done.stdout + done.stderr


@pytest.mark.slow  # a real RTSP server
@needs_rtsp_server
def test_a_run_with_latency_200_classifies_the_stream(tmp_path: Path) -> None:
    bundle = make_erudite_bundle(tmp_path / "b")
    port = free_port()
    out = tmp_path / "s.jsonl"
    server = start_rtsp_server(port)
    run = CliRun("run", "--bundle", str(bundle.root), f"rtsp://127.0.0.1:{port}/live", "-o", str(out),
                 "--rtsp-latency-ms", "200", "--limit", "5")
    try:
        run.proc.wait(timeout=90)
        run._reader.join(timeout=10)
    finally:
        kill_left(run.proc, server)
    assert run.proc.returncode == 0, run.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5 and all(r["label"] == "red" for r in records), records
    assert "Traceback" not in run.stderr
