"""The MQTT spool's durability (issue 29): each message fsynced before `put` returns (--spool-sync always, the
default), a writer killed with SIGKILL (a real child process) leaves every message it reported as spooled
whole and in order, and files a power cut cut short are removed at start, before anything new is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from erudite_edge.errors import UsageError
from erudite_edge.outputs.mqtt import MqttOptions
from erudite_edge.outputs.spool import Spool
from real_processes import child_env
from trained_model import cli, one_error_line

WRITER = """
import sys
from pathlib import Path
from erudite_edge.outputs.spool import Spool
spool = Spool(Path(sys.argv[1]), 10**9, sys.argv[2])
i = 0
while True:
    spool.put(f"site/cam{i % 3}", b'{"seq":%d,"pad":"%s"}' % (i, b"x" * (i % 700)))
    print(i, flush=True)  # reported as spooled: put has returned
    i += 1
"""


def all_taken(spool: Spool) -> list[tuple[int, str, bytes]]:
    out = []
    while (msg := spool.take()) is not None:
        out.append(msg)
    return out


def test_always_fsyncs_each_message_and_its_folder_before_put_returns(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:  # the real fsync, counted
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    spool = Spool(tmp_path / "always", 10**6)  # the default: always
    start = len(synced)
    for i in range(5):
        spool.put("t", b"%d" % i)
        assert len(synced) - start == 2 * (i + 1)  # the file, then the folder holding its new name
    spool.close()
    off = Spool(tmp_path / "off", 10**6, "off")
    before = len(synced)
    off.put("t", b"x")
    off.close()
    assert len(synced) == before


def test_a_writer_killed_with_sigkill_leaves_every_reported_message_in_order(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), "always"], stdout=subprocess.PIPE,
                            text=True, env=child_env())
    assert proc.stdout is not None
    reported = []
    for line in proc.stdout:
        reported.append(int(line))
        if len(reported) >= 60:
            break
    proc.send_signal(signal.SIGKILL)
    reported += [int(line) for line in proc.stdout]  # what it printed before the kill landed
    proc.wait(timeout=10)
    again = Spool(root, 10**9)
    msgs = all_taken(again)
    seqs = [int(p.split(b",")[0].split(b":")[1]) for _, _, p in msgs]
    assert seqs[:len(reported)] == reported and len(seqs) <= len(reported) + 1  # at most the one being written
    assert [n for n, _, _ in msgs] == sorted(n for n, _, _ in msgs)
    for n, topic, payload in msgs:
        assert topic == f"site/cam{n % 3}" and payload.endswith(b'"}') and again.torn == 0
    assert not list(root.glob("*.tmp"))  # a half-written one is removed at start
    assert again.put("t", b"next") > msgs[-1][0]
    again.close()


def test_files_a_power_cut_left_short_are_removed_before_anything_is_appended(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = Spool(root, 10**6, "off")
    numbers = [spool.put("site/cam", b'{"seq":%d}' % i) for i in range(4)]
    spool.close()
    # what a power cut under "off" leaves: names renamed into place whose data never reached the disk
    (root / f"{numbers[3]:016d}.msg").write_bytes(b"")
    (root / f"{numbers[2]:016d}.msg").write_bytes(b"site/c")
    (root / f"{numbers[3] + 1:016d}.tmp").write_bytes(b"site/cam\n{")
    again = Spool(root, 10**6)
    assert again.torn == 2 and again.recovered == 2 and len(again) == 2
    assert sorted(p.name for p in root.glob("*.msg")) == [f"{n:016d}.msg" for n in numbers[:2]]
    n = again.put("site/cam", b'{"seq":9}')
    assert n > numbers[3]
    assert [(t, p) for _, t, p in all_taken(again)] == [("site/cam", b'{"seq":0}'), ("site/cam", b'{"seq":1}'),
                                                       ("site/cam", b'{"seq":9}')]
    again.close()


def test_a_bad_sync_mode_is_one_line_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="--spool-sync sometimes: give always or off"):
        MqttOptions(spool_sync="sometimes")
    with pytest.raises(UsageError, match="--spool-sync"):
        Spool(tmp_path / "s", 10, "batch")
    folder = tmp_path / "imgs"
    folder.mkdir()
    rc, _, err = cli(capsys, "run", folder, "--bundle", tmp_path / "no-bundle", "-o", "mqtt://127.0.0.1:1/t",
                     "--spool-sync", "sometimes")
    assert rc == 2 and "--spool-sync sometimes" in one_error_line(err), err
