"""The processes of a server on this machine whose CPU time is a bench run's own work, not other work (issue 28).

`bench --triton HOST:PORT` measures a server that runs beside it: where HOST resolves to a loopback address the
server is on this machine, and its CPU time (the `tritonserver` process and its children, the Python backend's
`triton_python_backend_stub` processes) is the run's own work. benchmarks/load.py subtracts it from the machine's
busy time with the bench process's own, so that a run with nothing else on the machine can be called quiet.

The server is found as the process listening on PORT (its socket's inode in /proc/net/tcp or tcp6, then the
process holding that inode among /proc/PID/fd), or named with `--server-pid PID` (a server another user or a
container runs, whose descriptors this user cannot read). Its children are found anew at every reading (stubs
start when a model loads). CPU time: /proc/PID/stat's utime + stime + cutime + cstime (children that ended and
were waited for by a counted process stay counted), summed over the tree.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Callable

from erudite_edge.errors import UsageError

LISTEN = "0A"  # the TCP state column of /proc/net/tcp


def is_local(host: str) -> bool:
    """HOST resolves only to loopback addresses (127.0.0.0/8, ::1): the server runs on this machine."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None)
    except (socket.gaierror, UnicodeError):
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def listening_inodes(port: int, proc: str = "/proc") -> set[str]:
    """The inodes of the TCP sockets listening on `port` (any address, IPv4 and IPv6)."""
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc, "net", name)) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _pids(proc: str) -> list[int]:
    try:
        return [int(d) for d in os.listdir(proc) if d.isdigit()]
    except OSError:
        return []


def listening_pids(port: int, proc: str = "/proc") -> list[int]:
    """The processes holding a socket that listens on `port` (those whose descriptors this user can read)."""
    wanted = {f"socket:[{i}]" for i in listening_inodes(port, proc)}
    found = []
    for pid in _pids(proc) if wanted else []:
        fd_dir = os.path.join(proc, str(pid), "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # another user's process, or gone
            continue
        for fd in fds:
            try:
                if os.readlink(os.path.join(fd_dir, fd)) in wanted:
                    found.append(pid)
                    break
            except OSError:
                continue
    return sorted(found)


def _stat(pid: int, proc: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its waited-for children) from /proc/PID/stat; None if gone."""
    try:
        with open(os.path.join(proc, str(pid), "stat")) as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()  # the name may hold spaces and ')': the fields after its last ')'
    ticks = sum(int(v) for v in rest[11:15])  # utime stime cutime cstime (fields 14-17)
    return int(rest[1]), ticks / float(os.sysconf("SC_CLK_TCK"))


@dataclass(frozen=True)
class ServerProcesses:
    """A server's processes: `roots` and, at each reading, every process descended from them."""

    roots: tuple[int, ...]
    found_by: str  # how the roots were found, for the record: "listening on port 8000" or "--server-pid"
    proc: str = "/proc"

    def cpu(self) -> tuple[float, tuple[int, ...]]:
        """The tree's CPU seconds now and its pids (the roots and their living descendants)."""
        stats = {pid: s for pid in _pids(self.proc) if (s := _stat(pid, self.proc)) is not None}
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        tree, todo = [], [p for p in self.roots if p in stats]
        while todo:
            pid = todo.pop()
            if pid not in tree:
                tree.append(pid)
                todo += children.get(pid, [])
        return sum(stats[p][1] for p in tree), tuple(sorted(tree))


def find_server(host: str, port: int, server_pid: int | None = None, warn: Callable[[str], None] = lambda m: None,
                proc: str = "/proc") -> ServerProcesses | None:
    """The server's processes whose CPU time is the run's own: `server_pid`'s tree where given (UsageError if no
    such process), else the tree of whatever listens on `port` when `host` is this machine; None (and one
    warning where the server should have been found) when there is nothing to count."""
    if server_pid is not None:
        if server_pid < 1 or _stat(server_pid, proc) is None:
            raise UsageError(f"--server-pid {server_pid}: no such process on this machine; give the pid of the "
                             "running server (e.g. `pgrep -o tritonserver`)")
        return ServerProcesses((server_pid,), "--server-pid", proc)
    if not is_local(host):
        return None  # its CPU time is spent on another machine: nothing of it is in this one's /proc/stat
    pids = listening_pids(port, proc)
    if not pids:
        warn(f"warning: {host}:{port} is this machine, but no process this user can see listens on port {port} "
             "(a server run by another user or in a container?): its CPU time counts as other work and the run "
             "cannot be called quiet; give --server-pid PID")
        return None
    return ServerProcesses(tuple(pids), f"listening on port {port}", proc)
