"""A local server's CPU time is the bench run's own work, not other work (issue 28; benchmarks/server_processes.py
and benchmarks/load.py). Real processes: a "server" listening on a 127.0.0.1 port that burns CPU with a child of
its own (as tritonserver with its Python backend stub), and a process beside it burning CPU that is other work.
The real tritonserver: tests/serve/test_triton_server.py."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.load import LoadRecord, snapshot
from benchmarks.server_processes import ServerProcesses, find_server, is_local
from erudite_edge.errors import UsageError
from onnx_fixtures import make_erudite_bundle
from real_processes import free_port, kill_left
from trained_model import cli, one_error_line

BURN = "import time\nend = time.time() + 60\nwhile time.time() < end:\n    pass\n"
SERVER = f"""
import socket, subprocess, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
stub = subprocess.Popen([sys.executable, "-c", {BURN!r}])
print(stub.pid, flush=True)
exec({BURN!r})
"""


@pytest.mark.slow  # real processes burning CPU
def test_the_server_and_its_child_are_own_work_a_process_beside_them_is_other_work() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    beside = subprocess.Popen([sys.executable, "-c", BURN])
    stub_pid = 0
    try:
        assert server.stdout is not None
        stub_pid = int(server.stdout.readline())
        found = find_server("127.0.0.1", port)
        assert found is not None and found.roots == (server.pid,) and found.found_by == f"listening on port {port}"
        other_proc = ServerProcesses((beside.pid,), "the process beside")
        beside_before = other_proc.cpu()[0]
        a = snapshot(found)
        time.sleep(1.5)
        b = snapshot(found)
        beside_s = other_proc.cpu()[0] - beside_before
    finally:
        kill_left(server, beside)
        if stub_pid:  # the server's child, orphaned by its kill
            with contextlib.suppress(ProcessLookupError):
                os.kill(stub_pid, signal.SIGKILL)
        server.wait(timeout=10)
        beside.wait(timeout=10)
    counted = LoadRecord.between(a, b)
    plain = dataclasses.replace  # the same two readings with no server counted: what the record said before
    uncounted = LoadRecord.between(plain(a, server_cpu_s=None, server_pids=()), plain(b, server_cpu_s=None, server_pids=()))
    assert counted.server_pids == tuple(sorted((server.pid, stub_pid)))  # the child found too; not the process beside, not this one
    assert counted.server_cpu_s is not None and counted.server_cpu_s > 0.3, counted
    assert counted.other_fraction is not None and uncounted.other_fraction is not None
    share = counted.server_cpu_s / (counted.cores * counted.wall_s)  # the server's part of the cores' time
    assert uncounted.other_fraction - counted.other_fraction > 0.5 * share, (counted, uncounted)
    assert counted.other_fraction > 0.5 * beside_s / (counted.cores * counted.wall_s), (counted, beside_s)
    d = counted.to_dict()
    assert d["server_pids"] == sorted((server.pid, stub_pid)) and d["server_cpu_s"] == counted.server_cpu_s
    assert "server_pids" not in uncounted.to_dict()  # a run with no server: its record as before


def test_a_remote_host_counts_nothing_and_a_silent_local_port_warns() -> None:
    assert is_local("127.0.0.1") and is_local("localhost") and is_local("::1")
    assert not is_local("192.0.2.7") and not is_local("no-such-host.invalid")
    assert find_server("192.0.2.7", 8000) is None  # its CPU time is not this machine's
    said: list[str] = []
    assert find_server("127.0.0.1", free_port(), warn=said.append) is None
    assert len(said) == 1 and "--server-pid" in said[0] and "other work" in said[0]


def test_server_pid_names_the_server_or_is_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = find_server("10.1.2.3", 8000, child.pid)  # named: counted even where the host looks remote
        assert found is not None and found.cpu()[1] == (child.pid,) and found.found_by == "--server-pid"
    finally:
        child.kill()
        child.wait(timeout=10)
    with pytest.raises(UsageError, match="--server-pid 4194305: no such process"):
        find_server("127.0.0.1", 8000, 4_194_305)  # above Linux's largest pid
    bundle = make_erudite_bundle(tmp_path / "b")
    rc, _, err = cli(capsys, "bench", "--bundle", bundle.root, "--server-pid", "123", "--out", tmp_path / "o")
    assert rc == 2 and "--server-pid" in one_error_line(err) and "--triton" in one_error_line(err), err
    rc, _, err = cli(capsys, "bench", "--bundle", bundle.root, "--triton", "127.0.0.1:http", "--out", tmp_path / "o")
    assert rc == 2 and "HOST:PORT" in one_error_line(err), err
