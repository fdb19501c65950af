"""A result file bounded on disk for a service that writes for weeks (issue 25 item 9): `--rotate-mb N --keep K`
rotates at a whole record under the file's lock (CSV: a header in every file), a real SIGKILL at every step
of a rotation leaves whole files and no record lost, and logrotate's `copytruncate` (the real binary, against
a real `erudite-edge run`) works with the lock."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from erudite_edge.cli.app import main
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.scores import ClassScore
from erudite_edge.errors import OutputError, UsageError
from erudite_edge.outputs.records import CsvSink, JsonlSink
from erudite_edge.outputs.result_log import AppendLog
from erudite_edge.outputs.results import Result
from erudite_edge.outputs.rotation import MIB, Rotation, rotated
from erudite_edge.sources.base import Item
from paths import doc_text
from real_processes import CliRun, child_env
from trained_model import one_error_line

DATASETS = ["warm", "cool"]
ROTATION = Rotation(2000 / MIB, keep=3)  # about 2000 bytes: a JSON record is ~330, a CSV row ~150


def _result(i: int) -> Result:
    preds = [ClassScore(1, 0, "red", "warm", 0.75), ClassScore(2, 3, "blue", "cool", 0.25)]
    return Result(i, f"img{i}.png", preds, dataset_mass={"warm": 0.75, "cool": 0.25}, seq=i)


def _sink(path: Path, mode: str = "new", rotation: Rotation | None = ROTATION):
    if path.suffix == ".csv":
        return CsvSink(path, 2, DATASETS, mode=mode, rotation=rotation)
    return JsonlSink(path, mode=mode, rotation=rotation)


def _files(path: Path) -> list[Path]:
    """FILE.K ... FILE.1, FILE that exist: oldest first."""
    older = sorted((p for p in path.parent.glob(path.name + ".*") if p.name.rsplit(".", 1)[1].isdigit()),
                   key=lambda p: -int(p.name.rsplit(".", 1)[1]))
    return older + ([path] if path.exists() else [])


def _records(path: Path, header: bytes | None) -> list[int]:
    """The seq of every record in one file; each line whole, a CSV file starting with its header."""
    data = path.read_bytes()
    term = b"\r\n" if header is not None else b"\n"
    assert data == b"" or data.endswith(term), f"{path.name} ends in a partial line"
    lines = data.split(term)[:-1]
    if header is not None:
        assert lines and lines[0] + term == header, f"{path.name} has no header"
        return [int(line.split(b",")[2]) for line in lines[1:]]
    return [json.loads(line)["seq"] for line in lines]


def _header(path: Path) -> bytes | None:
    return None if path.suffix == ".jsonl" else _files(path)[-1].read_bytes().split(b"\r\n")[0] + b"\r\n"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_rotation_bounds_every_file_at_a_whole_record(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    sink = _sink(path)
    for i in range(100):
        sink.write(_result(i), Item(i, f"img{i}.png", None))
    assert sink._log.rotations >= 5
    with pytest.raises(UsageError, match="another run is writing to it"):  # the new FILE is locked too
        AppendLog(path, "append")
    sink.commit()
    files = _files(path)
    assert [p.name for p in files] == [f"out{suffix}.3", f"out{suffix}.2", f"out{suffix}.1", f"out{suffix}"]
    header = _header(path)
    seqs = [_records(p, header) for p in files]
    assert all(p.stat().st_size <= ROTATION.max_bytes for p in files)
    assert all(len(s) >= 2 for s in seqs[:-1])  # full files, not one record each
    flat = [s for file_seqs in seqs for s in file_seqs]
    assert flat == list(range(flat[0], 100)) and flat[0] > 0  # in order, no gap; the oldest files dropped
    # a restart with --append goes on in FILE, rotating further
    sink = _sink(path, "append")
    for i in range(100, 130):
        sink.write(_result(i), Item(i, f"img{i}.png", None))
    sink.commit()
    flat = [s for p in _files(path) for s in _records(p, header)]
    assert flat == list(range(flat[0], 130))
    assert not list(tmp_path.glob(".*"))  # no temporary left


def test_a_record_larger_than_the_bound_gets_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    log = AppendLog(path, rotation=Rotation(100 / MIB, keep=2))
    for i in range(3):
        log.write(json.dumps({"seq": i, "pad": "x" * 300}).encode() + b"\n")
    log.close()
    assert [len(_records(p, None)) for p in _files(path)] == [1, 1, 1]


# A child that writes records through a rotating AppendLog and SIGKILLs itself at the N-th os.replace of
# the rotations (before it, or with "after", just after it): every step of a rotation, for real.
CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from erudite_edge.core.scores import ClassScore
    from erudite_edge.outputs.records import CsvSink, JsonlSink
    from erudite_edge.outputs.results import Result
    from erudite_edge.outputs.rotation import MIB, Rotation
    from erudite_edge.sources.base import Item

    def _result(i):  # as the test's
        preds = [ClassScore(1, 0, "red", "warm", 0.75), ClassScore(2, 3, "blue", "cool", 0.25)]
        return Result(i, f"img{i}.png", preds, dataset_mass={"warm": 0.75, "cool": 0.25}, seq=i)

    path, at, when = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    real_replace, calls = os.replace, [0]

    def replace(src, dst):
        calls[0] += 1
        if calls[0] == at and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            real_replace(src, dst)  # FILE.1 -> FILE.2 fails in the first rotation: FileNotFoundError
        finally:
            if calls[0] == at and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)

    rotation = Rotation(2000 / MIB, keep=3)
    sink = (CsvSink(path, 2, ["warm", "cool"], rotation=rotation) if path.suffix == ".csv"
            else JsonlSink(path, rotation=rotation))
    os.replace = replace
    for i in range(1000):
        print(i, flush=True)  # the record about to be written
        sink.write(_result(i), Item(i, f"img{i}.png", None))
""")


@pytest.mark.slow  # a child process
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_sigkill_at_every_step_of_a_rotation_leaves_whole_files(tmp_path: Path, suffix: str) -> None:
    """Rotations 1 and 2 (3 os.replace each: FILE.1 -> FILE.2 (missing in the first), FILE -> FILE.1, the new
    FILE into place); a kill before and after each. Every file whole (CSV: its header), no record lost or
    repeated, and a restart with --append goes on and removes the killed run's temporary."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    for at in range(1, 7):
        for when in ("before", "after"):
            case = tmp_path / f"{at}{when}"
            case.mkdir()
            path = case / f"out{suffix}"
            proc = subprocess.run([sys.executable, str(script), str(path), str(at), when],
                                  capture_output=True, text=True, env=child_env(), timeout=60)
            assert proc.returncode == -signal.SIGKILL, proc.stderr
            attempted = int(proc.stdout.split()[-1])  # the write the kill interrupted, in its rotation
            header = _header(path)
            flat = [s for p in _files(path) for s in _records(p, header)]
            assert flat == list(range(attempted)), (at, when, [p.name for p in _files(path)])
            sink = _sink(path, "append")
            sink.write(_result(attempted), Item(attempted, "x.png", None))
            sink.commit()
            flat = [s for p in _files(path) for s in _records(p, header)]
            assert flat == list(range(attempted + 1)), (at, when)
            assert not list(case.glob(".*")), (at, when)  # the killed run's new file removed


def test_cli_rotate_options_are_one_line(erudite: Bundle, tmp_path: Path, capsys) -> None:
    null = tmp_path / "null.jsonl"
    null.symlink_to("/dev/null")
    for args, words in [(["--rotate-mb", "0"], "--rotate-mb 0.0: give a size in MiB above 0"),
                        (["--rotate-mb", "nan"], "give a size in MiB above 0"),
                        (["--rotate-mb", "1", "--keep", "0"], "--keep 0: keep 1 or more rotated files"),
                        (["--keep", "3", "-o", str(tmp_path / "a.jsonl")], "--keep counts the files --rotate-mb makes"),
                        (["--rotate-mb", "1"], "--rotate-mb bounds a result file: give -o"),
                        (["--rotate-mb", "1", "-o", str(null), "--overwrite"], "not a regular file; nothing to rotate")]:
        capsys.readouterr()
        rc = main(["run", "--bundle", str(erudite.root), "testsrc://30", "--limit", "1", *args])
        err = capsys.readouterr().err
        assert rc == 2 and words in one_error_line(err), (args, err)
    assert not (tmp_path / "a.jsonl").exists() and null.is_symlink() and os.path.exists("/dev/null")


def test_cli_rotates_a_real_run(erudite: Bundle, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.csv"
    rc = main(["run", "--bundle", str(erudite.root), "testsrc://200?size=32x24", "--limit", "120", "-o", str(out),
               "--rotate-mb", str(4000 / MIB), "--keep", "2"])
    assert rc == 0, capsys.readouterr().err
    files = _files(out)
    assert [p.name for p in files] == ["r.csv.2", "r.csv.1", "r.csv"]
    header = _header(out)
    flat = [s for p in files for s in _records(p, header)]
    assert flat == list(range(flat[0], 120)) and all(p.stat().st_size <= 4000 for p in files)


def test_a_file_cut_by_another_program_is_written_from_its_new_end(tmp_path: Path) -> None:
    """What logrotate's copytruncate does, by hand: the file cut to 0 while the run holds it. Before the fix a
    CSV went on without its header."""
    path = tmp_path / "c.csv"
    sink = _sink(path, rotation=None)
    for i in range(5):
        sink.write(_result(i), Item(i, "x.png", None))
    header = _header(path)
    shutil.copyfile(path, tmp_path / "c.csv.1")
    os.truncate(path, 0)
    for i in range(5, 8):
        sink.write(_result(i), Item(i, "x.png", None))
    sink.commit()
    assert _records(path, header) == [5, 6, 7]
    assert _records(tmp_path / "c.csv.1", header) == [0, 1, 2, 3, 4]


def test_a_failed_write_after_a_cut_is_cut_back_to_the_new_end(tmp_path: Path, monkeypatch) -> None:
    """Before the fix the half line was 'cut back' to the size before the cut: the file grew NUL bytes."""
    from erudite_edge.outputs import result_log

    path = tmp_path / "x.jsonl"
    log = AppendLog(path)
    for i in range(3):
        log.write(b'{"seq": %d}\n' % i)
    os.truncate(path, 0)
    log.write(b'{"seq": 3}\n')
    real_write, calls = os.write, [0]

    def filling(fd: int, data) -> int:
        calls[0] += 1
        if calls[0] == 1:
            return real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(result_log.os, "write", filling)
    with pytest.raises(OutputError, match="no space left"):
        log.write(b'{"seq": 4}\n')
    monkeypatch.setattr(result_log.os, "write", real_write)
    log.close()
    assert path.read_bytes() == b'{"seq": 3}\n'


# -- logrotate's copytruncate, the real binary, against a real run ----------------------------------------
LOGROTATE = shutil.which("logrotate") or next((p for p in ("/usr/sbin/logrotate", "/sbin/logrotate")
                                                if os.path.exists(p)), None)


@pytest.mark.slow  # the CLI in a child process
@pytest.mark.skipif(LOGROTATE is None, reason="logrotate is not installed (Debian: apt-get install logrotate)")
def test_logrotate_copytruncate_recipe_with_a_real_run(erudite: Bundle, tmp_path: Path) -> None:
    """The README's recipe: logrotate copies the file and cuts it while `run` holds it (its lock and fd stay
    on the same file); the run goes on at the file's new start, both files whole, a second run still refused."""
    out = tmp_path / "results.jsonl"
    run = CliRun("run", "--bundle", str(erudite.root), "testsrc://60?size=32x24", "-o", str(out))
    try:
        run.wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 20, "20 results", 60)
        conf = tmp_path / "erudite.logrotate"
        conf.write_text(README_RECIPE.replace("/var/lib/erudite/results.jsonl", str(out)))
        done = subprocess.run([LOGROTATE, "--force", "--state", str(tmp_path / "state"), str(conf)],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        rotated_size = rotated(out, 1).stat().st_size
        run.wait_for(lambda: out.read_bytes().count(b"\n") >= 10, "10 results after the rotation", 60)
        with pytest.raises(UsageError, match="another run is writing to it"):
            AppendLog(out, "append")
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=30) == 143
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    old, new = _records(rotated(out, 1), None), _records(out, None)
    assert old == list(range(len(old))) and rotated_size > 0
    # the file went on from its new start; lines written between logrotate's copy and its cut are lost
    assert new == list(range(new[0], new[0] + len(new))) and new[0] >= len(old)


@pytest.mark.slow  # the CLI in a child process
@pytest.mark.skipif(LOGROTATE is None, reason="logrotate is not installed (Debian: apt-get install logrotate)")
def test_logrotate_without_copytruncate_leaves_the_run_writing_the_renamed_file(erudite: Bundle, tmp_path: Path) -> None:
    """README: "Without `copytruncate` logrotate renames the file and the run goes on writing the renamed
    one" (its descriptor follows the file): the real logrotate, the recipe less `copytruncate`."""
    out = tmp_path / "results.jsonl"
    run = CliRun("run", "--bundle", str(erudite.root), "testsrc://60?size=32x24", "-o", str(out))
    try:
        run.wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") >= 10, "10 results", 60)
        conf = tmp_path / "erudite.logrotate"
        recipe = README_RECIPE.replace("/var/lib/erudite/results.jsonl", str(out))
        conf.write_text(recipe.replace("    copytruncate\n", ""))
        assert "copytruncate" not in conf.read_text()
        done = subprocess.run([LOGROTATE, "--force", "--state", str(tmp_path / "state"), str(conf)],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        renamed = rotated(out, 1)
        size = renamed.stat().st_size
        run.wait_for(lambda: renamed.stat().st_size > size + 200, "results after the rename", 60)
        assert not out.exists()  # nothing was written under the old name
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=30) == 143
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    seqs = _records(renamed, None)
    assert seqs == list(range(len(seqs))) and not out.exists()


def _readme_recipe() -> str:
    text = doc_text()  # the recipe lives in docs/service.md
    start = text.index("```\n/var/lib/erudite/results.jsonl {")
    return text[start + 4: text.index("```", start + 4)]


README_RECIPE = _readme_recipe()
