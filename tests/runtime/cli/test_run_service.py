"""`run` as a service: results never lost (real signals to real processes, a real full disk, a real
read-only folder, a second writer), non-UTF-8 names, answers (--min-confidence, --datasets, mass)."""

from __future__ import annotations

import base64
import contextlib
import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from erudite_edge.cli.app import main
from erudite_edge.core.bundle import Bundle
from erudite_edge.errors import OutputError, UsageError
from onnx_fixtures import COLORS, DATASETS, solid_image, write_image, write_video
from real_processes import child_env


def _env() -> dict[str, str]:
    return child_env(headless=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "erudite_edge.cli.app", "run", *args]


def _lines(path: Path) -> list[dict]:
    """Every line of a result file; each must be a whole JSON object."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "the file ends in a partial line"
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def _wait_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 60.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            got = path.read_bytes().count(b"\n")
            if got >= n:
                return got
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()[1]}")
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} results after {timeout} s")


@contextlib.contextmanager
def _mount_tmpfs(where: Path, options: str):
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount failed'}); needs root in a "
                    "container that allows mounts")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


# ------------------------------------------------------------------------------------------------
# -o: existing files, --append, --overwrite, the lock
# ------------------------------------------------------------------------------------------------
def test_existing_output_refused_unless_append_or_overwrite(erudite: Bundle, folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.jsonl"
    out.write_text('{"earlier": "run"}\n')
    assert main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--append" in err and "--overwrite" in err
    assert out.read_text() == '{"earlier": "run"}\n'  # untouched
    assert main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(out), "--append"]) == 0
    lines = _lines(out)
    assert lines[0] == {"earlier": "run"} and len(lines) == 5
    assert main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(out), "--overwrite"]) == 0
    assert len(_lines(out)) == 4
    assert main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(out), "--overwrite", "--append"]) == 2
    # CSV: --append keeps one header and refuses other columns
    csv_out = tmp_path / "p.csv"
    assert main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(csv_out), "--topk", "2"]) == 0
    assert main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(csv_out), "--topk", "2", "--append"]) == 0
    rows = list(csv.reader(csv_out.open(newline="")))
    assert len(rows) == 9 and rows.count(rows[0]) == 1
    capsys.readouterr()
    assert main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(csv_out), "--topk", "3", "--append"]) == 2
    assert "columns differ" in capsys.readouterr().err
    assert len(list(csv.reader(csv_out.open(newline="")))) == 9


@pytest.mark.slow  # child processes
def test_sigterm_like_ctrl_c_and_a_second_writer_is_refused(erudite: Bundle, tmp_path: Path, capsys) -> None:
    """A real run on a live source: a second run to the same -o is refused (one line, exit 2) while the first
    holds it; SIGTERM then stops the first cleanly: summary, exit 143, every result line whole."""
    out = tmp_path / "live.jsonl"
    proc = subprocess.Popen(_cli("--bundle", str(erudite.root), "testsrc://30", "-o", str(out), "--reconnect", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_lines(out, 3, proc)
        assert main(["run", "--bundle", str(erudite.root), "testsrc://30", "-o", str(out), "--append"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "another run is writing to it" in err
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err and "frames classified" in err and "Traceback" not in err
    assert "frame age p50 / p99" in err and "dropped frames" in err
    lines = _lines(out)
    reported = int(next(line for line in err.splitlines() if "frames classified" in line).split()[-2])
    assert len(lines) == reported >= 3
    for r in lines:
        assert r["captured_at"].endswith("Z") and r["frame_age_ms"] >= 0
        assert set(r["datasets"]) == set(DATASETS) and abs(sum(r["datasets"].values()) - 1) < 1e-4
    # the lock went with the process: appending works now
    assert main(["run", "--bundle", str(erudite.root), "testsrc://30?frames=3", "-o", str(out), "--append",
                 "--reconnect", "0"]) == 0
    assert len(_lines(out)) == reported + 3


@pytest.mark.slow  # child processes
def test_sighup_stops_like_ctrl_c(erudite: Bundle, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    proc = subprocess.Popen(_cli("--bundle", str(erudite.root), "testsrc://30", "-o", str(out)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_lines(out, 3, proc)  # header + 2 results
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert "interrupted (SIGHUP)" in err
    rows = list(csv.DictReader(out.open(newline="")))
    reported = int(next(line for line in err.splitlines() if "frames classified" in line).split()[-2])
    assert len(rows) == reported >= 2 and all(r["label"] in COLORS for r in rows)


@pytest.mark.slow  # child processes
def test_a_second_signal_stops_at_once(erudite: Bundle, tmp_path: Path) -> None:
    """README: "A second signal stops at once". A real run writing JSON lines to a real pipe nobody reads (a
    consumer that hangs): its write blocks, so the first SIGTERM, which waits for the batch in hand, cannot
    end the run; the second ends it at once, with the summary and exit 143."""
    import fcntl
    import struct
    import termios

    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(100):
        write_image(images / f"{i:03d}.png", solid_image(COLORS["red"]))
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)  # a few records fill it
    err_path = tmp_path / "err.txt"
    with err_path.open("w") as err_file:
        proc = subprocess.Popen(_cli("--bundle", str(erudite.root), str(images), "--batch", "1", "--workers", "1"),
                                stdout=write_end, stderr=err_file, env=_env())
    os.close(write_end)
    try:
        def queued() -> int:
            return struct.unpack("i", fcntl.ioctl(read_end, termios.FIONREAD, b"\0" * 4))[0]

        last, still, end = -1, 0, time.monotonic() + 60
        while still < 10:  # the pipe full and nothing moving for 1 s: the run is blocked in its write
            assert time.monotonic() < end and proc.poll() is None, err_path.read_text()
            n = queued()
            still, last = (still + 1 if n == last and n > 0 else 0), n
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=2)  # the first signal waits for the batch in hand, which cannot finish
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)
    err = err_path.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert took < 10, took
    assert "interrupted (SIGTERM)" in err and "frames classified" in err and "Traceback" not in err


@pytest.mark.slow  # child processes
def test_sigkill_keeps_every_complete_line(erudite: Bundle, tmp_path: Path) -> None:
    """SIGKILL mid-run over a folder: whatever was seen in the file before the kill is there, and whole."""
    images = tmp_path / "many"
    images.mkdir()
    tile = solid_image(COLORS["yellow"])
    for i in range(1500):
        write_image(images / f"img{i:04d}.png", tile)
    out = tmp_path / "k.jsonl"
    proc = subprocess.Popen(_cli("--bundle", str(erudite.root), str(images), "-o", str(out), "--batch", "1",
                                 "--workers", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        seen = _wait_lines(out, 20, proc)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = _lines(out)  # every line parses, the file ends in a newline
    assert 1500 > len(lines) >= seen  # killed mid-run, nothing seen before the kill lost
    assert [r["index"] for r in lines] == list(range(len(lines)))
    assert all(r["label"] == "yellow" for r in lines)
    # README: "the lock dies with the process, so nothing stale is left behind" (a SIGKILL included)
    one = tmp_path / "one"
    one.mkdir()
    write_image(one / "red.png", solid_image(COLORS["red"]))
    assert main(["run", "--bundle", str(erudite.root), str(one), "-o", str(out), "--append"]) == 0
    assert len(_lines(out)) == len(lines) + 1


def test_fsync_on_a_timer_and_at_close(tmp_path: Path, monkeypatch) -> None:
    from erudite_edge.outputs import result_log

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(result_log.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    log = result_log.AppendLog(tmp_path / "x.jsonl", fsync_interval=0.05)
    time.sleep(0.2)
    assert synced == []  # nothing written, nothing to sync
    log.write(b'{"a": 1}\n')
    deadline = time.monotonic() + 5
    while not synced and time.monotonic() < deadline:
        time.sleep(0.01)
    assert synced, "the timer did not fsync"
    n = len(synced)
    log.close()
    assert len(synced) == n + 1  # and once more at close
    assert (tmp_path / "x.jsonl").read_bytes() == b'{"a": 1}\n'


# ------------------------------------------------------------------------------------------------
# A full disk, a read-only folder
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow  # a child process
def test_disk_full_real_tmpfs(erudite: Bundle, tmp_path: Path) -> None:
    """A real 16 KiB tmpfs fills up mid-run: one line, exit 2, every result written before kept whole."""
    video = write_video(tmp_path / "v.mp4", [COLORS["red"], COLORS["blue"]] * 150, size=(16, 16))
    with _mount_tmpfs(tmp_path / "small", "size=16k") as small:
        out = small / "p.jsonl"
        proc = subprocess.run(_cli("--bundle", str(erudite.root), str(video), "-o", str(out)),
                              capture_output=True, text=True, env=_env(), timeout=120)
        assert proc.returncode == 2, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "no space left" in errors[0] and "Traceback" not in proc.stderr
        lines = _lines(out)
        assert 0 < len(lines) < 300 and f"the {len(lines)} result(s) written before are kept" in errors[0]
        assert [r["index"] for r in lines] == list(range(len(lines)))


def test_disk_full_injected_half_line_is_cut_back(tmp_path: Path, monkeypatch) -> None:
    """ENOSPC injected into os.write after part of a line (what a real disk does at its last block):
    the half line is removed, the error is an OutputError naming the file."""
    from erudite_edge.outputs import result_log

    log = result_log.AppendLog(tmp_path / "x.jsonl")
    log.write(b'{"first": 1}\n')
    real_write = os.write
    calls = {"n": 0}

    def filling(fd: int, data) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(result_log.os, "write", filling)
    with pytest.raises(OutputError, match="no space left.*1 result"):
        log.write(b'{"second": 2}\n')
    monkeypatch.setattr(result_log.os, "write", real_write)
    log.close()
    assert (tmp_path / "x.jsonl").read_bytes() == b'{"first": 1}\n'


@pytest.mark.slow  # a child process
def test_read_only_output_folder(erudite: Bundle, folder: Path, tmp_path: Path, capsys) -> None:
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        ctx: contextlib.AbstractContextManager = contextlib.nullcontext(ro)
    else:  # root writes through permission bits: a real read-only mount
        ctx = _mount_tmpfs(tmp_path / "ro", "ro,size=16k")
    with ctx as ro:
        rc = main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(ro / "p.jsonl")])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "cannot create it" in err and "writable" in err


# ------------------------------------------------------------------------------------------------
# Names that are not UTF-8
# ------------------------------------------------------------------------------------------------
def test_non_utf8_file_names_round_trip(erudite: Bundle, tmp_path: Path, capsys) -> None:
    raw_dir = os.fsencode(tmp_path / "imgs")
    os.mkdir(raw_dir)
    raw_name = b"caf\xe9_red.png"  # Latin-1, not UTF-8
    ok, buf = __import__("cv2").imencode(".png", solid_image(COLORS["red"])[:, :, ::-1])
    assert ok
    with open(os.path.join(raw_dir, raw_name), "wb") as f:
        f.write(buf.tobytes())
    write_image(tmp_path / "imgs" / "plain_cyan.png", solid_image(COLORS["cyan"]))
    src = os.fsdecode(raw_dir)
    for suffix in ("jsonl", "csv"):
        out = tmp_path / f"p.{suffix}"
        assert main(["run", "--bundle", str(erudite.root), src, "-o", str(out)]) == 0, capsys.readouterr().err
        if suffix == "jsonl":
            records = {r["label"]: r for r in _lines(out)}
            back = base64.b64decode(records["red"]["name_b64"])
            assert "\ufffd" in records["red"]["name"] and "name_b64" not in records["cyan"]
        else:
            rows = {r["label"]: r for r in csv.DictReader(out.open(newline="", encoding="utf-8"))}
            back = base64.b64decode(rows["red"]["name_b64"])
            assert rows["cyan"]["name_b64"] == ""
        assert back == os.path.join(raw_dir, raw_name)  # the exact bytes
    capsys.readouterr()


# ------------------------------------------------------------------------------------------------
# Answers: --min-confidence, --datasets, per-data-set mass
# ------------------------------------------------------------------------------------------------
def test_min_confidence_datasets_and_mass(erudite: Bundle, folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "a.jsonl"
    assert main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(out), "--datasets", "warm"]) == 0
    for r in _lines(out):
        assert set(r["datasets"]) == {"warm"} and r["datasets"]["warm"] == pytest.approx(1.0, abs=1e-5)
        assert {p["dataset"] for p in r["predictions"]} == {"warm"} and len(r["predictions"]) == 2
        assert r["dataset"] == "warm"
    out2 = tmp_path / "b.jsonl"
    assert main(["run", "--bundle", str(erudite.root), str(folder), "-o", str(out2), "--min-confidence", "1.0"]) == 0
    for r in _lines(out2):
        assert r["label"] == "unknown" and r["dataset"] == ""
        assert r["predictions"][0]["label"] in COLORS  # the top-k is still there
    capsys.readouterr()
    assert main(["run", "--bundle", str(erudite.root), str(folder), "--datasets", "birds"]) == 2
    assert "warm, cool" in capsys.readouterr().err


def test_smoothing_averages_the_last_n_frames() -> None:
    from erudite_edge.inference.answers import Answerer
    from onnx_fixtures import label_space

    labels = label_space()
    a = Answerer(labels, 2, smooth=3)
    with np.errstate(divide="ignore"):
        one_hot = np.log(np.eye(4, dtype=np.float32))  # an Answerer takes log-probabilities
    assert a(one_hot[[0]])[0].label == "red"
    assert a(one_hot[[2]])[0].score == pytest.approx(0.5)
    got = a(one_hot[[2, 2]])  # window: 0, 2, 2 then 2, 2, 2
    assert got[0].label == "blue" and got[0].score == pytest.approx(2 / 3)
    assert got[1].score == pytest.approx(1.0)
    assert got[0].dataset_mass == pytest.approx({"warm": 1 / 3, "cool": 2 / 3})
    with pytest.raises(UsageError):
        Answerer(labels, 2, min_confidence=1.5)
