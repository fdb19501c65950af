"""The MQTT output's spool: every result is a file in a folder before it is handed to the broker, and is
removed only once the broker acknowledged it (PUBACK). A run killed in any way leaves the results not yet
acknowledged in the folder; the next run with the same spool sends them first, oldest first.

One file per message, `NNNNNNNNNNNNNNNN.msg` (a number that only grows, continued from what is there at
start): the topic on the first line, the payload after it. Each is written to a `.tmp` name and renamed,
so a file is whole or absent (a `.tmp` left by a kill is removed at the next start).

Durability (`sync`, CLI `--spool-sync`): "always" (the default) fsyncs each message's file before the rename
and the folder after it, so a message `put` returned for survives a power cut too (cost: two fsyncs per
message; docs/service.md gives the figures). "off" leaves that to the kernel's writeback: a killed process
loses nothing, a power cut may lose the last seconds of messages or leave their files empty. A file cut
before its topic line ends (what such a power cut leaves) is removed at the next start, before anything new
is written, and counted (`torn`); a message the broker acknowledged may come back after a power cut (its
removal is not fsynced): delivery is at least once.

Bounded: past `max_bytes` the oldest messages are removed and counted (`dropped`); the owner warns once.
One run at a time per folder: a second one is refused (a lock on `DIR/.lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections import deque
from pathlib import Path

from erudite_edge.errors import UsageError

SUFFIX = ".msg"
SYNC_MODES = ("always", "off")
HEAD_BYTES = 65536 + 1  # an MQTT topic is at most 65535 bytes: its line ends within these


class Spool:
    """The spooled messages in order. Thread-safe only with its owner's locks (erudite_edge.outputs.mqtt): one
    that serialises `write`s, and one around everything else (`admit`, `take`, `remove`, the counts)."""

    def __init__(self, root: Path, max_bytes: int, sync: str = "always"):
        if sync not in SYNC_MODES:
            raise UsageError(f"--spool-sync {sync}: give {' or '.join(SYNC_MODES)}")
        self.root = root
        self.max_bytes = max_bytes
        self.sync = sync == "always"
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UsageError(f"--spool {root}: cannot use it as the MQTT spool ({e.strerror}); choose a writable "
                             "folder") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise UsageError(f"--spool {root}: another run uses this spool; give each run its own --spool DIR") from None
        self._sizes: dict[int, int] = {}  # number -> bytes, oldest first
        self._unsent: deque[int] = deque()  # numbers not handed to the broker yet, oldest first
        self.bytes = 0
        self.dropped = 0  # oldest messages removed to stay under max_bytes
        self.torn = 0  # message files a power cut left cut short, removed at start
        found: list[tuple[int, int]] = []
        last = -1  # the highest number there, torn ones included: numbers are never used twice
        for p in root.iterdir():
            if p.suffix == ".tmp":
                with contextlib.suppress(OSError):
                    p.unlink()
            elif p.suffix == SUFFIX and p.stem.isdigit():
                last = max(last, int(p.stem))
                with contextlib.suppress(OSError):
                    if _whole(p):
                        found.append((int(p.stem), p.stat().st_size))
                    else:
                        p.unlink()
                        self.torn += 1
        if self.sync:
            self._sync_folder()  # the removals above are on disk before new messages follow them
        for n, size in sorted(found):
            self._sizes[n] = size
            self._unsent.append(n)
            self.bytes += size
        self.recovered = len(found)  # messages a previous run left
        self._next = last + 1

    def _path(self, n: int, suffix: str = SUFFIX) -> Path:
        return self.root / f"{n:016d}{suffix}"

    def __len__(self) -> int:
        return len(self._sizes)

    def put(self, topic: str, payload: bytes) -> int:
        """Write one message and admit it (write, then admit); its number."""
        n, size = self.write(topic, payload)
        self.admit(n, size)
        return n

    def write(self, topic: str, payload: bytes) -> tuple[int, int]:
        """Phase 1, the slow one (the file and its fsyncs): one message's file, whole and (sync "always")
        durable; its number and size. Not yet counted or handed out: `admit` does that. Writers call this
        one at a time (their own lock), without the lock that guards the spool's counts, so the network
        thread is not held up by the disk. OSError (a full disk) goes to the caller."""
        n = self._next
        self._next += 1
        data = topic.encode("utf-8") + b"\n" + payload
        tmp = self._path(n, ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            if self.sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self._path(n))
        if self.sync:
            self._sync_folder()
        return n, len(data)

    def admit(self, n: int, size: int) -> None:
        """Phase 2 (under the owner's lock): count a written message and queue it to be handed out, in the
        order written; older messages are dropped first where it would pass the bound (the newest one is
        always kept)."""
        self._sizes[n] = size
        self._unsent.append(n)
        self.bytes += size
        while self.bytes > self.max_bytes and len(self._sizes) > 1:
            self._drop_oldest()

    def _sync_folder(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _drop_oldest(self) -> None:
        n = next(iter(self._sizes))
        self.remove(n)
        if self._unsent and self._unsent[0] == n:  # older ones than the first unsent are all in flight
            self._unsent.popleft()
        self.dropped += 1

    def take(self) -> tuple[int, str, bytes] | None:
        """The oldest message not handed out yet (number, topic, payload), now counted as handed out; None
        when there is none. A message file gone from the folder is skipped."""
        while self._unsent:
            n = self._unsent.popleft()
            if n not in self._sizes:
                continue
            try:
                data = self._path(n).read_bytes()
            except OSError:
                self._forget(n)
                continue
            topic, _, payload = data.partition(b"\n")
            return n, topic.decode("utf-8", "replace"), payload
        return None

    def unsent(self) -> int:
        return len(self._unsent)

    def remove(self, n: int) -> None:
        """The broker has it: the file goes (a number already removed is ignored)."""
        if n not in self._sizes:
            return
        with contextlib.suppress(FileNotFoundError):
            self._path(n).unlink()
        self._forget(n)

    def _forget(self, n: int) -> None:
        self.bytes -= self._sizes.pop(n, 0)

    def close(self) -> None:
        """Let another run use the folder (what it holds stays)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _whole(path: Path) -> bool:
    """A message file that holds its topic line (a power cut under sync "off" can leave it empty or cut)."""
    with open(path, "rb") as f:
        return b"\n" in f.read(HEAD_BYTES)
