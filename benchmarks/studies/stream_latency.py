"""How long after a result its annotated frame is decoded by a viewer, for `run --save rtsp://...`.

    python -m benchmarks.studies.stream_latency [--seconds 10] [--fps 20] [--size 640x480] [--out benchmarks/results]

A real `erudite-edge run` process classifies `testsrc://FPS?size=WxH` (solid colours, red and blue alternating
every 10 frames) with the tiny ONNX classifier of tests/onnx_fixtures and pushes the annotated video
with `--save rtsp://127.0.0.1:PORT/live` to GStreamer's RTSP server in record mode (tests/rtsp_server.py,
run by a Python with PyGObject), which decodes it and prints each frame's colour; this process stamps
each line as it arrives. Every change of colour is one sample: the time the first frame of the new colour
was decoded at the server minus the time its result was made (captured_at + frame_age_ms from `-o`).
Both clocks are this machine's. The writer is whichever `run` picks here (ffmpeg libx264 without an
OpenCV built with GStreamer). Percentiles with n (one run: no interval, no goal). The raw samples (every
change's latency, the counts, the load) go beside the JSON (stream_latency.samples.json.gz):
`python -m benchmarks.recompute OUT/stream_latency.json` re-derives every figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load import load_summary, recorded
from benchmarks.raw import RawSamples, rounded, write_result
from erudite_edge.core.fileio import write_text_atomic

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _colour(bgr: list[int]) -> str:
    return "red" if bgr[2] > bgr[0] else "blue"


def _changes(seq: list[tuple[float, str]]) -> list[tuple[float, str]]:
    out, last = [], None
    for t, c in seq:
        if c != last:
            out.append((t, c))
            last = c
    return out[1:]  # the first colour is no change


def measure(seconds: float, fps: int, size: str, work: Path) -> RawSamples:
    """One real `run --save rtsp://` process against the RTSP server: every colour change's latency (ms), the
    counts of results, changes and decoded frames, and the load over it (the child processes' CPU time,
    reaped before the load's second snapshot, is this study's own)."""
    sys.path.insert(0, str(REPO / "tests"))
    from onnx_fixtures import make_erudite_bundle
    from real_processes import RTSP_SERVER as SERVER
    from real_processes import RTSP_SERVER_PY as SERVER_PY

    if SERVER_PY is None:
        raise SystemExit("needs GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0)")
    bundle = make_erudite_bundle(work / "bundle")
    port = _free_port()
    loads: dict[str, dict[str, Any]] = {}
    received: list[tuple[float, str]] = []
    out = work / "r.jsonl"
    n = int(seconds * fps)
    with recorded(loads, "run and server"):
        server = subprocess.Popen([SERVER_PY, str(SERVER), str(port), "--record"], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"

        def read() -> None:
            for line in server.stdout:  # type: ignore[union-attr]
                if line.startswith("frame"):
                    received.append((time.time(), _colour([int(v) for v in line.split()[1:4]])))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        run = subprocess.run([sys.executable, "-m", "erudite_edge.cli.app", "run", "--bundle", str(bundle.root),
                              f"testsrc://{fps}?size={size}&colors=ff0000,0000ff&hold=10", "--limit", str(n),
                              "--save", f"rtsp://127.0.0.1:{port}/live", "-o", str(out)],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        time.sleep(1.0)
        server.terminate()
        server.wait(timeout=30)
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    results = []
    for line in out.read_text().splitlines():
        r = json.loads(line)
        made = dt.datetime.fromisoformat(r["captured_at"].replace("Z", "+00:00")).timestamp() + r["frame_age_ms"] / 1e3
        results.append((made, r["label"]))
    sent, got = _changes(results), _changes(list(received))
    lat = []
    for t_sent, c in sent:  # the first decoded change to that colour after the result
        later = [t for t, c2 in got if c2 == c and t >= t_sent - 0.002]
        if later:
            lat.append((later[0] - t_sent) * 1e3)
    return RawSamples("stream_latency", values={"latency_ms": rounded(lat), "changes_sent": len(sent),
                                                "changes_decoded": len(got), "results": len(results),
                                                "frames_decoded": len(received)}, loads=loads)


def derive(raw: RawSamples, settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure from the raw samples (what `python -m benchmarks.recompute` runs again): n and the
    latency percentiles (one run: no interval, no goal), the counts, the load."""
    v = raw.values
    a = np.asarray(v["latency_ms"])
    return {"n": int(a.size), **{k: v[k] for k in ("changes_sent", "changes_decoded", "results", "frames_decoded")},
            "latency_ms": {q: round(float(np.percentile(a, int(q[1:]))), 1) for q in ("p50", "p90", "p99")} if a.size else {},
            "load": load_summary(raw.load_records())}


def _writer() -> str:
    from erudite_edge.outputs.stream import choose_writer

    kind, exe = choose_writer()
    return "OpenCV's GStreamer writer" if kind == "gstreamer" else f"ffmpeg libx264 ({exe})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=20)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        raw = measure(args.seconds, args.fps, args.size, Path(tmp))
    settings = {"seconds": args.seconds, "fps": args.fps, "size": args.size}
    r = {"settings": settings, "writer": _writer(), "size": args.size, "fps": args.fps, **derive(raw, settings)}
    print(json.dumps(r, indent=1))
    write_result(args.out / "stream_latency.json", r, raw)
    lat = r["latency_ms"]
    write_text_atomic(args.out / "stream_latency.md",
        "# Result to decoded frame, `run --save rtsp://`\n\n"
        f"`python -m benchmarks.studies.stream_latency --seconds {args.seconds:g} --fps {args.fps} --size {args.size}` (see its "
        f"docstring), on the shared 2-core VM; writer: {r['writer']}. Both ends on 127.0.0.1, so this is the encoder's "
        "and the RTSP path's delay (plus the server's own decoding and colour read-out in Python), not a network's. "
        f"Load: {r['load']['label']}. Raw samples: stream_latency.samples.json.gz (`python -m benchmarks.recompute`).\n\n"
        "| n (colour changes) | p50 ms | p90 ms | p99 ms | results | frames decoded by the server |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        f"| {r['n']} | {lat.get('p50', '-')} | {lat.get('p90', '-')} | {lat.get('p99', '-')} | {r['results']} | "
        f"{r['frames_decoded']} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
