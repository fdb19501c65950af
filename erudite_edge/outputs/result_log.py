"""An append-only result file that a kill never corrupts: what `run -o FILE.jsonl|.csv` writes into.

- Each result is one whole line handed to the kernel in one `write(2)` on an O_APPEND descriptor
  (no user-space buffer), so a SIGKILL leaves every line written so far, complete.
- A background timer fsyncs about once a second when something was written, and `close()` fsyncs, so a
  power cut loses at most the last second.
- A write that fails half-way (ENOSPC, EIO) is cut back to the last complete line and becomes one
  OutputError line; everything before it stays.
- The file itself is locked with flock(2) for as long as the run writes it: a second run pointed at it
  is refused with one line. The kernel drops the lock when the process dies, so a killed run leaves no
  stale lock file behind (a separate `.lock` file would).
- An existing file is refused unless the caller says `append` or `overwrite`.
- `append` repairs what a crash or power cut left at the end (once the lock is held): NUL bytes (ext4
  can leave the file's new size with blocks never written) and a last line cut off before its end are
  cut back to the last whole line, and the repair is told in one line (`warn`). Without it the first new
  record would be glued onto the torn one: an invalid line for good.
- `rotation` (outputs.rotation.Rotation) bounds the file: before a record that would take it past the
  size, it becomes FILE.1 (FILE.1 -> FILE.2 ... the oldest dropped) and a new FILE (CSV: with its header),
  locked before its name appears, takes the record. The new file is made under a temporary name and
  renamed into place: a kill at any point leaves whole files (at worst, for an instant, no FILE: the next
  run creates it; a temporary it left is removed by the next open).
- The file's size is read before each write, so a file cut by someone else (logrotate's `copytruncate`)
  is written from its new end (CSV: header first) and a failed write is cut back to the right place.

Hand-written because it is ~100 lines over os.open/os.write/fcntl.flock; no maintained library gives
append + per-line durability + a single-writer lock without a database.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Callable

from erudite_edge.core.fileio import fsync_dir, remove_stale_temporaries
from erudite_edge.errors import OutputError, UsageError
from erudite_edge.outputs.rotation import Rotation, shift_out

MODES = ("new", "append", "overwrite")


def _why(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if e.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if e.errno in (errno.EROFS,):
        return "the file system is read-only"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return e.strerror or str(e)


def _whole_end(fd: int, size: int, terminator: bytes, chunk: int = 1 << 16) -> tuple[int, int]:
    """(where trailing NUL bytes start, where the last whole line ends) in the first `size` bytes of `fd`,
    read backwards from the end in `chunk`s: a torn end costs reading only itself."""
    end = size
    while end > 0:
        lo = max(0, end - chunk)
        data = os.pread(fd, end - lo, lo).rstrip(b"\0")
        if data:
            end = lo + len(data)
            break
        end = lo
    hi = end
    while hi > 0:
        lo = max(0, hi - chunk)
        data = os.pread(fd, min(end, hi + len(terminator) - 1) - lo, lo)  # a terminator across chunks is found
        i = data.rfind(terminator)
        if i >= 0:
            return end, lo + i + len(terminator)
        hi = lo
    return end, 0


class AppendLog:
    """Whole lines appended to `path`, fsynced on a timer and at close, locked against a second writer."""

    def __init__(self, path: Path, mode: str = "new", *, header: bytes | None = None, fsync_interval: float = 1.0,
                 option: str = "--output", terminator: bytes = b"\n", warn: Callable[[str], None] | None = None,
                 rotation: Rotation | None = None):
        """`terminator`: what ends each line (CSV: CRLF); `warn`: gets the one line that tells an `append`
        repair (None: printed on stderr as `warning: ...`); `rotation`: the size bound (None: none)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.path = Path(path)
        self.option = option
        self.terminator = terminator
        self.repaired = ""  # the repair's line, when `append` cut a torn end off
        self.lines = 0  # lines this run wrote (the header not counted)
        self.rotation = rotation
        self.rotations = 0  # times this run rotated the file
        self._header = header or b""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        if mode == "new":
            flags |= os.O_EXCL
        existed = self.path.exists()
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise UsageError(f"{option} {self.path}: file exists; pass --append to add to it or --overwrite to "
                             "replace it") from None
        except IsADirectoryError:
            raise UsageError(f"{option} {self.path}: is a folder; give a file name") from None
        except FileNotFoundError:
            raise UsageError(f"{option} {self.path}: its folder {self.path.parent} does not exist; create it first") from None
        except OSError as e:
            raise UsageError(f"{option} {self.path}: cannot create it ({_why(e)}); choose a writable folder") from None
        self.created = not existed
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UsageError(f"{option} {self.path}: another run is writing to it (it holds the file's lock); "
                                 "stop that run or choose another file") from None
            raise UsageError(f"{option} {self.path}: cannot lock it ({_why(e)})") from None
        self._fd = fd
        self._mutex = threading.Lock()
        self._dirty = False
        self._sync_error: OSError | None = None
        try:
            info = os.fstat(fd)
            self._regular = stat.S_ISREG(info.st_mode)  # a FIFO or device: nothing to truncate or fsync
            if rotation is not None and not self._regular:
                raise UsageError(f"--rotate-mb: {option} {self.path} is not a regular file; nothing to rotate")
            if rotation is not None:  # a new file a killed rotation was making (its PID gone)
                remove_stale_temporaries(self.path.parent, self.path.name)
            if mode == "overwrite" and self._regular:
                os.ftruncate(fd, 0)
            self.size = os.fstat(fd).st_size
            end = whole = self.size
            if mode == "append" and self._regular and self.size > 0:
                with open(self.path, "rb") as f:
                    end, whole = _whole_end(f.fileno(), self.size, self.terminator)
            if header is not None and whole > 0:
                self._check_header(header)  # before any repair: a refused file is left as it is
            if whole < self.size:
                self._repair(end, whole, warn)
            if header is not None and self.size == 0:
                self._write_all(header)
                self.size = len(header)
        except OSError as e:
            self._release(keep=not self.created)
            raise OutputError(f"cannot write to {self.path} ({_why(e)})") from None
        except BaseException:
            self._release(keep=not self.created)
            raise
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._sync_loop, args=(float(fsync_interval),),
                                       name="erudite-edge-fsync", daemon=True)
        self._timer.start()

    def _repair(self, end: int, whole: int, warn: Callable[[str], None] | None) -> None:
        """Cut the NUL bytes from `end` and the torn line from `whole` off (the lock is held); tell it in one line."""
        os.ftruncate(self._fd, whole)
        os.fsync(self._fd)  # the repair is on disk before anything is appended after it
        cut = []
        if end < self.size:
            cut.append(f"{self.size - end} NUL byte(s)")
        if whole < end:
            cut.append(f"a cut-off last line ({end - whole} bytes)")
        self.repaired = (f"{self.option} {self.path}: its end was left by an interrupted run (a crash or power cut?): "
                         f"removed {' and '.join(cut)}; it now ends at its last whole line ({whole} bytes) and this "
                         "run appends after it")
        self.size = whole
        if warn is not None:
            warn(self.repaired)
        else:
            print(f"warning: {self.repaired}", file=sys.stderr, flush=True)

    def _check_header(self, header: bytes) -> None:
        with open(self.path, "rb") as f:
            first = f.readline()
        if first != header and header.startswith(b"record_version,") and first.startswith(b"name,"):
            raise UsageError(f"{self.option} {self.path}: written by an earlier erudite-edge (its rows have no "
                             "record_version, run_id, seq); --append needs the same columns: move it aside or "
                             "choose another file")
        if first != header:
            raise UsageError(f"{self.option} {self.path}: its columns differ from this run's (another --topk or "
                             "label table?); --append needs the same columns, or choose another file")

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def write(self, data: bytes) -> None:
        """Append one or more whole lines; OutputError (the file cut back to its last whole line) when it fails."""
        with self._mutex:
            if self._sync_error is not None:
                e, self._sync_error = self._sync_error, None
                self._fail(e)
            try:
                if self._regular:
                    self._before_write(len(data))
                self._write_all(data)
            except OSError as e:
                if self._regular:
                    try:
                        os.ftruncate(self._fd, self.size)  # no half line left behind
                    except OSError:
                        pass
                self._fail(e)
            self.size += len(data)
            self.lines += 1
            self._dirty = True

    def _before_write(self, n: int) -> None:
        """Where the next `n` bytes go: the file's size now (another program may have cut it), a header
        again in a file cut to nothing, a rotation first when they would take it past its bound."""
        self.size = os.fstat(self._fd).st_size
        if self.size == 0 and self._header:
            self._write_all(self._header)
            self.size = len(self._header)
        r = self.rotation
        if r is not None and self.size > len(self._header) and self.size + n > r.max_bytes:
            self._rotate(r)

    def _rotate(self, r: Rotation) -> None:
        """FILE -> FILE.1 (and the older ones along), a new FILE locked and with its header in place of it."""
        os.fsync(self._fd)  # the records of FILE.1 on disk before it gets that name
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held before the name FILE is its
            view = memoryview(self._header)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            shift_out(self.path, r.keep)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        fsync_dir(self.path.parent)
        old, self._fd = self._fd, fd
        os.close(old)
        self.size = len(self._header)
        self.rotations += 1

    def _fail(self, e: OSError) -> None:
        raise OutputError(f"cannot write to {self.path} ({_why(e)}); the {self.lines} result(s) written before "
                          "are kept in it") from None

    def sync(self) -> None:
        with self._mutex:
            if self._dirty and self._fd >= 0:
                self._dirty = False
                if self._regular:
                    os.fsync(self._fd)

    def _sync_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sync()
            except OSError as e:  # reported by the next write
                self._sync_error = e
            except ValueError:
                return

    def _release(self, keep: bool) -> None:
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            if not keep:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(fd)  # drops the flock

    def close(self, keep_empty: bool = True) -> None:
        """fsync and close. `keep_empty=False`: a file this run created and wrote no result into is removed."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            self._timer.join(timeout=5.0)
        if self._fd < 0:
            return
        with self._mutex:
            if self._regular:
                try:
                    os.fsync(self._fd)
                except OSError:
                    pass
            self._release(keep=keep_empty or self.lines > 0 or not self.created)
