"""What the tests that start real processes share: the environment a child `erudite-edge` needs, free
ports on 127.0.0.1, and GStreamer's RTSP server (tests/rtsp_server.py, run by a Python that has PyGObject)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")


def child_env(*, headless: bool = False, one_thread: bool = False) -> dict[str, str]:
    """os.environ with the repository first on PYTHONPATH; `headless` drops DISPLAY (no window may open);
    `one_thread` pins OpenMP/MKL to one thread (float results that repeat run to run)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    if headless:
        env.pop("DISPLAY", None)
    if one_thread:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_python() -> str | None:
    """A Python that can import GStreamer's RTSP server (the venv's cannot: PyGObject comes from Debian)."""
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    for py in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if py and os.path.exists(py) and subprocess.run([py, "-c", probe], capture_output=True).returncode == 0:
            return py
    return None


RTSP_SERVER_PY = _server_python()
needs_rtsp_server = pytest.mark.skipif(
    RTSP_SERVER_PY is None,
    reason="GStreamer's RTSP server is not installed (Debian: apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
           "gstreamer1.0-plugins-base gstreamer1.0-plugins-good; `make test` installs them where apt-get works)")


def start_rtsp_server(port: int, *args: str, stderr: int | None = subprocess.PIPE) -> subprocess.Popen:
    """tests/rtsp_server.py on 127.0.0.1:port (args: --auth U:P, --record, ...), returned once it listens."""
    assert RTSP_SERVER_PY is not None
    proc = subprocess.Popen([RTSP_SERVER_PY, str(RTSP_SERVER), str(port), *args], stdout=subprocess.PIPE,
                            stderr=stderr, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (proc.stderr.read() if proc.stderr else "")
    return proc


class CliRun:
    """`python -m erudite_edge.cli.app ARGS` as a child process, its stderr collected line by line on a thread
    (so a long run never blocks on a full pipe, and a test can watch what it reports)."""

    def __init__(self, *args: str, stdout: int = subprocess.DEVNULL):
        self.proc = subprocess.Popen([sys.executable, "-m", "erudite_edge.cli.app", *args], stdout=stdout,
                                     stderr=subprocess.PIPE, text=True, env=child_env())
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)  # type: ignore[arg-type]
        self._reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_for(self, cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        """Until `cond()` holds; AssertionError saying `what` (and the run's stderr) if the run ends first or
        `timeout` seconds pass."""
        end = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"{what}: {self.stderr}")
            time.sleep(0.05)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a service manager stops it; its exit code once it has ended and its stderr is read."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.proc.returncode


def kill_left(*procs: subprocess.Popen) -> None:
    """Kill whichever of the processes still runs (a test's clean-up after a failure)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
