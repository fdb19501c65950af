"""Issue 25's smaller items: a run that classifies nothing, /dev/null as a source, OpenCV's own log lines,
a full stdout, click's range errors, and the live summary's read time."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from erudite_edge.sources.capture import quiet_video_logs
from real_processes import CliRun
from trained_model import cli, one_error_line


@pytest.mark.parametrize("kind", ["empty", "truncated"])
def test_a_lone_undecodable_jpeg_exits_1_with_one_line(erudite, tmp_path: Path, kind: str, capsys) -> None:
    image = tmp_path / f"{kind}.jpg"
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert ok
    image.write_bytes(b"" if kind == "empty" else buf.tobytes()[: len(buf) // 3])
    rc, out, err = cli(capsys, "run", "--bundle", erudite.root, image)
    assert rc == 1 and out == "", err
    assert err.strip().splitlines()[-1] == "error: nothing was classified: 1 file(s) skipped (undecodable or over --max-pixels)"
    assert "skipped (bad files)" in err  # the summary row, above the error line


def test_dev_null_as_a_source_is_diagnosed_as_a_device(erudite, capsys) -> None:
    rc, out, err = cli(capsys, "run", "--bundle", erudite.root, "/dev/null")
    line = one_error_line(err)
    assert rc == 2 and out == ""
    assert "/dev/null is not a V4L2 camera" in line and "no such file" not in line


def test_opencv_errors_are_kept_off_stderr(monkeypatch) -> None:
    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)
    before = cv2.utils.logging.getLogLevel()
    try:
        quiet_video_logs()
        assert cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_SILENT
    finally:
        cv2.utils.logging.setLogLevel(before)


@pytest.mark.slow  # the CLI in a child process
def test_a_full_stdout_is_named_stdout(erudite, tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.full((20, 20, 3), 200, np.uint8))
    with open("/dev/full", "w") as full:
        run = CliRun("run", "--bundle", str(erudite.root), str(image), stdout=full)
        run.proc.wait(timeout=60)
        run._reader.join(timeout=10)
    errors = [line for line in run.lines if line.startswith("error:")]
    assert run.proc.returncode == 2, run.stderr
    assert errors == ["error: stdout: cannot write: no space left on the device; free some space or choose another "
                      "folder\n"], run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("args, says", [
    (["--batch", "0"], "Invalid value for '--batch': Input should be greater than or equal to 1"),
    (["--min-confidence", "2"], "Invalid value for '--min-confidence': Input should be less than or equal to 1"),
    (["--bogus"], "No such option: --bogus"),
])
def test_option_errors_are_one_line_exit_2(erudite, args: list[str], says: str, capsys) -> None:
    rc, out, err = cli(capsys, "run", "--bundle", erudite.root, "x.jpg", *args)
    line = one_error_line(err)
    assert rc == 2 and out == "" and says in line and "run --help" in line


def test_the_live_summary_calls_frame_waiting_read_not_decode(erudite, tmp_path: Path, capsys) -> None:
    rc, _, err = cli(capsys, "run", "--bundle", erudite.root, "testsrc://30", "--limit", "3", "-o", tmp_path / "r.jsonl")
    assert rc == 0, err
    assert "read (wait + decode) ms/frame" in err and "│ decode ms/frame" not in err


@pytest.mark.slow  # a child process
def test_no_arguments_still_shows_the_help() -> None:
    import sys

    from real_processes import child_env

    done = subprocess.run([sys.executable, "-m", "erudite_edge.cli.app", "export"], capture_output=True, text=True,
                          env=child_env(), timeout=60)
    assert "Usage:" in done.stdout + done.stderr and "error:" not in done.stderr
