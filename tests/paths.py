"""Where things are, for tests in any folder under tests/: the repository root and the tests folder
(which holds the shared helper modules: real_processes.py, gst_feed.py, rtsp_server.py, ...)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
